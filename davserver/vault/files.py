"""The vault: the one place that combines storage, key store and file index.

Every caller (WebDAV, CLI, web pages) reads and writes files through :class:`Vault`, so
the rules below hold whatever the entry point:

* A write is invisible until committed, and the commit is crash-safe across three stores.
  Order: ciphertext to a temp blob -> ``pending`` row (synced when it replaces an
  encrypted version) -> key file (fsync) -> atomic rename (fsync) -> index row + pending
  row removed in one transaction -> old key deleted. A crash at any point leaves either
  the old version or the new one; :meth:`Vault.recover` (run at start) finishes or rolls
  back what a crash interrupted.
* A stored file must match the index: same file ID (fresh for every write) and same
  plaintext size. Otherwise it was swapped, rolled back, truncated or extended, and it is
  refused with a log line naming the path. A file the index does not know (placed or moved
  by hand) is adopted if its key is found and no other live path claims its file ID.
* Keys are found by file ID only, so moves never touch keys.

Paths are storage keys: ``"<user>/<path inside the home>"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from davserver.crypto import header as hdr
from davserver.crypto import keywrap, stream
from davserver.errors import (
    Conflict,
    DavServerError,
    FormatError,
    IntegrityError,
    KeyNotFound,
    NotFound,
    QuotaExceeded,
    StorageChanged,
    StorageNotFound,
    VersionMismatch,
)
from davserver.meta.cluster_locks import ClusterPathLocks
from davserver.meta.db import FileRecord, MetaDB
from davserver.meta.interprocess import PathLocks
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage
from davserver.vault.keystore import Identity, KeyStore, Recipient

log = logging.getLogger("davserver.vault")


class Node(NamedTuple):
    """What a listing needs about one file or folder; never requires decryption.

    A NamedTuple, not a frozen dataclass: as immutable, and made 2.5x faster (a frozen
    dataclass sets each field through object.__setattr__), which a 10,000-file PROPFIND
    does 10,000 times."""

    path: str
    name: str
    is_dir: bool
    size: int
    mtime: float
    etag: str
    encrypted: bool
    #: The file ID the index named when this node was made (None: not from the index).
    indexed_id: bytes | None = None

    def describes(self, opened) -> bool:
        """Is ``opened`` (from open_read) the version this node was made from? A commit
        between a stat and an open would otherwise pair one version's headers
        (Content-Length, ETag) with another's bytes."""
        if opened.size != self.size:
            return False
        return not self.encrypted or getattr(opened, "file_id", b"").hex() == self.etag


class RawFile:
    """Seekable read-only view of a plaintext blob (files not encrypted, e.g. placed by hand)."""

    def __init__(self, reader: BlobReader) -> None:
        self._r = reader
        self._pos = 0

    @property
    def size(self) -> int:
        return self._r.size

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._r.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._r.size - self._pos
        data = self._r.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._r.close()


#: Opens of one path retried when a concurrent commit replaced the version being opened.
_OPEN_ATTEMPTS = 5


class _Superseded(Exception):
    """The version being opened was replaced by a commit meanwhile (a race, not damage)."""


