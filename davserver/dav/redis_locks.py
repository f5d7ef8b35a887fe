"""WebDAV lock storage in Redis, shared by every node of a cluster (``redis.url``).

WsgiDAV's dict-based storage is reused as is (as :mod:`davserver.dav.locks` does for one
node); its dictionary becomes a view of Redis keys and its reader/writer lock a Redis
mutex, so "check for conflicts, then grant" holds across nodes.

- Each lock token is one key (JSON, never pickle: whoever can write to Redis must not be
  able to run code here) that Redis expires when the WebDAV lock times out, so a crashed
  node leaves no lock behind for longer than its client asked for. A refresh moves the
  expiry.
- Each ``URL2TOKEN:<path>`` list is one key expiring with the latest of its tokens, and a
  set indexes them for the "any lock below this folder?" questions.
- Readers take no mutex: every read is one atomic command and a reader racing a grant
  sees the lock table before or after it, as it would have a moment earlier or later.
  Writers (grant, refresh, release) hold the mutex, which itself expires, so a node that
  dies holding it blocks the others for at most :data:`MUTEX_SECONDS`.

Every Redis call fails as :class:`~davserver.meta.shared_state.SharedStateUnavailable`
(HTTP 503 + Retry-After) when Redis does not answer.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Iterator, MutableMapping

from wsgidav.lock_man.lock_storage import LockStorageDict

from davserver.dav.locks import covering_urls
from davserver.meta.shared_state import RELEASE_IF_OWNER, SharedStateUnavailable, unavailable_as_503

URL_PREFIX = "URL2TOKEN:"
MUTEX_SECONDS = 30
MUTEX_WAIT_SECONDS = 30



class RedisMutex:
    """WsgiDAV's ``ReadWriteLock`` interface: re-entrant per thread; read is free (see the
    module docstring), write takes one cluster-wide Redis key until the outermost
    release."""

    def __init__(self, client, key: str) -> None:
        self._client = client
        self._key = key
        self._release = client.register_script(RELEASE_IF_OWNER)
        self._local = threading.local()

    def _state(self):
        st = self._local
        if getattr(st, "pid", None) != os.getpid():
            st.pid, st.depth, st.token = os.getpid(), 0, None
        return st

    def acquire_read(self, *, timeout=None) -> None:
        self._state().depth += 1

    def acquire_write(self, *, timeout=None) -> None:
        st = self._state()
        if st.token is None:
            token = secrets.token_hex(16)
            deadline = time.monotonic() + MUTEX_WAIT_SECONDS
            with unavailable_as_503():
                while not self._client.set(self._key, token, nx=True, ex=MUTEX_SECONDS):
                    if time.monotonic() > deadline:
                        raise SharedStateUnavailable("WebDAV lock table busy")
                    time.sleep(0.002)
            st.token = token
        st.depth += 1

    def release(self) -> None:
        st = self._state()
        if not st.depth:
            raise ValueError("release of a lock this thread does not hold")
        st.depth -= 1
        if st.depth or st.token is None:
            return
        token, st.token = st.token, None
        with unavailable_as_503():
            self._release(keys=[self._key], args=[token])

    def mark_changed(self) -> int:
        return 0


def _dumps(value) -> str:
    """JSON, with the bytes WsgiDAV keeps in a lock (its owner XML) as base64."""

    def enc(o):
        if isinstance(o, bytes):
            return {"$b64": base64.b64encode(o).decode()}
        raise TypeError(f"cannot store {type(o).__name__} in a lock")

    return json.dumps(value, default=enc)


def _loads(raw):
    def dec(d: dict):
        return base64.b64decode(d["$b64"]) if d.keys() == {"$b64"} else d

    return json.loads(raw, object_hook=dec)


def _expire_ms(lock: dict) -> int | None:
    """Expiry of a lock as Unix milliseconds (None: never, WsgiDAV's infinite lock)."""
    expire = float(lock.get("expire", -1))
    return None if expire < 0 else math.ceil(expire * 1000)


class _RedisMapping(MutableMapping):
    def __init__(self, client, prefix: str) -> None:
        self._r = client
        self._prefix = prefix
        self._index = prefix + "index"

    def _k(self, key: str) -> str:
        return self._prefix + "k:" + key

    def __getitem__(self, key: str):
        with unavailable_as_503():
            raw = self._r.get(self._k(key))
        if raw is None:
            raise KeyError(key)
        return _loads(raw)

    def __setitem__(self, key: str, value) -> None:
        raw = _dumps(value)
        with unavailable_as_503():
            if key.startswith(URL_PREFIX):
                self._set_url(key, raw, value)
            else:
                self._set_token(key, raw, value)

    def _set_token(self, key: str, raw: str, lock: dict) -> None:
        at = _expire_ms(lock)
        url_key = self._k(URL_PREFIX + str(lock.get("root", "")))
        pipe = self._r.pipeline(transaction=True)
        if at is None:
            pipe.set(self._k(key), raw)
            pipe.persist(url_key)
        else:
            pipe.set(self._k(key), raw, pxat=at)
            pipe.pexpireat(url_key, at, gt=True)  # a refresh extends the path's entry too
        pipe.execute()

    def _set_url(self, key: str, raw: str, tokens: list) -> None:
        found = [_loads(r) for r in self._r.mget([self._k(t) for t in tokens])
                 if r is not None]
        ats = [_expire_ms(lock) for lock in found]
        pipe = self._r.pipeline(transaction=True)
        if not ats or None in ats:
            pipe.set(self._k(key), raw)
        else:
            pipe.set(self._k(key), raw, pxat=max(ats))
        pipe.sadd(self._index, key)
        pipe.execute()

    def __delitem__(self, key: str) -> None:
        with unavailable_as_503():
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._k(key))
            pipe.srem(self._index, key)
            deleted, _ = pipe.execute()
        if not deleted:
            raise KeyError(key)

    def __contains__(self, key) -> bool:
        with unavailable_as_503():
            return bool(self._r.exists(self._k(key)))

    def items(self) -> list[tuple[str, list]]:
        """The live ``URL2TOKEN`` entries (all WsgiDAV iterates for); index members whose
        key expired are dropped from the index on the way."""
        with unavailable_as_503():
            names = sorted(n.decode() for n in self._r.smembers(self._index))
            if not names:
                return []
            values = self._r.mget([self._k(n) for n in names])
            gone = [n for n, v in zip(names, values, strict=True) if v is None]
            if gone:
                self._r.srem(self._index, *gone)
        return [(n, _loads(v)) for n, v in zip(names, values, strict=True)
                if v is not None]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _v in self.items()])

    def __len__(self) -> int:
        return len(self.items())

    def clear(self) -> None:
        with unavailable_as_503():
            keys = list(self._r.scan_iter(match=self._prefix + "k:*", count=500))
            if keys:
                self._r.delete(*keys)
            self._r.delete(self._index)


