"""Positional reads over a remote blob with a window that grows while reads are sequential.

Remote stores charge a round trip per request: a header sniff should cost one small
request, a download a few large ones. The window starts small, doubles on every read that
continues where the last one ended, and starts small again after a jump (a Range request).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

FIRST_WINDOW = 64 << 10
MAX_WINDOW = 8 << 20


class Window:
    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        self.size = size
        self._fetch = fetch
        self._buf = b""
        self._at = 0
        self._window = FIRST_WINDOW
        self._next = -1
        self._lock = threading.Lock()

    def read_at(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size or offset < 0:
            return b""
        length = min(length, self.size - offset)
        with self._lock:
            rel = offset - self._at
            if 0 <= rel and rel + length <= len(self._buf):
                out = self._buf[rel:rel + length]
            else:
                if offset == self._next:
                    self._window = min(self._window * 2, MAX_WINDOW)
                else:
                    self._window = FIRST_WINDOW
                want = min(max(length, self._window), self.size - offset)
                self._buf = self._fetch(offset, want)
                self._at = offset
                out = self._buf[:length]
            self._next = offset + len(out)
            return out

    def drop(self) -> None:
        self._buf = b""
