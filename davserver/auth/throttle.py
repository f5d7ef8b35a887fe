"""Login throttling: after N failures per user or per client address within a window,
further attempts are refused without checking the password (HTTP 429 + Retry-After).

Counting both keys stops one address guessing many users and many addresses guessing one
user. Failures are kept in the metadata DB, so the limit holds across the worker
processes of a node (and across nodes sharing a DB) instead of multiplying by their
number. The check before each login is one indexed query; only failures write.
"""

from __future__ import annotations

import time

from davserver.meta.db import MetaDB


class Throttle:
    def __init__(self, db: MetaDB, max_failures: int = 5, window_seconds: float = 300.0,
                 clock=time.time) -> None:
        self.db = db
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock  # wall clock: shared by processes, unlike monotonic time

    def retry_after(self, *keys: str) -> int:
        """Seconds until a new attempt is allowed for all ``keys`` (0: allowed now)."""
        return self.check(*keys)[0]

    def check(self, *keys: str) -> tuple[int, frozenset[str]]:
        """(retry_after, the keys with failures on record): a login that then succeeds
        needs to clear only those, so a clean login costs this one query."""
        if self.max_failures <= 0:
            return 0, frozenset()
        now = self._clock()
        wait = 0.0
        counts = self.db.failure_counts(keys, now - self.window)
        # failed() keeps at most max_failures recent rows per key, so the oldest of them
        # leaving the window is when the key is allowed again.
        for count, oldest in counts.values():
            if count >= self.max_failures:
                wait = max(wait, oldest + self.window - now)
        return (int(wait) + 1 if wait > 0 else 0), frozenset(counts)

    def failed(self, *keys: str) -> None:
        if self.max_failures > 0:
            self.db.add_failures(keys, self._clock(), keep=self.max_failures,
                                 since=self._clock() - self.window)

    def succeeded(self, *keys: str) -> None:
        self.db.clear_failures(keys)