class RedisLockStorage(LockStorageDict):
    def __init__(self, client, prefix: str = "davserver:davlocks:") -> None:
        super().__init__()
        self._client = client
        self._prefix = prefix
        self._lock = RedisMutex(client, prefix + "mutex")

    def __repr__(self) -> str:
        return "RedisLockStorage"

    @property
    def shared_lock(self) -> RedisMutex:
        """Also given to WsgiDAV's lock manager, so check-then-grant holds across nodes."""
        return self._lock

    def open(self) -> None:
        self._dict = _RedisMapping(self._client, self._prefix)

    def close(self) -> None:
        self._dict = None

    def has_lock_under(self, url_prefix: str) -> bool:
        """Any lock whose (quoted) URL starts with ``url_prefix``? One command when none
        exist anywhere."""
        mapping = self._dict
        if mapping is None:
            return False
        with unavailable_as_503():
            names = self._client.smembers(mapping._index)
        wanted = (URL_PREFIX + url_prefix).encode()
        if not any(n.startswith(wanted) for n in names):
            return False
        return any(k.startswith(URL_PREFIX + url_prefix) for k in mapping)

    def has_lock_covering(self, url: str) -> bool:
        """Any lock on ``url`` (quoted) or on a folder above it (see DbLockStorage)."""
        mapping = self._dict
        if mapping is None:
            return False
        covering = covering_urls(url)
        with unavailable_as_503():
            names = self._client.smembers(mapping._index)
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else raw
            if name.startswith(URL_PREFIX) and \
                    (name[len(URL_PREFIX):].rstrip("/") or "/") in covering and name in mapping:
                return True
        return False
