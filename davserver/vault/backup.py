"""backup:create / backup:restore: the secret, the key store and a DB snapshot in one file.

The data stays where it is (back it up with any tool; it is ciphertext). Together with
the data, this archive is everything ``davserver recover`` needs.

Archive: a tar with ``manifest.json`` (format, creation time, sha256 of every member),
``secret``, ``config.toml`` (if present), ``keys/...`` and ``davserver.db``. With a
passphrase the tar is wrapped as::

    "DAVSERVER-BACKUP-1\\n" || salt (16) || log2_n (1) || r (1) || p (1) || stream

where ``stream`` is the v1 file format (header + chunks) of the tar, under
``data_key = scrypt(passphrase, salt, 2^log2_n, r, p)``; the header MAC rejects a wrong
passphrase before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time

from davserver.crypto import keywrap, primitives, stream
from davserver.durable import write_atomic
from davserver.errors import DavServerError, IntegrityError, UserError, WrongPassword
from davserver.meta import settings
from davserver.meta.db import MetaDB

MAGIC = b"DAVSERVER-BACKUP-1\n"
FORMAT = "davserver-backup/1"
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, manifest: dict) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))
    manifest[name] = hashlib.sha256(data).hexdigest()


def create(out_path: str, *, secret_file: str, config_file: str, key_root: str, db,
           passphrase: str | None = None) -> dict:
    manifest: dict[str, str] = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        with open(secret_file, "rb") as f:
            _add_bytes(tar, "secret", f.read(), manifest)
        if os.path.exists(config_file):
            with open(config_file, "rb") as f:
                _add_bytes(tar, "config.toml", f.read(), manifest)
        for d, _dirs, names in os.walk(key_root):
            for n in sorted(names):
                if n.startswith(".tmp-"):
                    continue
                full = os.path.join(d, n)
                with open(full, "rb") as f:
                    _add_bytes(tar, "keys/" + os.path.relpath(full, key_root), f.read(),
                               manifest)
        with tempfile.TemporaryDirectory() as tmp:
            snap = os.path.join(tmp, "db")
            db.backup_to(snap)
            with open(snap, "rb") as f:
                _add_bytes(tar, "davserver.db", f.read(), manifest)
        doc = {"format": FORMAT, "created": time.time(), "files": manifest}
        _add_bytes(tar, "manifest.json", json.dumps(doc, indent=1).encode(), {})
    data = buf.getvalue()
    if passphrase:
        salt = primitives.random_bytes(16)
        key = primitives.scrypt(passphrase.encode(), salt, log2_n=SCRYPT_LOG2_N, r=SCRYPT_R,
                                p=SCRYPT_P)
        data = (MAGIC + salt + bytes([SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P])
                + stream.encrypt_bytes(data, key, keywrap.new_file_id()))
    write_atomic(os.path.abspath(out_path), data)
    return {"path": out_path, "bytes": len(data), "key_files": sum(
        1 for n in manifest if n.startswith("keys/")), "encrypted": bool(passphrase)}


def read(path: str, passphrase: str | None = None) -> dict[str, bytes]:
    """Return the archive's members (name -> bytes), every checksum verified."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"backup {path} not found") from None
    if data.startswith(MAGIC):
        if not passphrase:
            raise UserError("this backup is protected by a passphrase; set DAVSERVER_BACKUP_PASS")
        off = len(MAGIC)
        salt, params = data[off:off + 16], data[off + 16:off + 19]
        key = primitives.scrypt(passphrase.encode(), salt, log2_n=params[0], r=params[1],
                                p=params[2])
        body = data[off + 19:]
        try:
            cr = stream.ChunkReader(lambda o, n: body[o:o + n], len(body), key)
        except IntegrityError:
            raise WrongPassword(" for the backup (or the file is damaged)") from None
        data = b"".join(cr.iter_plaintext())
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            for m in tar.getmembers():
                if m.isfile():
                    members[m.name] = tar.extractfile(m).read()
    except tarfile.TarError:
        raise DavServerError(f"{path} is not a davserver backup") from None
    try:
        manifest = json.loads(members.pop("manifest.json"))
    except (KeyError, ValueError):
        raise DavServerError(f"{path} has no valid manifest") from None
    if manifest.get("format") != FORMAT:
        raise DavServerError(f"{path}: unsupported backup format")
    for name, digest in manifest["files"].items():
        if hashlib.sha256(members.get(name, b"\0")).hexdigest() != digest:
            raise IntegrityError(f"backup member {name} is damaged")
    return members


def safe_member(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DavServerError(f"refusing unsafe path {name!r} in backup")
    return os.path.join(*parts)


def extract_keys(members: dict[str, bytes], key_root: str) -> int:
    n = 0
    for name, data in members.items():
        if name.startswith("keys/"):
            write_atomic(os.path.join(key_root, safe_member(name[5:])), data, fsync=False)
            n += 1
    return n


def restore(path: str, *, passphrase: str | None, secret_file: str, key_root: str,
            db_path: str, force: bool = False) -> dict:
    """Put secret, key store and DB back. Refuses to overwrite an instance unless forced."""
    members = read(path, passphrase)
    existing = [p for p in (secret_file, db_path) if os.path.exists(p)]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} exist; stop the server and pass --force to "
                        "overwrite this instance with the backup")
    if os.path.exists(key_root):
        if not force and os.listdir(key_root):
            raise UserError(f"key store {key_root} is not empty; pass --force")
        shutil.rmtree(key_root)
    n = extract_keys(members, key_root)
    write_atomic(secret_file, members["secret"])
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.unlink(db_path + suffix)
    write_atomic(db_path, members["davserver.db"])
    db = MetaDB(db_path, check_version=False)  # an older backup: `davserver upgrade` next
    try:
        db.set_setting(settings.KEY_ROOT, key_root)  # where this instance keeps the keys
    finally:
        db.close()
    return {"key_files": n, "secret_file": secret_file, "db": db_path, "key_root": key_root}
