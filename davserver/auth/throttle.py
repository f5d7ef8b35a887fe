"""Login throttling: after N failures per user or per client address within a window,
further attempts are refused without checking the password (HTTP 429 + Retry-After).

Counting both keys stops one address guessing many users and many addresses guessing one
user. The address limit has its own setting (``throttle_max_failures_per_address``,
default: the per-user one): behind a NAT or a reverse proxy many users share an address,
and the client address is what the socket says (``X-Forwarded-For`` is not trusted, or
an attacker would name a new address with each guess) unless the socket is one of the
configured reverse proxies (:mod:`davserver.auth.forwarded`).

Failures are kept in the metadata DB, so the limit holds across the worker processes of
a node (and across nodes sharing a DB) instead of multiplying by their
number. The check before each login is one indexed query; only failures write.
"""

from __future__ import annotations

import time

from davserver.meta.db import MetaDB


class Throttle:
    def __init__(self, db: MetaDB, max_failures: int = 5, window_seconds: float = 300.0,
                 clock=time.time, *, max_failures_per_address: int | None = None) -> None:
        self.db = db
        self.max_failures = max_failures
        self.address_max = (max_failures if max_failures_per_address is None
                            else max_failures_per_address)
        self.window = window_seconds
        self._clock = clock  # wall clock: shared by processes, unlike monotonic time

    def retry_after(self, *keys: str) -> int:
        """Seconds until a new attempt is allowed for all ``keys`` (0: allowed now)."""
        return self.check(*keys)[0]

    def check(self, *keys: str) -> tuple[int, frozenset[str]]:
        """(retry_after, the keys with failures on record): a login that then succeeds
        needs to clear only those, so a clean login costs this one query."""
        keys = tuple(k for k in keys if self._limit(k) > 0)
        if not keys:
            return 0, frozenset()
        now = self._clock()
        wait = 0.0
        counts = self.db.failure_counts(keys, now - self.window)
        # failed() keeps at most the key's limit of recent rows, so the oldest of them
        # leaving the window is when the key is allowed again.
        for key, (count, oldest) in counts.items():
            if count >= self._limit(key):
                wait = max(wait, oldest + self.window - now)
        return (int(wait) + 1 if wait > 0 else 0), frozenset(counts)

    def _limit(self, key: str) -> int:
        return self.address_max if key.startswith("addr:") else self.max_failures

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for limit in {self._limit(k) for k in keys}:
            same = tuple(k for k in keys if self._limit(k) == limit)
            if limit > 0:
                self.db.add_failures(same, now, keep=limit, since=now - self.window)

    def succeeded(self, *keys: str) -> None:
        self.db.clear_failures(keys)