class Upload:
    """A write in progress; see the module docstring for the commit protocol."""

    def __init__(self, vault: Vault, path: str, *, limit: int | None, encrypt: bool,
                 recipients: list[Recipient]) -> None:
        self._vault = vault
        self.path = path
        self._limit = limit
        self._blob = vault.storage.writer(path)
        self._done = False
        self.encrypted = encrypt
        self.size = 0
        if encrypt:
            self.file_id = keywrap.new_file_id()
            self._data_key = keywrap.new_data_key()
            self._recipients = recipients
            self._stream = stream.StreamWriter(self._blob.write, self._data_key, self.file_id)
        else:
            self.file_id = None
            self._stream = None

    @classmethod
    def staged(cls, vault: Vault, path: str, blob: BlobWriter, *, file_id: bytes,
               data_key: bytes, size: int, recipients: list[Recipient]) -> Upload:
        """See :meth:`Vault.begin_staged`."""
        up = cls.__new__(cls)
        up._vault, up.path, up._limit, up._blob, up._done = vault, path, None, blob, False
        up.encrypted, up.size, up.file_id, up._stream = True, size, file_id, None
        up._data_key, up._recipients = data_key, recipients
        return up

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._limit is not None and self.size > self._limit:
            self.abort()
            raise QuotaExceeded(f"upload to {self.path} exceeds the available space")
        if self._stream is not None:
            self._stream.write(data)
        else:
            self._blob.write(data)

    def commit(self, mtime: float | None = None,
               expect_generation: int | None = None) -> FileRecord:
        """Make the upload the file's content. ``expect_generation`` (0: no file) refuses
        the commit if someone else committed to the path since it was read."""
        if self._done:
            raise Conflict("upload already finished")
        try:
            if self._stream is not None:
                self._stream.finish()
            return self._vault._commit(self, mtime, expect_generation)
        finally:
            self._done = True
            self._data_key = None

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._data_key = None
            self._blob.abort()


