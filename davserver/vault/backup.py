"""backup:create / backup:restore: the secret, the key store and a DB snapshot in one file.

The data stays where it is (back it up with any tool; it is ciphertext). Together with
the data, this archive is everything ``davserver recover`` needs.

Archive: a tar with ``manifest.json`` (format, creation time, sha256 of every member),
``secret``, ``config.toml`` (if present), ``keys/...`` and ``davserver.db`` (SQLite; with
PostgreSQL metadata pg_dump backs up the database and the archive has none). The key
documents are ``keys/<name>`` whichever store holds them (a directory or the database,
vault.keydocs), so recovery reads them alike; the manifest's ``key_store`` says which
store they came from ("directory" or "database"). With a passphrase the tar is wrapped
as::

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
import tarfile
import tempfile
import time

from davserver.crypto import keywrap, primitives, stream
from davserver.durable import write_atomic
from davserver.errors import DavServerError, IntegrityError, UserError, WrongPassword
from davserver.meta import schema_version, settings
from davserver.meta.db import MetaDB
from davserver.meta.keydocs_db import DbKeyDocs
from davserver.vault.keydocs import DirKeyDocs, KeyDocs, canonical, is_db, open_keydocs

MAGIC = b"DAVSERVER-BACKUP-1\n"
FORMAT = "davserver-backup/1"
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, manifest: dict) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))
    manifest[name] = hashlib.sha256(data).hexdigest()


def create(out_path: str, *, secret_file: str, config_file: str, key_root: str | KeyDocs, db,
           passphrase: str | None = None) -> dict:
    """``key_root``: the key documents (or their directory); ``db``: the metadata DB,
    snapshotted when it is SQLite."""
    docs = open_keydocs(key_root, db, fsync=False) if isinstance(key_root, str) else key_root
    manifest: dict[str, str] = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        with open(secret_file, "rb") as f:
            _add_bytes(tar, "secret", f.read(), manifest)
        if os.path.exists(config_file):
            with open(config_file, "rb") as f:
                _add_bytes(tar, "config.toml", f.read(), manifest)
        for name in docs.names():
            data = docs.get(name)
            if data is not None:  # else deleted since it was listed
                _add_bytes(tar, "keys/" + name, data, manifest)
        with_db = not hasattr(db, "url")  # PostgreSQL: pg_dump (docs/DEPLOY.md)
        if with_db:
            with tempfile.TemporaryDirectory() as tmp:
                snap = os.path.join(tmp, "db")
                db.backup_to(snap)
                with open(snap, "rb") as f:
                    _add_bytes(tar, "davserver.db", f.read(), manifest)
        doc = {"format": FORMAT, "created": time.time(), "files": manifest,
               "key_store": "database" if is_db(docs.location) else "directory"}
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
        1 for n in manifest if n.startswith("keys/")), "encrypted": bool(passphrase),
        "key_store": doc["key_store"], "database": with_db}


def read(path: str, passphrase: str | None = None) -> dict[str, bytes]:
    """Return the archive's members (name -> bytes), every checksum verified."""
    return read_with_manifest(path, passphrase)[0]


def read_with_manifest(path: str, passphrase: str | None = None) -> tuple[dict, dict]:
    """(members, manifest) of the archive, every checksum verified."""
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
    return members, manifest


def safe_member(name: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DavServerError(f"refusing unsafe path {name!r} in backup")
    return os.path.join(*parts)


def extract_keys(members: dict[str, bytes], key_root: str | KeyDocs) -> int:
    """Write the archive's key documents into a directory or a key store."""
    docs = DirKeyDocs(key_root, fsync=False) if isinstance(key_root, str) else key_root
    n = 0
    for name, data in members.items():
        if name.startswith("keys/"):
            docs.write(safe_member(name[5:]).replace(os.sep, "/"), data)
            n += 1
    return n


def restore(path: str, *, passphrase: str | None, secret_file: str, key_root: str,
            db_path: str, force: bool = False) -> dict:
    """Put secret, key store and DB back. Refuses to overwrite an instance unless forced.

    ``key_root``: the configured key storage root (a directory or ``db:``), or "" to
    restore into the store the backup came from (its database, or the default directory
    ``<data_dir>/keys`` given as ``default:<dir>``)."""
    members, manifest = read_with_manifest(path, passphrase)
    if "davserver.db" not in members:
        raise UserError("this backup holds no database (PostgreSQL metadata): restore it "
                        "with pg_restore (docs/DEPLOY.md)")
    key_root = _restore_target(key_root, manifest)
    existing = [p for p in (secret_file, db_path) if os.path.exists(p)]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} exist; stop the server and pass --force to "
                        "overwrite this instance with the backup")
    if not is_db(key_root) and os.path.exists(key_root):
        old = DirKeyDocs(key_root, fsync=False)
        if not force and not old.is_empty():
            raise UserError(f"key store {key_root} is not empty; pass --force")
        old.remove_all()
    write_atomic(secret_file, members["secret"])
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.unlink(db_path + suffix)
    write_atomic(db_path, members["davserver.db"])
    db = MetaDB(db_path, check_version=False)  # an older backup: `davserver upgrade` next
    try:
        docs = open_keydocs(key_root, db, fsync=False)
        if is_db(key_root):
            if db.schema_version() != schema_version.CURRENT:
                raise UserError("the backup's database is older than this davserver: "
                                "restore with key_storage_root set to a directory, run "
                                "davserver upgrade, then move the keys into the database")
            docs.remove_all()  # the snapshot's rows: the archive's members are the keys
        elif db.schema_version() == schema_version.CURRENT:
            # Keys restored to a directory: none left in the database besides them.
            DbKeyDocs(db, fsync=False).remove_all()
        n = extract_keys(members, docs)
        db.set_setting(settings.KEY_ROOT, key_root)  # where this instance keeps the keys
    finally:
        db.close()
    return {"key_files": n, "secret_file": secret_file, "db": db_path,
            "key_root": key_root, "key_store": "database" if is_db(key_root) else "directory"}


def _restore_target(key_root: str, manifest: dict) -> str:
    if key_root.startswith("default:"):
        from_db = manifest.get("key_store") == "database"
        return canonical("db:" if from_db else key_root[len("default:"):])
    return canonical(key_root)
