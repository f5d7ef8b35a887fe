"""Persistent WebDAV lock storage in the metadata DB (survives restarts).

WsgiDAV's dict-based storage is reused as is; only its dictionary is swapped for a
mapping whose values live in the DB (pickled, as WsgiDAV's own shelve storage does), and
its reader/writer lock for one shared by all worker processes of the node
(:class:`~davserver.meta.interprocess.SharedRWLock`). WsgiDAV consults the lock table
several times per write request, so reads are served from an in-memory mirror; the shared
lock's change counter tells a process when another one changed the table, and only then
is the mirror read again. (A cluster of nodes uses a shared lock store instead.)
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping

from wsgidav.lock_man.lock_storage import LockStorageDict

from davserver.meta.db import MetaDB
from davserver.meta.interprocess import SharedRWLock


class _DbMapping(MutableMapping):
    def __init__(self, db: MetaDB, lock: SharedRWLock) -> None:
        self._db = db
        self._lock = lock
        self._mirror: dict[str, bytes] = {}
        self._seen = -1

    def sync(self, version: int) -> None:
        """Called with the shared counter whenever the lock is taken."""
        if version != self._seen:
            self._mirror = self._db.kv_items()
            self._seen = version

    def __getitem__(self, key: str):
        raw = self._mirror.get(key)
        if raw is None:
            raise KeyError(key)
        return pickle.loads(raw)  # noqa: S301 - our own DB, written by us only

    def __setitem__(self, key: str, value) -> None:
        raw = pickle.dumps(value)
        self._db.kv_set(key, raw)
        self._mirror[key] = raw
        self._seen = self._lock.mark_changed()

    def __delitem__(self, key: str) -> None:
        if key not in self._mirror:
            raise KeyError(key)
        self._db.kv_delete(key)
        del self._mirror[key]
        self._seen = self._lock.mark_changed()

    def __contains__(self, key) -> bool:
        return key in self._mirror

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._mirror))

    def __len__(self) -> int:
        return len(self._mirror)

    def clear(self) -> None:
        self._lock.acquire_write()
        try:
            self._db.kv_clear()
            self._mirror.clear()
            self._seen = self._lock.mark_changed()
        finally:
            self._lock.release()


class DbLockStorage(LockStorageDict):
    def __init__(self, db: MetaDB, lock_file: str) -> None:
        super().__init__()
        self._db = db
        self._lock = SharedRWLock(lock_file, on_acquire=self._sync)

    def __repr__(self) -> str:
        return "DbLockStorage"

    def _sync(self, version: int) -> None:
        if self._dict is not None:
            self._dict.sync(version)

    @property
    def shared_lock(self) -> SharedRWLock:
        """Also given to WsgiDAV's lock manager, so check-then-grant holds across workers."""
        return self._lock

    def open(self) -> None:
        self._dict = _DbMapping(self._db, self._lock)

    def close(self) -> None:
        self._dict = None

    def has_lock_under(self, url_prefix: str) -> bool:
        """Any lock whose (quoted) URL starts with ``url_prefix``? Cheap when none exist."""
        self._lock.acquire_read()
        try:
            mirror = self._dict
            return mirror is not None and any(
                k.startswith("URL2TOKEN:" + url_prefix) for k in mirror)
        finally:
            self._lock.release()

    def has_lock_covering(self, url: str) -> bool:
        """Any lock on ``url`` (quoted) or on a folder above it?

        What a PUT that began with no lock in its share re-checks before it commits: a
        lock taken meanwhile on another file of the same user (another client of the same
        account) does not concern it, one on the target or on a folder above it does.
        """
        covering = covering_urls(url)
        self._lock.acquire_read()
        try:
            mirror = self._dict
            return mirror is not None and any(
                k.startswith("URL2TOKEN:") and (k[10:].rstrip("/") or "/") in covering
                for k in mirror)
        finally:
            self._lock.release()


def covering_urls(url: str) -> set[str]:
    """``url`` (quoted) and every folder above it, as lock keys name them."""
    parts = url.rstrip("/").split("/")
    return {"/".join(parts[:i]) or "/" for i in range(1, len(parts) + 1)}
