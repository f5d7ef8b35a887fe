"""Login throttling counted in Redis, so the limit holds across every node of a cluster.

The same rule as :class:`davserver.auth.throttle.Throttle` with Redis counters: each
failure is an ``INCR`` of the key's counter, and the first failure starts its window
(``EXPIRE ... NX``), so the counter vanishes on its own when the window passes; while it
is at the limit, its remaining lifetime is the Retry-After. No node keeps a count of
its own, so N nodes do not multiply the allowed guesses by N.
"""

from __future__ import annotations

import hashlib
import math

from davserver.meta.shared_state import unavailable_as_503


class RedisThrottle:
    def __init__(self, client, max_failures: int = 5, window_seconds: float = 300.0,
                 prefix: str = "davserver:throttle:", *,
                 max_failures_per_address: int | None = None) -> None:
        self._r = client
        self.max_failures = max_failures
        self.address_max = (max_failures if max_failures_per_address is None
                            else max_failures_per_address)
        self.window = window_seconds
        self._prefix = prefix

    def _limit(self, key: str) -> int:
        """Per-address keys have their own limit, as in Throttle."""
        return self.address_max if key.startswith("addr:") else self.max_failures

    def _k(self, key: str) -> str:
        # Hashed: user names and addresses are client-chosen text and stay out of Redis.
        return self._prefix + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()

    def retry_after(self, *keys: str) -> int:
        return self.check(*keys)[0]

    def check(self, *keys: str) -> tuple[int, frozenset[str]]:
        """(retry_after, the keys with failures on record), like Throttle.check."""
        keys = tuple(k for k in keys if self._limit(k) > 0)
        if not keys:
            return 0, frozenset()
        with unavailable_as_503():
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._k(key))
                pipe.pttl(self._k(key))
            answers = pipe.execute()
        wait, on_record = 0, set()
        for i, key in enumerate(keys):
            count, ttl_ms = answers[2 * i], answers[2 * i + 1]
            if count is None:
                continue
            on_record.add(key)
            if int(count) >= self._limit(key):
                wait = max(wait, math.ceil(ttl_ms / 1000) if ttl_ms > 0 else 1)
        return wait, frozenset(on_record)

    def failed(self, *keys: str) -> None:
        keys = tuple(k for k in keys if self._limit(k) > 0)
        if not keys:
            return
        ms = max(1, int(self.window * 1000))
        with unavailable_as_503():
            pipe = self._r.pipeline(transaction=True)
            for key in keys:
                pipe.incr(self._k(key))
                pipe.pexpire(self._k(key), ms, nx=True)
            pipe.execute()

    def succeeded(self, *keys: str) -> None:
        with unavailable_as_503():
            self._r.delete(*[self._k(k) for k in keys])
