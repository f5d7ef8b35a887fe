"""Large downloads on two threads: reading and decrypting on one, sending on the other.

Serving a large file in one thread is bound by one core: each block is read, decrypted
and sent in turn. ``os.pread``, the socket calls and, since cryptography 50, AES-GCM all
release the GIL while they work, so a helper thread that reads and decrypts ahead runs on
the other core while the request's thread sends (1 GiB GET here: 1.9 -> 2.2-2.3 GB/s,
plain WsgiDAV 2.2 GB/s).

Uploads do not gain from the same split: receiving, encrypting, writing to the page cache
and the kernel's writeback already keep both cores busy (measured: more CPU, no faster).

It only pays when a core would otherwise idle. Measured here against one thread: a 1 MiB
file is sent at half the speed (the thread start and the hand-offs cost more than the
transfer), and with 8 parallel downloads the helpers only compete with the other
requests for the GIL. So a process runs one helper at a time, for files of at least
READ_AHEAD_MIN bytes; every other download is read in the request's thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator

#: Blocks held between the two threads: memory per download is at most DEPTH + 1 blocks.
DEPTH = 2

#: Smallest file read ahead.
READ_AHEAD_MIN = 16 << 20

#: Read-ahead helpers one process may run at once.
_helpers = threading.BoundedSemaphore(1)


def _fresh_after_fork() -> None:
    # A worker forked to replace a dead one must not inherit a slot held by a download
    # of its parent's that it will never see end.
    global _helpers
    _helpers = threading.BoundedSemaphore(1)


os.register_at_fork(after_in_child=_fresh_after_fork)


def response_body(f, block_size: int, size: int):
    """The WSGI iterable for sending ``size`` bytes of ``f``, which it closes."""
    if size >= READ_AHEAD_MIN and _helpers.acquire(blocking=False):
        return ReadAhead(f, block_size, on_close=_helpers.release)
    return Blocks(f, block_size)


class Blocks:
    """Blocks read in the request's thread, and the file closed after."""

    def __init__(self, f, block_size: int) -> None:
        self._f = f
        self._bs = block_size

    def __iter__(self) -> Iterator[bytes]:
        read, bs = self._f.read, self._bs
        while True:
            block = read(bs)
            if not block:
                return
            yield block

    def close(self) -> None:
        self._f.close()


class ReadAhead:
    """WSGI response iterable over ``f.read(block_size)``; only the helper reads ``f``.

    ``close()`` (called by the server, also after the client went away) stops the helper,
    waits for it, then closes ``f``. An error while reading (a tampered chunk) is raised in
    the sending thread at the block where it happened, as if there were one thread.
    """

    def __init__(self, f, block_size: int, depth: int = DEPTH,
                 on_close: Callable[[], object] | None = None) -> None:
        self._f = f
        self._bs = block_size
        self._on_close = on_close
        self._q: queue.Queue = queue.Queue(depth)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def _fill(self) -> None:
        read, bs, put = self._f.read, self._bs, self._q.put
        try:
            while not self._stopping:
                block = read(bs)
                put(block)
                if not block:
                    return
        except BaseException as e:  # noqa: BLE001 - raised again in the sending thread
            put(e)

    def __iter__(self) -> Iterator[bytes]:
        if self._thread is not None:
            raise RuntimeError("a response body is iterated once")
        self._thread = threading.Thread(target=self._fill, name="read-ahead", daemon=True)
        self._thread.start()
        get = self._q.get
        while True:
            item = get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item

    def close(self) -> None:
        self._stopping = True
        if self._thread is not None:
            while self._thread.is_alive():  # make room so a blocked put returns
                try:
                    self._q.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()
        try:
            self._f.close()
        finally:
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close()

