"""Persistent WebDAV lock storage in the metadata DB (survives restarts).

WsgiDAV's dict-based storage is reused as is; only its dictionary is swapped for a
mapping whose values live in the DB (pickled, as WsgiDAV's own shelve storage does).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, MutableMapping

from wsgidav.lock_man.lock_storage import LockStorageDict

from davserver.meta.db import MetaDB


class _DbMapping(MutableMapping):
    def __init__(self, db: MetaDB) -> None:
        self._db = db

    def __getitem__(self, key: str):
        raw = self._db.kv_get(key)
        if raw is None:
            raise KeyError(key)
        return pickle.loads(raw)  # noqa: S301 - our own DB, written by us only

    def __setitem__(self, key: str, value) -> None:
        self._db.kv_set(key, pickle.dumps(value))

    def __delitem__(self, key: str) -> None:
        if self._db.kv_get(key) is None:
            raise KeyError(key)
        self._db.kv_delete(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._db.kv_keys())

    def __len__(self) -> int:
        return len(self._db.kv_keys())

    def clear(self) -> None:
        self._db.kv_clear()


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
