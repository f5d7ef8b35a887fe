"""Login throttling: after N failures per user or per client address within a window,
further attempts are refused without checking the password (HTTP 429 + Retry-After).

Counting both keys stops one address guessing many users and many addresses guessing one
user. In memory per node: a cluster multiplies the allowance by its node count, which we
accept rather than put a network round trip in front of every login.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class Throttle:
    def __init__(self, max_failures: int = 5, window_seconds: float = 300.0,
                 clock=time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def retry_after(self, *keys: str) -> int:
        """Seconds until a new attempt is allowed for all ``keys`` (0: allowed now)."""
        if self.max_failures <= 0:
            return 0
        now = self._clock()
        wait = 0.0
        with self._lock:
            for k in keys:
                q = self._recent(k, now)
                if len(q) >= self.max_failures:
                    wait = max(wait, q[0] + self.window - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            for k in keys:
                self._failures.setdefault(k, deque()).append(now)
                q = self._failures[k]
                while len(q) > self.max_failures:
                    q.popleft()

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)
