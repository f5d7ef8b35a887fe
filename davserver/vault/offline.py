"""Offline recovery: decrypt a copy of the data directory with no server (and no DB
unless the keys are kept in it).

Inputs are exactly what the README tells people to back up: the files, the key store and
the instance secret (or a backup archive holding the last two). A key store kept in the
database (``db:``) is read from that database (``database_url``: the SQLite file or a
postgresql:// URL), read-only. Every file is
authenticated end to end; output is written as ``name.partial`` and renamed only after
its last chunk verified, so nothing half-decrypted ever looks like a result.

What offline recovery cannot check: without the DB it cannot tell an old version of a
file from the current one (rollback), only that each file is a genuine davserver file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from davserver.crypto import header as hdr
from davserver.crypto import stream
from davserver.errors import DavServerError, FormatError, IntegrityError, KeyNotFound, UserError
from davserver.meta.connect import is_postgres
from davserver.meta.keydocs_db import DbKeyDocs, open_offline
from davserver.vault import backup
from davserver.vault.keydocs import DirKeyDocs, is_db
from davserver.vault.keystore import KeyStore
from davserver.vault.secret import read_secret
from davserver.vault.userkeys import UserKeys

Progress = Callable[[int, int], None]


@dataclass
class RecoverReport:
    decrypted: int = 0
    copied_plaintext: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def recover_one(self, rel: str, size: int, decrypt: Callable[[], tuple[int, bool]],
                    progress: Progress | None = None) -> None:
        """Run ``decrypt`` (bytes written, was it encrypted) for one file and count what
        it did; a file that cannot be recovered is listed with why, and the rest go on."""
        try:
            n, encrypted = decrypt()
            self.bytes += n
            if encrypted:
                self.decrypted += 1
            else:
                self.copied_plaintext += 1
        except KeyNotFound:
            self.failed.append((rel, "no key for this file in the key store"))
        except (IntegrityError, FormatError):
            self.failed.append((rel, "failed authentication (damaged or tampered)"))
        except (DavServerError, OSError) as e:
            self.failed.append((rel, str(e)))
        if progress:
            progress(1, size)

    def as_dict(self) -> dict:
        return {"decrypted": self.decrypted, "copied_plaintext": self.copied_plaintext,
                "bytes": self.bytes,
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


def _files_root(data: str) -> str:
    """Accept the data directory or its files/ folder."""
    inner = os.path.join(data, "files")
    return inner if os.path.isdir(inner) else data


def recover(data: str, out: str, *, keys: str | None = None, secret_file: str | None = None,
            backup_file: str | None = None, passphrase: str | None = None,
            user: str | None = None, password: str | None = None,
            recovery_password: str | None = None, database_url: str | None = None,
            progress: Progress | None = None) -> RecoverReport:
    """Decrypt with whatever keys the inputs unlock: the master key (secret), a user's key
    (user + password, user-key mode) and/or the recovery key (recovery password)."""
    with tempfile.TemporaryDirectory() as tmp:
        store, identities, _members, _secret = open_keys(
            tmp, keys=keys, secret_file=secret_file, backup_file=backup_file,
            passphrase=passphrase, user=user, password=password,
            recovery_password=recovery_password, database_url=database_url)
        try:
            return _walk(store, identities, _files_root(data), out, user, progress)
        finally:
            if isinstance(store.docs, DbKeyDocs):
                store.docs.close()


def database_of(cfg) -> str:
    """The database a config names, as ``--database-url`` takes it: a PostgreSQL URL, or
    the SQLite file (``recover --keys db:`` without ``--database-url``)."""
    url = cfg.database_url.strip()
    return url if is_postgres(url) else cfg.db_path


def _key_docs(keys: str | None, database_url: str | None, tmp: str):
    """The key documents to read: a directory, or the database's (``--keys db:`` or
    ``--database-url`` alone)."""
    if database_url and (not keys or is_db(keys)):
        return open_offline(database_url, os.path.join(tmp, "run"))
    if keys and is_db(keys):
        raise UserError("--keys db: reads the keys from the database: give --database-url "
                        "(the SQLite file or the postgresql:// URL)")
    if not keys or not os.path.isdir(keys):
        raise UserError(f"key store {keys!r} not found (give --keys DIR)")
    return DirKeyDocs(keys, fsync=False)


def open_keys(tmp: str, *, keys: str | None = None, secret_file: str | None = None,
              backup_file: str | None = None, passphrase: str | None = None,
              user: str | None = None, password: str | None = None,
              recovery_password: str | None = None, database_url: str | None = None):
    """(key store, identities, backup members or None, instance secret or None) from the
    inputs; the backup's secret and key store are unpacked into ``tmp``."""
    secret = None
    members = None
    if backup_file:
        members = backup.read(backup_file, passphrase)
        with open(os.path.join(tmp, "secret"), "wb") as f:
            f.write(members["secret"])
        secret = read_secret(os.path.join(tmp, "secret"))
        if not keys and not database_url:
            keys = os.path.join(tmp, "keys")
            backup.extract_keys(members, keys)
    elif secret_file:
        secret = read_secret(secret_file)
    elif not (password or recovery_password):
        raise UserError("give --secret-file, --backup, or a user's / the recovery password")
    store = KeyStore(_key_docs(keys, database_url, tmp), fsync=False, cache_size=0)
    identities = []
    if secret is not None:
        identities += [store.load_master(secret, _kid(f)) for f in store.master_files()]
    ukeys = UserKeys(store)
    if password:
        if not user:
            raise UserError("a password needs --user")
        identities.append(ukeys.open_existing(user, password))
    if recovery_password:
        identities.append(ukeys.unlock_recovery(recovery_password))
    if not identities:
        raise KeyNotFound("master key (is --keys the key storage root?)")
    return store, identities, members, secret


def _kid(path: str) -> str:
    return os.path.basename(path)[len("master-"):-len(".json")]


def plan(data: str, user: str | None = None) -> list[tuple[str, int]]:
    root = _files_root(data)
    base = os.path.join(root, user) if user else root
    out = []
    for d, _dirs, names in os.walk(base):
        for n in names:
            full = os.path.join(d, n)
            if os.path.isfile(full) and not os.path.islink(full):
                out.append((os.path.relpath(full, root), os.path.getsize(full)))
    return sorted(out)


def _walk(store, identities, root, out, user, progress) -> RecoverReport:
    report = RecoverReport()
    os.makedirs(out, exist_ok=True)
    for rel, size in plan(root, user):
        src, dst = os.path.join(root, rel), os.path.join(out, rel)
        report.recover_one(rel, size, partial(decrypt_file, store, identities, src, dst),
                           progress)
    return report


def decrypt_file(store: KeyStore, identities, src: str, dst: str) -> tuple[int, bool]:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    partial = dst + ".partial"
    fd = os.open(src, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        first = os.pread(fd, hdr.HEADER_BYTES, 0)
        encrypted = hdr.is_encrypted(first)
        with open(partial, "wb") as w:
            if encrypted:
                h = hdr.parse(first)
                key = store.unwrap(h.file_id, identities)
                cr = stream.ChunkReader(lambda o, n: os.pread(fd, n, o), size, key)
                for block in cr.iter_plaintext():
                    w.write(block)
                n = cr.plain_size
            else:
                pos = 0
                while pos < size:
                    block = os.pread(fd, 1 << 20, pos)
                    if not block:
                        break
                    w.write(block)
                    pos += len(block)
                n = pos
        os.replace(partial, dst)
        return n, encrypted
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    finally:
        os.close(fd)
