"""Blobs named by ID, names and folders in the index: primary object storage as
Nextcloud does it (``urn:oid:<id>`` objects).

Wraps another backend (S3) and presents the usual path-keyed storage interface to the
vault. Every committed version of a file is one object ``urn:oid:<random id>`` in the
inner store; the table ``object_names`` (davserver/meta/objects_schema.py) maps paths to
those IDs and holds the folders. So:

* Renaming or moving a folder of any size is one SQL transaction: atomic, and no object
  is copied (``atomic_dir_rename = True``, unlike S3 by path).
* Listing a folder is an index query, not an S3 LIST.
* A new version is uploaded under a fresh ID, then the name is switched to it in one
  transaction. The old object is kept ``keep_replaced_seconds`` more, then deleted: a
  download that began before the switch (on this node or another) reads it by its ID to
  the end instead of losing its object half-way, which on local disk an open file
  descriptor gives for free. Objects that are not (yet, or any more) named are recorded
  in ``object_blobs_pending`` first; writes sweep those whose time is up, and
  :meth:`cleanup` deletes what a crash left (unfinished uploads after ``stale_seconds``,
  since a younger one may still be being written by another process).
* The store holds only opaque objects: no file or folder names leave this server.

Files written to the bucket by other tools are not seen (there is no name for them), as
with Nextcloud's primary object storage.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import AbstractContextManager
from typing import Protocol

from davserver.errors import Conflict, DavServerError, StorageError, StorageNotFound
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage, checked_parts

_UNDER = "(path = ? OR substr(path, 1, length(?) + 1) = ? || '/')"


class NameDB(Protocol):
    """What this layer needs of the instance database (davserver.meta.db.MetaDB, whose
    schema includes meta/objects_schema.py); storage does not import meta."""

    def tx(self) -> AbstractContextManager: ...

    def query(self, sql: str, args=()) -> list[tuple]: ...


def blob_key(blob: str) -> str:
    return f"urn:oid:{blob}"


def _parent(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i >= 0 else ""


class _IdWriter(BlobWriter):
    def __init__(self, store: IdNamedStorage, path: str) -> None:
        self._store = store
        self._path = path
        self._blob = uuid.uuid4().hex
        with store.db.tx() as c:
            c.execute("INSERT INTO object_blobs_pending(blob, doomed, created) VALUES(?, 0, ?)",
                      (self._blob, time.time()))
        self._inner = store.inner.writer(blob_key(self._blob))
        self._size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._inner.write(data)
        self._size += len(data)

    def commit(self) -> None:
        if self._done:
            raise StorageError("upload already finished")
        self._done = True
        s = self._store
        try:
            self._inner.commit()
        except BaseException:
            s._forget_pending(self._blob)
            raise
        try:
            with s.db.tx() as c:
                parent = _parent(self._path)
                if parent and not s._is_dir(c, parent):
                    raise Conflict("parent folder does not exist")
                row = c.execute("SELECT is_dir, blob FROM object_names WHERE path = ?",
                                (self._path,)).fetchone()
                if row is not None and row[0]:
                    raise Conflict(f"{self._path} is a folder")
                c.execute("INSERT INTO object_names(path, parent, is_dir, blob, size, mtime) "
                          "VALUES(?, ?, 0, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                          "blob = excluded.blob, size = excluded.size, mtime = excluded.mtime",
                          (self._path, parent, self._blob, self._size, time.time()))
                c.execute("DELETE FROM object_blobs_pending WHERE blob = ?", (self._blob,))
                old = row[1] if row is not None else None
                if old:
                    c.execute("INSERT INTO object_blobs_pending(blob, doomed, created) "
                              "VALUES(?, 1, ?) ON CONFLICT(blob) DO UPDATE SET doomed = 1, "
                              "created = excluded.created", (old, time.time()))
        except BaseException:
            s._drop_blob(self._blob)
            raise
        s._retire(old)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._inner.abort()
        self._store._forget_pending(self._blob)


class IdNamedStorage(Storage):
    atomic_dir_rename = True
    local_durability = False
    kind = "s3-by-id"

    #: Writes look for replaced objects whose time is up at most this often (seconds).
    sweep_interval = 60.0

    def __init__(self, inner: Storage, db: NameDB, *, stale_seconds: float = 24 * 3600.0,
                 keep_replaced_seconds: float = 3600.0):
        self.inner = inner
        self.db = db
        self.stale_seconds = stale_seconds
        self.keep_replaced_seconds = keep_replaced_seconds
        self.kind = f"{inner.kind}-by-id"
        self._swept_at = time.monotonic()
        self._sweep_lock = threading.Lock()

    # --- helpers -----------------------------------------------------------------------

    @staticmethod
    def _path(key: str) -> str:
        return "/".join(checked_parts(key))

    @staticmethod
    def _is_dir(c, path: str) -> bool:
        if not path:
            return True
        row = c.execute("SELECT is_dir FROM object_names WHERE path = ?", (path,)).fetchone()
        return bool(row and row[0])

    def _row(self, path: str):
        rows = self.db.query("SELECT is_dir, blob, size, mtime FROM object_names "
                             "WHERE path = ?", (path,))
        return rows[0] if rows else None

    def _forget_pending(self, blob: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM object_blobs_pending WHERE blob = ?", (blob,))

    def _drop_blob(self, blob: str) -> None:
        """Delete an object no name points to; recorded as pending first, so a failure
        here is finished by cleanup()."""
        try:
            self.inner.delete(blob_key(blob))
        except StorageNotFound:
            pass
        except StorageError:
            return  # stays in object_blobs_pending for cleanup()
        self._forget_pending(blob)

    def _retire(self, blob: str | None) -> None:
        """An object no name points to any more (already recorded as doomed): deleted now
        if nothing may still be reading it, else left for a later sweep."""
        if self.keep_replaced_seconds <= 0:
            if blob:
                self._drop_blob(blob)
            return  # nothing is ever kept: no sweep query on every write
        self._sweep_due()

    def _sweep_due(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < min(self.sweep_interval, self.keep_replaced_seconds):
            return
        if not self._sweep_lock.acquire(blocking=False):
            return  # another thread of this process is at it
        try:
            self._swept_at = now
            self.sweep()
        except DavServerError:
            pass  # the store or the index is busy: the next write tries again
        finally:
            self._sweep_lock.release()

    def sweep(self, limit: int = 500) -> int:
        """Delete replaced or deleted objects kept longer than ``keep_replaced_seconds``.
        Nodes may sweep at once: deleting an object twice is harmless."""
        rows = self.db.query("SELECT blob FROM object_blobs_pending WHERE doomed = 1 "
                             "AND created < ? LIMIT ?",
                             (time.time() - self.keep_replaced_seconds, limit))
        for (blob,) in rows:
            self._drop_blob(blob)
        return len(rows)

    # --- the interface -----------------------------------------------------------------

    def stat(self, key: str) -> Entry | None:
        path = self._path(key)
        if not path:
            return Entry("", True, 0, 0.0)
        row = self._row(path)
        if row is None:
            return None
        return Entry(path.rsplit("/", 1)[-1], bool(row[0]), 0 if row[0] else row[2], row[3])

    def list_dir(self, key: str) -> list[Entry]:
        path = self._path(key)
        if path:
            row = self._row(path)
            if row is None or not row[0]:
                raise StorageNotFound(key)
        rows = self.db.query("SELECT path, is_dir, size, mtime FROM object_names "
                             "WHERE parent = ?", (path,))
        return [Entry(p.rsplit("/", 1)[-1], bool(d), 0 if d else size, mtime)
                for p, d, size, mtime in rows]

    def open_reader(self, key: str) -> BlobReader:
        row = self._row(self._path(key))
        if row is None or row[0]:
            raise StorageNotFound(key)
        return self.inner.open_reader(blob_key(row[1]))

    def writer(self, key: str) -> BlobWriter:
        path = self._path(key)
        if not path:
            raise Conflict("cannot write the root folder")
        return _IdWriter(self, path)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self.db.tx() as c:
            row = c.execute("SELECT is_dir, blob FROM object_names WHERE path = ?",
                            (path,)).fetchone()
            if row is None:
                raise StorageNotFound(key)
            if row[0]:
                raise Conflict(f"{key} is a folder")
            c.execute("DELETE FROM object_names WHERE path = ?", (path,))
            c.execute("INSERT INTO object_blobs_pending(blob, doomed, created) "
                      "VALUES(?, 1, ?) ON CONFLICT(blob) DO UPDATE SET doomed = 1, "
                      "created = excluded.created", (row[1], time.time()))
        self._retire(row[1])

    def make_dir(self, key: str) -> None:
        path = self._path(key)
        if not path:
            raise Conflict("the root folder exists")
        with self.db.tx() as c:
            if c.execute("SELECT 1 FROM object_names WHERE path = ?", (path,)).fetchone():
                raise Conflict(f"{key} exists")
            if not self._is_dir(c, _parent(path)):
                raise Conflict("parent folder does not exist")
            c.execute("INSERT INTO object_names(path, parent, is_dir, blob, size, mtime) "
                      "VALUES(?, ?, 1, NULL, 0, ?)", (path, _parent(path), time.time()))

    def remove_dir(self, key: str) -> None:
        path = self._path(key)
        if not path:
            raise Conflict("cannot remove the root folder")
        with self.db.tx() as c:
            if not self._is_dir(c, path):
                raise StorageNotFound(key)
            if c.execute("SELECT 1 FROM object_names WHERE parent = ? LIMIT 1",
                         (path,)).fetchone():
                raise Conflict(f"{key} is not empty")
            c.execute("DELETE FROM object_names WHERE path = ?", (path,))

    def rename(self, src: str, dst: str) -> None:
        """Metadata only: one transaction, whatever the folder holds."""
        s, d = self._path(src), self._path(dst)
        if not s or not d:
            raise Conflict("cannot move the root folder")
        with self.db.tx() as c:
            if not c.execute("SELECT 1 FROM object_names WHERE path = ?", (s,)).fetchone():
                raise StorageNotFound(src)
            if c.execute("SELECT 1 FROM object_names WHERE path = ?", (d,)).fetchone():
                raise Conflict(f"{dst} exists")
            if not self._is_dir(c, _parent(d)):
                raise Conflict("parent folder does not exist")
            if (d + "/").startswith(s + "/"):
                raise Conflict("cannot move a folder into itself")
            n = len(s)
            c.execute(f"UPDATE object_names SET path = ? || substr(path, ?), "
                      f"parent = ? || substr(parent, ?) WHERE {_UNDER} AND path != ?",
                      (d, n + 1, d, n + 1, s, s, s, s))
            c.execute("UPDATE object_names SET path = ?, parent = ? WHERE path = ?",
                      (d, _parent(d), s))

    def cleanup(self) -> int:
        n = self.inner.cleanup()
        now = time.time()
        rows = self.db.query("SELECT blob, doomed, created FROM object_blobs_pending")
        for blob, doomed, created in rows:
            if now - created < (self.keep_replaced_seconds if doomed else self.stale_seconds):
                continue  # may be read (doomed) or written (not) by a request in progress
            named = self.db.query("SELECT 1 FROM object_names WHERE blob = ?", (blob,))
            if named:
                self._forget_pending(blob)
                continue
            try:
                self.inner.delete(blob_key(blob))
                n += 1
            except StorageNotFound:
                pass
            self._forget_pending(blob)
        return n