class Vault:
    def __init__(self, storage: Storage, keys: KeyStore, db: MetaDB, *,
                 identities: Callable[[], list[Identity]],
                 recipients: Callable[[str, str], list[Recipient]],
                 encryption_enabled: Callable[[], bool],
                 commit_locks: PathLocks | ClusterPathLocks) -> None:
        self.storage = storage
        self.keys = keys
        self.db = db
        self._identities = identities
        self._recipients = recipients
        self._encryption_enabled = encryption_enabled
        #: One committer per path, across processes (and nodes: meta.cluster_locks).
        self.commit_locks = commit_locks
        #: Called as (src, dst) after a move (sharing re-wraps keys that changed folders).
        self.after_move: Callable[[str, str], object] | None = None
        #: Paths in the shared index that another vault (an external storage mount)
        #: stores: recover() leaves their pending commits to that vault.
        self.foreign: Callable[[str], bool] = lambda path: False

    # --- start-up ----------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Finish or roll back commits a crash interrupted; remove temp blobs.

        A pending row may also be a commit in progress: another node's (nodes share the
        index), or another process's. A committer holds its path's commit lock from
        before its pending row until it drops it, so a row still there once we hold that
        lock is a commit whose process died; rolling back a live one would delete the
        key of the file it is writing."""
        finished = rolled_back = 0
        for file_id, path, plain in self.db.list_pending():
            if self.foreign(path):
                continue
            try:
                with self.commit_locks.hold(path):
                    if file_id not in self.db.pending_for(path, plain=plain):
                        continue  # its committer finished it meanwhile
                    if plain:
                        done = self.storage.stat(path) is not None \
                            and self._stored_file_id(path) is None
                    else:
                        done = self._stored_file_id(path) == file_id
                    if not done:
                        if not plain:
                            self.keys.delete(file_id)
                        self.db.remove_pending(file_id)
                        rolled_back += 1
            except DavServerError as e:  # the lock service or the store, not now
                log.warning("commit of %s not recovered now: %s", path, e)
                continue
            if done:
                try:
                    self._finish_commit(path, file_id, plain=plain)  # takes the lock itself
                except _Superseded:
                    pass  # a request finished or replaced it meanwhile
                finished += 1
        self._delete_doomed(self.db.doomed_keys())
        temps = self.storage.cleanup() + self.keys.cleanup()
        if finished or rolled_back or temps:
            log.info("recovered after crash: %d commits finished, %d rolled back, "
                     "%d temp blobs removed", finished, rolled_back, temps)
        return {"finished": finished, "rolled_back": rolled_back, "temps": temps}

    def head(self, path: str) -> bytes:
        """The first bytes of a stored blob: enough to tell our files from plaintext and
        to read the file ID, without decrypting anything."""
        with self.storage.open_reader(path) as r:
            return r.read_at(0, hdr.HEADER_BYTES)

    def _stored_file_id(self, path: str) -> bytes | None:
        try:
            return hdr.parse(self.head(path)).file_id
        except (StorageNotFound, FormatError):
            return None

    # --- queries -----------------------------------------------------------------------

    def _node(self, path: str, e: Entry, rec: FileRecord | None,
              dir_etag: str | None = None) -> Node:
        name = path.rsplit("/", 1)[-1]
        if e.is_dir:
            # Changes through the server renew dir_etag on every ancestor; the mtime part
            # catches what changed behind the server's back in the folder itself.
            return Node(path, name, True, 0, e.mtime,
                        f"d-{int(e.mtime * 1e6):x}-{dir_etag or 0}", False)
        if rec is not None:
            if rec.file_id is not None:
                return Node(path, name, False, rec.size, rec.mtime, rec.file_id.hex(), True,
                            rec.file_id)
            if rec.size == e.size:
                # The recorded mtime is the client's (X-OC-Mtime, PROPPATCH), as for an
                # encrypted file; the blob's own mtime in the ETag still catches a change
                # made behind the server's back.
                return Node(path, name, False, rec.size, rec.mtime,
                            f"p-{rec.generation}-{int(e.mtime * 1e6):x}", False)
        # Not indexed (placed by hand): sniff the header, never decrypt.
        size, encrypted, etag = e.size, False, f"p-{int(e.mtime * 1e6):x}-{e.size:x}"
        try:
            raw = self.head(path)
            if hdr.is_encrypted(raw):
                h = hdr.parse(raw)
                size = stream.plaintext_size(e.size, h.chunk_shift)
                encrypted, etag = True, h.file_id.hex()
        except (FormatError, StorageNotFound):
            pass
        return Node(path, name, False, size, e.mtime, etag, encrypted)

    def stat(self, path: str) -> Node | None:
        e = self.storage.stat(path)
        if e is None:
            return None
        if e.is_dir:
            return self._node(path, e, None, self.db.dir_etag(path))
        return self._node(path, e, self.db.get_file(path))

    def list_dir(self, path: str) -> list[Node]:
        records = self.db.children(path)
        # An encrypted file's node is made from its index row alone (size, time, ETag).
        entries = self.storage.list_dir_known(
            path, {n for n, r in records.items() if r.file_id is not None})
        etags = self.db.child_dir_etags(path) if any(e.is_dir for e in entries) else {}
        return [self._node(f"{path}/{e.name}", e, records.get(e.name), etags.get(e.name))
                for e in entries]

    def usage(self, user: str) -> int:
        return self.db.usage(user)

    # --- reading -----------------------------------------------------------------------

    def open_read(self, path: str, as_of: Node | None = None):
        """Open for reading: a seekable file of verified plaintext (or a plaintext blob).

        ``as_of``: the caller's stat of ``path``. When the stored header names the file ID
        that stat found in the index, that read of the index serves for this one too.
        """
        for attempt in range(_OPEN_ATTEMPTS):
            reader = self.storage.open_reader(path)
            try:
                return self._open_checked(path, reader, as_of)
            except (_Superseded, StorageChanged):  # a commit came between open and read
                reader.close()
                as_of = None  # the caller's stat is older still
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise Conflict(f"{path} kept changing while it was being opened; "
                                   "try again") from None
            except BaseException:
                reader.close()
                raise
        raise AssertionError("unreachable")

    def _open_checked(self, path: str, reader: BlobReader, as_of: Node | None = None):
        raw = reader.read_at(0, hdr.HEADER_BYTES)
        if (as_of is not None and as_of.indexed_id is not None and hdr.is_encrypted(raw)
                and hdr.parse(raw).file_id == as_of.indexed_id):
            return self._open_verified(path, reader, raw, as_of.indexed_id, as_of.size)
        rec = self.db.get_file(path)
        if not hdr.is_encrypted(raw):
            if rec is not None and rec.encrypted:
                marks = self.db.pending_for(path, plain=True)
                if not marks:
                    self._refuse(path, "an encrypted file was replaced by unencrypted data")
                self._finish_commit(path, marks[0], plain=True)
            return RawFile(reader)
        h = hdr.parse(raw)
        if rec is None or not rec.encrypted:
            rec = self._adopt(path, h.file_id, reader.size, h.chunk_shift, rec)
        elif rec.file_id != h.file_id:
            if h.file_id in self.db.pending_for(path):
                rec = self._finish_commit(path, h.file_id)
            elif (now := self.db.get_file(path)) is not None and now.file_id == h.file_id:
                rec = now  # a commit finished between the header read and the index read
            elif now is None or now.file_id != rec.file_id:
                raise _Superseded()  # the index moved on: open the newest version again
            elif self._stored_file_id(path) == rec.file_id:
                # This reader had reached the previous version, which a commit replaced
                # before its header was read (on an object store the name is resolved
                # before the first read): what the name holds now is the indexed version.
                raise _Superseded()
            else:
                self._refuse(path, f"stored file ID {h.file_id.hex()} is not the indexed "
                             f"{rec.file_id.hex()} (swapped or rolled back)")
        return self._open_verified(path, reader, raw, h.file_id, rec.size)

    def _open_verified(self, path: str, reader: BlobReader, raw: bytes, file_id: bytes,
                       indexed_size: int):
        try:
            data_key = self.keys.unwrap(file_id, self._identities())
        except KeyNotFound:
            now = self.db.get_file(path)
            if now is None or now.file_id != file_id:
                # Overwritten (or deleted) after the header was read: the old version's key
                # is gone with it. Not damage: open the newest version again.
                raise _Superseded() from None
            log.error("no key for %s (file ID %s)", path, file_id.hex())
            raise
        try:
            cr = stream.ChunkReader(reader.read_at, reader.size, data_key, raw)
        except (IntegrityError, FormatError):
            self._refuse(path, "header or size failed authentication")
        if cr.plain_size != indexed_size:
            self._refuse(path, f"size {cr.plain_size} differs from the indexed {indexed_size} "
                         "(truncated or extended)")
        return stream.PlaintextFile(cr, on_close=reader.close)

    def _refuse(self, path: str, why: str):
        log.error("refusing %s: %s; see 'davserver encryption:fix-encrypted-version'", path, why)
        raise VersionMismatch(path)

    def _adopt(self, path: str, file_id: bytes, cipher_size: int, shift: int,
               old: FileRecord | None) -> FileRecord:
        """Index a file found in storage that the index does not know (moved or placed
        by hand). Refused when another live path holds the same file ID: that is a copy
        or a swap, not a move."""
        for other in self.db.files_by_id(file_id):
            if other.path != path and self._stored_file_id(other.path) == file_id:
                self._refuse(path, f"file ID {file_id.hex()} also belongs to {other.path}")
        if not self.keys.exists(file_id):
            raise KeyNotFound(file_id.hex())
        try:
            size = stream.plaintext_size(cipher_size, shift)
        except FormatError:
            self._refuse(path, "impossible ciphertext size")
        rec = FileRecord(path, file_id, (old.generation + 1) if old else 1, size, time.time())
        with self.db.tx() as c:
            for other in self.db.files_by_id(file_id):
                if other.path != path:
                    c.execute("DELETE FROM files WHERE path = ?", (other.path,))
            self.db.put_file(rec, conn=c)
        log.info("indexed %s (file ID %s) found in storage", path, file_id.hex())
        return rec

    def read_all(self, path: str) -> bytes:
        f = self.open_read(path)
        try:
            return f.read()
        finally:
            f.close()

    # --- writing -----------------------------------------------------------------------

    def available(self, user: str, quota: int | None, replacing: str | None = None) -> int | None:
        """Bytes the user may still store (None: unlimited), not counting ``replacing``."""
        if quota is None:
            return None
        used = self.db.usage(user)
        if replacing:
            rec = self.db.get_file(replacing)
            if rec is not None:
                used -= rec.size
        return max(0, quota - used)

    def begin_write(self, path: str, *, quota: int | None = None,
                    expected_size: int | None = None, encrypt: bool | None = None,
                    owner: str | None = None, reserved: int = 0) -> Upload:
        """Start a write; ``encrypt`` overrides the instance setting (encrypt/decrypt-all).
        ``owner``: the user whose keys and quota apply when ``path`` is outside their
        home (upload chunks), ``reserved`` bytes of whose quota are taken already."""
        user = owner or path.split("/", 1)[0]
        limit = self.available(user, quota, replacing=None if owner else path)
        if limit is not None and reserved:
            limit = max(0, limit - reserved)
        if limit is not None and expected_size is not None and expected_size > limit:
            raise QuotaExceeded(f"{expected_size} bytes do not fit in the {limit} available")
        if encrypt is None:
            encrypt = self._encryption_enabled()
        return Upload(self, path, limit=limit, encrypt=encrypt,
                      recipients=self._recipients(user, path) if encrypt else [])

    def begin_staged(self, path: str, blob: BlobWriter, *, file_id: bytes, data_key: bytes,
                     size: int, quota: int | None = None) -> Upload:
        """A write whose ciphertext (under ``file_id`` and ``data_key``) is complete in
        ``blob`` already (a chunked upload written in place, vault.chunkstage): only the
        quota check and the commit are left."""
        user = path.split("/", 1)[0]
        limit = self.available(user, quota, replacing=path)
        if limit is not None and size > limit:
            raise QuotaExceeded(f"{size} bytes do not fit in the {limit} available")
        return Upload.staged(self, path, blob, file_id=file_id, data_key=data_key, size=size,
                             recipients=self._recipients(user, path))

    def _commit(self, up: Upload, mtime: float | None,
                expect_generation: int | None = None) -> FileRecord:
        path = up.path
        mtime = time.time() if mtime is None else mtime
        with self.commit_locks.hold(path):
            old = self.db.get_file(path)
            if expect_generation is not None and (old.generation if old else 0) \
                    != expect_generation:
                up._blob.abort()
                raise Conflict(f"{path} changed while it was being converted; run the job again")
            gen = (old.generation + 1) if old else 1
            rec = FileRecord(path, up.file_id, gen, up.size, mtime)
            if up.file_id is not None:
                marker, plain = up.file_id, False
            elif old is not None and old.encrypted:
                marker, plain = keywrap.new_file_id(), True
            else:
                marker, plain = None, True
            if marker is not None:
                # Announce before the key exists: a crash from here on is rolled back
                # (key deleted) or finished by recover(), never leaves a stray key.
                # Only a replaced encrypted version needs the row to survive a power loss:
                # without it, the index would refuse the new file as a swap. A new path
                # (or a plaintext one) would be adopted, so its row need not be flushed.
                self.db.add_pending(marker, path, plain=plain,
                                    durable=old is not None and old.encrypted)
            try:
                if not plain and marker is not None:
                    self.keys.wrap_new(up.file_id, up._data_key, up._recipients)
                up._blob.commit()
            except BaseException:
                if marker is not None:
                    if not plain:
                        self.keys.delete(marker)
                    self.db.remove_pending(marker)
                raise
            doomed = [old.file_id] if old is not None and old.file_id not in (
                None, up.file_id) else []
            with self.db.tx() as c:
                self.db.put_file(rec, conn=c)
                if marker is not None:
                    self.db.remove_pending(marker, conn=c)
                self.db.touch_dirs(path, conn=c)
                self.db.doom_keys(doomed, conn=c)
            self._delete_doomed(doomed)
            return rec

    def _delete_doomed(self, file_ids: list[bytes]) -> None:
        """Delete keys the index no longer uses; recorded first, so a crash in between
        is finished by recover()."""
        for fid in file_ids:
            self.keys.delete(fid)
        if file_ids:
            self.db.forget_doomed(file_ids)

    def _finish_commit(self, path: str, file_id: bytes, *, plain: bool = False) -> FileRecord:
        """Complete a commit whose rename happened but whose index update did not.

        Readers call this while the committer may still be at work, so it takes the
        commit lock and checks again that the commit is still unfinished and its blob
        still the stored one. Without that, a reader that saw the pending row before a
        newer commit replaced the blob would index the old file ID over the new blob and
        delete the new key: the file lost (found by bench/soak.py). _Superseded when the
        commit was finished or replaced meanwhile.
        """
        with self.commit_locks.hold(path):
            if file_id not in self.db.pending_for(path, plain=plain):
                raise _Superseded()
            with self.storage.open_reader(path) as r:
                raw = r.read_at(0, hdr.HEADER_BYTES)
                if plain:
                    if hdr.is_encrypted(raw):
                        raise _Superseded()
                    size, new_id = r.size, None
                else:
                    h = hdr.parse(raw)
                    if h.file_id != file_id:
                        raise _Superseded()
                    size, new_id = stream.plaintext_size(r.size, h.chunk_shift), file_id
            old = self.db.get_file(path)
            rec = FileRecord(path, new_id, (old.generation + 1) if old else 1, size,
                             time.time())
            doomed = [old.file_id] if old is not None and old.file_id not in (None, new_id) \
                else []
            with self.db.tx() as c:
                self.db.put_file(rec, conn=c)
                self.db.remove_pending(file_id, conn=c)
                self.db.doom_keys(doomed, conn=c)
            self._delete_doomed(doomed)
            return rec

    def write_bytes(self, path: str, data: bytes, *, quota: int | None = None) -> FileRecord:
        up = self.begin_write(path, quota=quota, expected_size=len(data))
        try:
            up.write(data)
        except BaseException:
            up.abort()
            raise
        return up.commit()

    # --- namespace ---------------------------------------------------------------------

    def make_dir(self, path: str) -> None:
        self.storage.make_dir(path)
        with _undone_on_error(lambda: self.storage.remove_dir(path), f"new folder {path}"):
            self.db.touch_dirs(path)  # after the folder exists: a new ETag means a change

    def delete(self, path: str) -> None:
        e = self.storage.stat(path)
        if e is None:
            raise NotFound(path)
        if e.is_dir:
            file_ids = [r.file_id for r in self.db.iter_files(path) if r.file_id]
            for key, child in sorted(self.storage.walk(path), key=lambda x: x[0], reverse=True):
                if child.is_dir:
                    self.storage.remove_dir(key)
                else:
                    self.storage.delete(key)
            self.storage.remove_dir(path)
        else:
            rec = self.db.get_file(path)
            file_ids = [rec.file_id] if rec and rec.file_id else []
            self.storage.delete(path)
        with self.db.tx() as c:
            self.db.delete_files(path, conn=c)
            self.db.touch_dirs(path, conn=c)
            self.db.doom_keys(file_ids, conn=c)
        self.db.remove_props(path, tree=True)
        self._delete_doomed(file_ids)

    def move(self, src: str, dst: str) -> None:
        """Rename a file or folder; ``dst`` must not exist. Keys do not move."""
        self._rename_stored(src, dst)
        with _undone_on_error(lambda: self._rename_stored(dst, src), f"move {src} -> {dst}"), \
                self.db.tx() as c:
            self.db.move_files(src, dst, conn=c)
            self.db.move_props(src, dst, conn=c)
            self.db.touch_dirs(src, conn=c)
            self.db.touch_dirs(dst, conn=c)
        if self.after_move is not None:
            self.after_move(src, dst)

    def _rename_stored(self, src: str, dst: str) -> None:
        """Move in storage. Where a folder rename is not one atomic step (object stores),
        move it file by file: each file is at its old or its new path, never both or
        neither, and a failure part-way moves back what had moved. A crash part-way leaves
        some files at the new path, unindexed there: they are adopted when next read
        (their old paths are gone), so nothing is lost or doubled."""
        if self.storage.atomic_dir_rename:
            self.storage.rename(src, dst)
            return
        e = self.storage.stat(src)
        if e is None:
            raise NotFound(src)
        if not e.is_dir:
            self.storage.rename(src, dst)
            return
        if self.storage.stat(dst) is not None:
            raise Conflict(f"{dst} exists")
        if (dst + "/").startswith(src + "/"):
            raise Conflict("cannot move a folder into itself")
        tree = list(self.storage.walk(src))  # parents first
        made: list[str] = []
        moved: list[tuple[str, str]] = []
        try:
            self.storage.make_dir(dst)
            made.append(dst)
            for key, child in tree:
                target = dst + key[len(src):]
                if child.is_dir:
                    self.storage.make_dir(target)
                    made.append(target)
                else:
                    self.storage.rename(key, target)
                    moved.append((key, target))
        except BaseException:
            for old, new in reversed(moved):
                try:
                    self.storage.rename(new, old)
                except (DavServerError, OSError) as err:
                    log.error("could not move %s back to %s: %s", new, old, err)
            for d in reversed(made):
                try:
                    self.storage.remove_dir(d)
                except (DavServerError, OSError):
                    pass
            raise
        for key, child in reversed(tree):
            if child.is_dir:
                self.storage.remove_dir(key)
        self.storage.remove_dir(src)

    def copy_file(self, src: str, dst: str, *, quota: int | None = None) -> FileRecord:
        """Copy by re-encrypting under a fresh key: one file ID always means one path."""
        return copy_between(self, src, self, dst, quota=quota)

    def set_mtime(self, path: str, mtime: float) -> None:
        """Record a client-supplied modification time (X-OC-Mtime, PROPPATCH)."""
        rec = self.db.get_file(path)
        if rec is not None:
            self.db.put_file(FileRecord(rec.path, rec.file_id, rec.generation, rec.size, mtime))

    def iter_paths(self, path: str) -> Iterator[tuple[str, Entry]]:
        yield from self.storage.walk(path)


@contextmanager
def _undone_on_error(undo: Callable[[], object], what: str) -> Iterator[None]:
    """For the index update that follows a change in storage: if it fails, undo the change.

    The caller is told the operation failed, so storage must not keep it either: a folder
    or a moved file the index does not know would surface later (adopted, or seen by sync
    clients only with the next change around it) as something nobody asked for.
    """
    try:
        yield
    except BaseException:
        try:
            undo()
        except (DavServerError, OSError) as e:
            log.error("could not undo %s after a failed index update: %s", what, e)
        raise


def pump(src, up: Upload, block_size: int = 1 << 20) -> None:
    """Copy a readable file into an upload; any failure aborts the upload."""
    try:
        while True:
            block = src.read(block_size)
            if not block:
                break
            up.write(block)
    except BaseException:
        up.abort()
        raise


def ensure_home(vault: Vault, user: str) -> None:
    if vault.storage.stat(user) is None:
        try:
            vault.storage.make_dir(user)
        except Conflict:
            pass


def remove_home(vault: Vault, user: str) -> None:
    if vault.storage.stat(user) is not None:
        vault.delete(user)
    vault.db.delete_files(user)


def storage_path(user: str, rel: str) -> str:
    rel = rel.strip("/")
    return f"{user}/{rel}" if rel else user


def copy_between(source: Vault, src: str, target: Vault, dst: str, *,
                 quota: int | None = None) -> FileRecord:
    """Copy a file through the two vaults' read and write paths (decrypted from the one,
    written under the other's rules with a fresh key), so a copy is never a second name
    for one file ID, within one vault or between two (external storage mounts)."""
    node = source.stat(src)
    if node is None or node.is_dir:
        raise NotFound(src)
    f = source.open_read(src)
    try:
        up = target.begin_write(dst, quota=quota, expected_size=node.size)
        pump(f, up)
    finally:
        f.close()
    return up.commit()
