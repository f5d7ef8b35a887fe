"""Checks and repairs: scan (fsck), fix-encrypted-version, fix-key-location, orphan keys.

They all start from what is in storage (headers carry file IDs), not from the index, so
they also see what changed behind the server's back. Repairs only ever re-record what
authenticates as itself; nothing here rewrites file contents or invents keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from davserver.crypto import header as hdr
from davserver.crypto import stream
from davserver.errors import DavServerError, FormatError, IntegrityError, KeyNotFound
from davserver.meta.db import FileRecord
from davserver.vault.userkeys import KeyLocked

Progress = Callable[[int, int], None]


@dataclass
class FileState:
    path: str
    state: str  # ok | plaintext | no-key | corrupt | mismatch | duplicate
    detail: str = ""
    file_id: str | None = None


@dataclass
class CheckReport:
    files: list[FileState] = field(default_factory=list)
    orphan_keys: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for f in self.files if f.state == state)

    @property
    def problems(self) -> list[FileState]:
        return [f for f in self.files if f.state not in ("ok", "plaintext")]

    def as_dict(self) -> dict:
        states = ("ok", "plaintext", "no-key", "corrupt", "mismatch", "duplicate")
        return {
            "counts": {s: self.count(s) for s in states},
            "problems": [f.__dict__ for f in self.problems],
            "orphan_keys": self.orphan_keys,
            "fixed": self.fixed,
        }


def _stored_files(vault, users: list[str] | None, only: str | None):
    if only is not None:
        e = vault.storage.stat(only)
        if e is not None and not e.is_dir:
            yield only, e
            return
        roots = [only]
    else:
        roots = users if users is not None else [e.name for e in vault.storage.list_dir("")
                                                 if e.is_dir]
    for root in roots:
        if vault.storage.stat(root) is None:
            continue
        for key, e in vault.storage.walk(root):
            if not e.is_dir:
                yield key, e


def authenticate(vault, path: str) -> tuple[bytes, int]:
    """Decrypt ``path`` end to end as itself (ignoring the index); return (file ID, size)."""
    with vault.storage.open_reader(path) as r:
        h = hdr.parse(r.read_at(0, hdr.HEADER_BYTES))
        key = vault.keys.unwrap(h.file_id, vault._identities())
        cr = stream.ChunkReader(r.read_at, r.size, key)
        for i in range(cr.chunks):
            cr.chunk(i)
        return h.file_id, cr.plain_size


def classify(vault, path: str, holders: dict[bytes, list[str]]) -> FileState:
    raw = vault.head(path)
    if not hdr.is_encrypted(raw):
        return FileState(path, "plaintext")
    try:
        file_id, size = authenticate(vault, path)
    except KeyNotFound:
        fid = hdr.parse(raw).file_id.hex()
        return FileState(path, "no-key", "no key in the key store", fid)
    except KeyLocked:
        # User-key mode with nobody's key unlocked (an admin command without the
        # recovery password): check what needs no key; the contents stay unread.
        return _classify_locked(vault, path, raw, holders)
    except (IntegrityError, FormatError) as e:
        return FileState(path, "corrupt", str(e) or "failed authentication")
    others = [p for p in holders.get(file_id, []) if p != path]
    if others:
        return FileState(path, "duplicate", f"same file ID as {others[0]}", file_id.hex())
    rec = vault.db.get_file(path)
    if rec is not None and (rec.file_id != file_id or rec.size != size):
        return FileState(path, "mismatch", "differs from the index (rolled back or swapped?)",
                         file_id.hex())
    return FileState(path, "ok", file_id=file_id.hex())


def _classify_locked(vault, path: str, raw: bytes, holders: dict) -> FileState:
    try:
        file_id = hdr.parse(raw).file_id
    except FormatError as e:
        return FileState(path, "corrupt", str(e) or "bad header")
    if not vault.keys.exists(file_id):
        return FileState(path, "no-key", "no key in the key store", file_id.hex())
    others = [p for p in holders.get(file_id, []) if p != path]
    if others:
        return FileState(path, "duplicate", f"same file ID as {others[0]}", file_id.hex())
    rec = vault.db.get_file(path)
    if rec is not None and rec.file_id != file_id:
        return FileState(path, "mismatch", "differs from the index (rolled back or swapped?)",
                         file_id.hex())
    return FileState(path, "ok", LOCKED_DETAIL, file_id.hex())


#: Why a file counted "ok" was not decrypted (user-key mode without a key unlocked).
LOCKED_DETAIL = "header, key and index checked; contents not authenticated (keys locked)"


def _holders(vault, files: list[tuple[str, object]]) -> dict[bytes, list[str]]:
    out: dict[bytes, list[str]] = {}
    for path, _e in files:
        try:
            raw = vault.head(path)
            if hdr.is_encrypted(raw):
                out.setdefault(hdr.parse(raw).file_id, []).append(path)
        except (DavServerError, OSError):
            continue
    return out


def scan(vault, users: list[str] | None = None, *, path: str | None = None,
         progress: Progress | None = None) -> CheckReport:
    """Authenticate every stored file end to end and report its state."""
    files = list(_stored_files(vault, users, path))
    holders = _holders(vault, files)
    report = CheckReport()
    for p, e in files:
        report.files.append(classify(vault, p, holders))
        if progress:
            progress(1, e.size)
    return report


def fix_encrypted_version(vault, users: list[str] | None = None, *, path: str | None = None,
                          apply: bool = False, progress: Progress | None = None) -> CheckReport:
    """Re-record files refused by the version check that still authenticate as themselves.

    A 'mismatch' whose file ID no other stored file claims is accepted (its generation is
    bumped so clients see a new ETag); duplicates and corrupt files are only reported.
    """
    report = scan(vault, users, path=path, progress=progress)
    for f in report.files:
        if f.state != "mismatch" or not apply:
            continue
        file_id, size = authenticate(vault, f.path)
        old = vault.db.get_file(f.path)
        vault.db.put_file(FileRecord(f.path, file_id, (old.generation + 1) if old else 1,
                                     size, time.time()))
        if old is not None and old.file_id not in (None, file_id):
            if not vault.db.files_by_id(old.file_id):
                vault.keys.delete(old.file_id)
        f.state, f.detail = "ok", "re-recorded"
        report.fixed.append(f.path)
    return report


def fix_key_location(vault, users: list[str] | None = None, *, apply: bool = False,
                     progress: Progress | None = None) -> CheckReport:
    """Rebuild the path -> file ID index from headers; report files without keys and
    keys without files."""
    report = scan(vault, users, progress=progress)
    for f in report.files:
        if f.state == "ok" and f.file_id:
            rec = vault.db.get_file(f.path)
            if rec is None:
                if apply:
                    fid, size = authenticate(vault, f.path)
                    for other in vault.db.files_by_id(fid):
                        vault.db.delete_files(other.path)
                    vault.db.put_file(FileRecord(f.path, fid, 1, size, time.time()))
                report.fixed.append(f.path)
    report.orphan_keys = orphan_keys(vault)
    return report


def orphan_keys(vault) -> list[str]:
    """Key files whose file ID no indexed or stored file carries and no commit in flight
    uses. Read in this order so that work running meanwhile is never taken for an orphan:
    key files, then commits in flight (a key is written after its pending row), then the
    index (a commit records its file before it drops that row; a move changes the index
    and the file together), then the stored headers (files placed by hand). Keys the
    index holds are never orphans, even when the storage lists nothing (an unmounted
    disk) or the file went missing."""
    found = list(vault.keys.iter_file_ids())
    used = {fid for fid, _p, plain in vault.db.list_pending() if not plain}
    used.update(r.file_id for r in vault.db.iter_files() if r.file_id is not None)
    used.update(_holders(vault, list(_stored_files(vault, None, None))))
    return [fid.hex() for fid in found if fid not in used]


def clean_orphaned_keys(vault, *, apply: bool = False) -> list[str]:
    found = orphan_keys(vault)
    if apply:
        for h in found:
            vault.keys.delete(bytes.fromhex(h))
    return found
