"""Persistent WebDAV lock storage in the metadata DB (survives restarts).

WsgiDAV's dict-based storage is reused as is; only its dictionary is swapped for a
mapping whose values live in the DB (pickled, as WsgiDAV's own shelve storage does).
WsgiDAV consults the lock table several times per write request, so reads are served
from an in-memory mirror that this process writes through: the server process is the
only writer of locks on a single node (a cluster uses a shared lock store instead).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping

from wsgidav.lock_man.lock_storage import LockStorageDict

from davserver.meta.db import MetaDB


class _DbMapping(MutableMapping):
    def __init__(self, db: MetaDB) -> None:
        self._db = db
        self._mirror: dict[str, bytes] = {k: db.kv_get(k) for k in db.kv_keys()}

    def __getitem__(self, key: str):
        raw = self._mirror.get(key)
        if raw is None:
            raise KeyError(key)
        return pickle.loads(raw)  # noqa: S301 - our own DB, written by us only

    def __setitem__(self, key: str, value) -> None:
        raw = pickle.dumps(value)
        self._db.kv_set(key, raw)
        self._mirror[key] = raw

    def __delitem__(self, key: str) -> None:
        if key not in self._mirror:
            raise KeyError(key)
        self._db.kv_delete(key)
        del self._mirror[key]

    def __contains__(self, key) -> bool:
        return key in self._mirror

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._mirror))

    def __len__(self) -> int:
        return len(self._mirror)

    def clear(self) -> None:
        self._db.kv_clear()
        self._mirror.clear()


class DbLockStorage(LockStorageDict):
    def __init__(self, db: MetaDB) -> None:
        super().__init__()
        self._db = db

    def __repr__(self) -> str:
        return "DbLockStorage"

    def open(self) -> None:
        self._dict = _DbMapping(self._db)

    def close(self) -> None:
        self._dict = None

    def has_lock_under(self, url_prefix: str) -> bool:
        """Any lock whose (quoted) URL starts with ``url_prefix``? Cheap when none exist."""
        mirror = self._dict
        return mirror is not None and any(
            k.startswith("URL2TOKEN:" + url_prefix) for k in mirror)
