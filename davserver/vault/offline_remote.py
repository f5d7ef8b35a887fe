"""Offline recovery from remote stores: decrypt what external storage mounts keep on an
S3 bucket or a remote WebDAV server, and a primary store on S3 (or WebDAV), with no
server running.

The mount definitions come from the backup's database (``backup:create`` includes them),
their credentials unsealed with the instance secret the backup also holds, so a backup
archive and the key store are all it takes, as for local homes. The stores are read with
the same backends the server uses (boto3, requests). Each file is authenticated end to end
and written as ``name.partial`` first, renamed once its last chunk verified; output goes
to ``OUT/<mount point>/<path on the store>``.

A primary store is described by the config file the backup also holds (``[storage]``;
the ``DAVSERVER_S3_*`` environment variables still win, as for the server). Objects
named by file ID (``urn:oid:``) only have names in the database's index, which the
backup's database provides; output goes to ``OUT/<user>/<path>``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import partial

from davserver.crypto import header as hdr
from davserver.crypto import stream
from davserver.errors import DavServerError, UserError
from davserver.meta.db import MetaDB
from davserver.storage.base import BlobReader, Storage
from davserver.vault.mounts import TMP_NAME, Mount, MountService
from davserver.vault.offline import RecoverReport, open_keys

Progress = Callable[[int, int], None]


def mounts_in_backup(tmp: str, members: dict[str, bytes], secret: bytes) -> list[Mount]:
    """The mount definitions a backup holds, credentials unsealed."""
    if "davserver.db" not in members:
        raise UserError("the backup holds no database, so no mount definitions")
    path = os.path.join(tmp, "davserver.db")
    with open(path, "wb") as f:
        f.write(members["davserver.db"])
    db = MetaDB(path)
    try:
        return MountService(db, lambda: secret).list()
    finally:
        db.close()


def _files(storage: Storage) -> list[tuple[str, int]]:
    out = []
    for key, e in storage.walk(""):
        if not e.is_dir and key.split("/", 1)[0] != TMP_NAME:
            out.append((key, e.size))
    return sorted(out)


def decrypt_blob(store, identities, reader: BlobReader, dst: str) -> tuple[int, bool]:
    """Like offline.decrypt_file, from a blob of any backend."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    partial = dst + ".partial"
    try:
        first = reader.read_at(0, hdr.HEADER_BYTES)
        encrypted = hdr.is_encrypted(first)
        with open(partial, "wb") as w:
            if encrypted:
                h = hdr.parse(first)
                key = store.unwrap(h.file_id, identities)
                cr = stream.ChunkReader(reader.read_at, reader.size, key)
                for block in cr.iter_plaintext():
                    w.write(block)
                n = cr.plain_size
            else:
                n = 0
                while n < reader.size:
                    block = reader.read_at(n, 1 << 20)
                    if not block:
                        break
                    w.write(block)
                    n += len(block)
        os.replace(partial, dst)
        return n, encrypted
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def recover_mounts(out: str, *, backup_file: str, passphrase: str | None = None,
                   keys: str | None = None, mount_ids: list[int] | None = None,
                   user: str | None = None, password: str | None = None,
                   recovery_password: str | None = None,
                   progress: Progress | None = None) -> RecoverReport:
    """Decrypt every file of the backup's mounts (or of ``mount_ids``) into ``out``.
    A store that cannot be reached is reported as one failure and the others go on."""
    report = RecoverReport()
    with tempfile.TemporaryDirectory() as tmp:
        store, identities, members, secret = open_keys(
            tmp, keys=keys, backup_file=backup_file, passphrase=passphrase, user=user,
            password=password, recovery_password=recovery_password)
        mounts = mounts_in_backup(tmp, members, secret)
        if mount_ids:
            unknown = set(mount_ids) - {m.id for m in mounts}
            if unknown:
                raise UserError(f"no mount {sorted(unknown)[0]} in the backup")
            mounts = [m for m in mounts if m.id in mount_ids]
        for m in mounts:
            where = m.mount_point.strip("/")
            try:
                storage = MountService.build_storage(m)
                files = _files(storage)
            except DavServerError as e:
                report.failed.append((f"{where}/", f"store not readable: {e}"))
                continue
            _recover_files(storage, files, where, store, identities, out, report, progress)
    return report


def _recover_files(storage: Storage, files: list[tuple[str, int]], where: str, store,
                   identities, out: str, report: RecoverReport,
                   progress: Progress | None) -> None:
    for key, size in files:
        rel = f"{where}/{key}" if where else key
        dst = os.path.join(out, *rel.split("/"))
        report.recover_one(rel, size, partial(_decrypt_stored, storage, key, store,
                                              identities, dst), progress)


def _decrypt_stored(storage: Storage, key: str, store, identities, dst: str
                    ) -> tuple[int, bool]:
    with storage.open_reader(key) as reader:
        return decrypt_blob(store, identities, reader, dst)


def recover_primary(out: str, *, backup_file: str, passphrase: str | None = None,
                    keys: str | None = None, user: str | None = None,
                    password: str | None = None, recovery_password: str | None = None,
                    progress: Progress | None = None) -> RecoverReport:
    """Decrypt every file of the primary store the backup's config names (only
    ``user``'s with --user) into ``out``."""
    from davserver import config as config_mod
    from davserver.vault.storage_factory import make_storage

    report = RecoverReport()
    with tempfile.TemporaryDirectory() as tmp:
        store, identities, members, _secret = open_keys(
            tmp, keys=keys, backup_file=backup_file, passphrase=passphrase, user=user,
            password=password, recovery_password=recovery_password)
        if "config.toml" not in members:
            raise UserError("the backup holds no config file, so no primary storage settings")
        conf = os.path.join(tmp, "config.toml")
        with open(conf, "wb") as f:
            f.write(members["config.toml"])
        cfg = config_mod.load(conf, os.path.join(tmp, "data"))
        if cfg.storage_backend == "local":
            raise UserError("the primary storage in the backup's config is local: use "
                            "recover --data DIR")
        dbpath = os.path.join(tmp, "davserver.db")
        with open(dbpath, "wb") as f:
            f.write(members["davserver.db"])
        db = MetaDB(dbpath)
        try:
            storage = make_storage(cfg, db)
            top = [user] if user else [e.name for e in storage.list_dir("") if e.is_dir]
            files = []
            for name in top:
                if storage.stat(name) is None:
                    continue
                files += [(k, e.size) for k, e in storage.walk(name) if not e.is_dir]
            _recover_files(storage, sorted(files), "", store, identities, out, report,
                           progress)
        finally:
            db.close()
    return report
