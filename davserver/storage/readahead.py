"""Positional reads over a remote blob: one streaming GET for a sequential pass, small
ranged GETs for jumps.

Remote stores charge a round trip per request, and some (moto, small gateways) read the
whole object for every ranged GET. So a read that continues where the last one ended is
served from one open-ended GET (``Range: bytes=N-``) read as the caller goes, and any other
read (a header sniff, a client's Range request) fetches just a small window around it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

#: Bytes fetched for a read that does not continue the previous one.
JUMP_WINDOW = 64 << 10


class Stream(Protocol):
    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class Window:
    def __init__(self, size: int, fetch: Callable[[int, int], bytes],
                 open_stream: Callable[[int], Stream]) -> None:
        self.size = size
        self._fetch = fetch
        self._open_stream = open_stream
        self._buf = b""
        self._at = 0
        self._next = -1
        self._stream: Stream | None = None
        self._stream_at = -1
        self._lock = threading.Lock()

    def read_at(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size or offset < 0:
            return b""
        length = min(length, self.size - offset)
        with self._lock:
            rel = offset - self._at
            if 0 <= rel and rel + length <= len(self._buf):
                out = self._buf[rel:rel + length]
            elif offset == self._next or (self._stream is not None
                                          and offset == self._stream_at):
                out = self._from_stream(offset, length)
            else:
                self._drop_stream()
                self._buf = self._fetch(offset, min(max(length, JUMP_WINDOW),
                                                    self.size - offset))
                self._at = offset
                out = self._buf[:length]
            self._next = offset + len(out)
            return out

    def _from_stream(self, offset: int, length: int) -> bytes:
        # Whatever of the window is still buffered is served first.
        head = b""
        rel = offset - self._at
        if 0 <= rel < len(self._buf):
            head = self._buf[rel:]
            offset += len(head)
            length -= len(head)
        self._buf = b""
        if self._stream is None or self._stream_at != offset:
            self._drop_stream()
            self._stream = self._open_stream(offset)
            self._stream_at = offset
        parts = [head]
        while length > 0:
            block = self._stream.read(length)
            if not block:
                break
            parts.append(block)
            length -= len(block)
            self._stream_at += len(block)
        return b"".join(parts)

    def _drop_stream(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - a half-read body is thrown away
                pass

    def drop(self) -> None:
        self._buf = b""
        self._drop_stream()


class Guarded:
    """A response body whose read failures (timeouts, resets) are StorageUnavailable."""

    def __init__(self, body, what: str, on_close: Callable[[], object] | None = None) -> None:
        self._body = body
        self._what = what
        self._on_close = on_close

    def read(self, n: int) -> bytes:
        from davserver.errors import StorageUnavailable

        try:
            return self._body.read(n)
        except Exception as e:  # noqa: BLE001 - any transport failure mid-body
            raise StorageUnavailable(f"reading {self._what}: {type(e).__name__}") from None

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            if self._on_close is not None:
                self._on_close()
