"""``filesystem_check_changes = never``: a mount's folders listed from the server's own
record instead of asking the store on every PROPFIND.

Nextcloud keeps such a mount's file cache as it last saw it: changes made by other tools
show up only after an explicit scan, and in exchange a listing costs no round trip to a
slow or metered store. Here the record is the ``mount_listing`` table: what the server
itself wrote (commits, folders, deletes, moves) is recorded as it happens, a folder never
seen before is listed from the store once, and ``files_external:scan`` re-reads the
whole store. Reading a file's bytes always goes to the store (there is nothing else to
read), so a file removed behind the server's back answers 404 when it is opened.
"""

from __future__ import annotations

import time

from davserver.meta.db import MetaDB
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def forget(db: MetaDB, root: str) -> None:
    """Drop a mount's record (its definition changed or went): the next listing of each
    folder asks the store again."""
    with db.tx() as c:
        c.execute("DELETE FROM mount_listing WHERE path = ? OR path" + _LIKE,
                  (root, _like(root)))


def _like(path: str) -> str:
    return path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"


_LIKE = " LIKE ? ESCAPE '\\'"


class _RecordingWriter(BlobWriter):
    """Counts what is written so the commit can record the blob's size."""

    def __init__(self, inner: BlobWriter, on_commit) -> None:
        self.inner = inner
        self._on_commit = on_commit
        self._size = 0

    def write(self, data: bytes) -> None:
        self.inner.write(data)
        self._size += len(data)

    def commit(self) -> None:
        self.inner.commit()
        self._on_commit(self._size)

    def abort(self) -> None:
        self.inner.abort()


class IndexedListing(Storage):
    """A mount's store (keys below ``root``) whose listings and stats come from the
    record; writes go to the store and then to the record."""

    def __init__(self, inner: Storage, db: MetaDB, root: str) -> None:
        self.inner = inner
        self.db = db
        self.root = root
        self.atomic_dir_rename = inner.atomic_dir_rename
        self.local_durability = inner.local_durability
        self.kind = inner.kind

    # --- the record --------------------------------------------------------------------

    def _row(self, key: str):
        rows = self.db.query("SELECT is_dir, size, mtime, listed FROM mount_listing "
                             "WHERE path = ?", (key,))
        return rows[0] if rows else None

    def _put(self, c, key: str, is_dir: bool, size: int, mtime: float, listed: bool) -> None:
        c.execute("INSERT INTO mount_listing(path, parent, is_dir, size, mtime, listed) "
                  "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                  "parent = excluded.parent, is_dir = excluded.is_dir, size = excluded.size, "
                  "mtime = excluded.mtime, listed = excluded.listed",
                  (key, _parent(key), int(is_dir), size, mtime, int(listed)))

    def _record(self, key: str, is_dir: bool, size: int, listed: bool) -> None:
        with self.db.tx() as c:
            self._put(c, key, is_dir, size, time.time(), listed)

    def _drop(self, key: str) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM mount_listing WHERE path = ? OR path" + _LIKE,
                      (key, _like(key)))

    def _listed(self, key: str) -> bool:
        row = self._row(key)
        return row is not None and bool(row[0]) and bool(row[3])

    def _remember(self, key: str, entries: list[Entry], mtime: float) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM mount_listing WHERE parent = ?", (key,))
            self._put(c, key, True, 0, mtime, True)
            for e in entries:
                self._put(c, f"{key}/{e.name}", e.is_dir, e.size, e.mtime, False)

    def rescan(self) -> int:
        """Read the whole store again (``files_external:scan``); return how many files
        and folders it holds."""
        top = self.inner.stat(self.root)
        found: list[tuple[str, Entry]] = []
        pending = [self.root]
        while pending:
            folder = pending.pop()
            for e in self.inner.list_dir(folder):
                found.append((f"{folder}/{e.name}", e))
                if e.is_dir:
                    pending.append(f"{folder}/{e.name}")
        dirs = {self.root} | {k for k, e in found if e.is_dir}
        with self.db.tx() as c:
            c.execute("DELETE FROM mount_listing WHERE path = ? OR path" + _LIKE,
                      (self.root, _like(self.root)))
            self._put(c, self.root, True, 0, top.mtime if top else 0.0, True)
            for k, e in found:
                self._put(c, k, e.is_dir, e.size, e.mtime, k in dirs)
        return len(found)

    # --- Storage -----------------------------------------------------------------------

    def stat(self, key: str) -> Entry | None:
        row = self._row(key)
        name = key.rsplit("/", 1)[-1]
        if row is not None:
            return Entry(name, bool(row[0]), row[1], row[2])
        if key == self.root or not self._listed(_parent(key)):
            return self.inner.stat(key)  # a folder not seen yet: the store says
        return None

    def list_dir(self, key: str) -> list[Entry]:
        if self._listed(key):
            rows = self.db.query("SELECT path, is_dir, size, mtime FROM mount_listing "
                                 "WHERE parent = ? ORDER BY path", (key,))
            return [Entry(p.rsplit("/", 1)[-1], bool(d), s, m) for p, d, s, m in rows]
        entries = self.inner.list_dir(key)
        here = self.inner.stat(key) if key != self.root else None
        self._remember(key, entries, here.mtime if here else time.time())
        return entries

    def open_reader(self, key: str) -> BlobReader:
        return self.inner.open_reader(key)

    def writer(self, key: str) -> BlobWriter:
        return _RecordingWriter(self.inner.writer(key),
                                lambda size: self._record(key, False, size, False))

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self._drop(key)

    def make_dir(self, key: str) -> None:
        self.inner.make_dir(key)
        self._record(key, True, 0, True)  # new, so empty: its listing is known

    def remove_dir(self, key: str) -> None:
        self.inner.remove_dir(key)
        self._drop(key)

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(src, dst)
        with self.db.tx() as c:
            c.execute("DELETE FROM mount_listing WHERE path = ? OR path" + _LIKE,
                      (dst, _like(dst)))
            rows = c.execute("SELECT path, is_dir, size, mtime, listed FROM mount_listing "
                             "WHERE path = ? OR path" + _LIKE, (src, _like(src))).fetchall()
            c.execute("DELETE FROM mount_listing WHERE path = ? OR path" + _LIKE,
                      (src, _like(src)))
            for path, is_dir, size, mtime, listed in rows:
                self._put(c, dst + path[len(src):], bool(is_dir), size, mtime, bool(listed))

    def cleanup(self) -> int:
        return self.inner.cleanup()
