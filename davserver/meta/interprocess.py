"""Locks shared by the worker processes of one node (and by their threads).

``davserver serve`` runs several worker processes on one port (``[server] workers``), so
what used to be guarded by a ``threading.Lock`` must also hold across processes:

- :class:`PathLocks`: one writer at a time per path for the commit protocol. An in-process
  lock per path (dropped when nobody holds it, so memory does not grow with the number of
  paths ever written) plus a POSIX record lock on one byte of a shared file, at an offset
  hashed from the path, for the other processes.
- :class:`ChangeCounter`: a number in a file that writers increment; every process of the
  node notices a change (settings switched by an admin command) with one ``pread``.
- :class:`SharedRWLock`: a re-entrant reader/writer lock (``flock`` on a file) with a change
  counter kept in the same file. WebDAV lock storage uses it both as the lock that makes
  "check for conflicts, then grant" atomic and to learn when another process changed the
  lock table, so its in-memory mirror is re-read only then.

Both live in ``<data dir>/run/``. A cluster of nodes needs a shared lock service instead
(the design's Redis locks); these cover the processes that share one data directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator

_OFFSET_MASK = (1 << 62) - 1


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _read_counter(fd: int) -> int:
    raw = os.pread(fd, 8, 0)
    return int.from_bytes(raw, "big") if len(raw) == 8 else 0


def _write_counter(fd: int, value: int) -> None:
    os.pwrite(fd, value.to_bytes(8, "big"), 0)


class _ProcessFile:
    """One descriptor of a file per process, opened again after fork.

    Record locks belong to a process and vanish when any descriptor of the file is
    closed, so a process keeps its descriptor open rather than opening one per use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = _open(self.path), os.getpid()
        return self._fd


class ChangeCounter(_ProcessFile):
    """A counter other processes bump; read through a mapping of the file, because it is
    read several times per request (settings) and a read is then a memory load."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._map: mmap.mmap | None = None
        self._map_pid = 0

    def value(self) -> int:
        m = self._map
        if m is None or self._map_pid != os.getpid():
            fd = self._file()
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)  # zeros = 0; never shortens a counter already there
            m = self._map = mmap.mmap(fd, 8, access=mmap.ACCESS_READ)
            self._map_pid = os.getpid()
        return int.from_bytes(m[:8], "big")

    def bump(self) -> None:
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            _write_counter(fd, _read_counter(fd) + 1)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_byte(fd: int, offset: int) -> None:
    """Take the record lock on one byte, waiting for it.

    The kernel's deadlock detection for record locks counts processes, not threads: with
    thread 1 of worker A holding byte X and waiting for Y, held by worker B, whose other
    thread waits for X, it sees a cycle and fails one request with EDEADLK (found by
    bench/soak.py as 500s on concurrent uploads). No thread ever holds two path locks, so
    no real deadlock exists: wait a moment and ask again.
    """
    delay = 0.001
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
            return
        except OSError as e:
            if e.errno != errno.EDEADLK:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class PathLocks(_ProcessFile):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._held: dict[str, list] = {}  # path -> [threading.Lock, users]
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._held.get(key)
            if entry is None:
                entry = self._held[key] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                fd = self._file()
                offset = int.from_bytes(
                    hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") & _OFFSET_MASK
                _lock_byte(fd, offset)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._held[key]


class SharedRWLock:
    """WsgiDAV's ``ReadWriteLock`` interface, shared between processes.

    Every thread opens the lock file once (``flock`` locks belong to an open file, so two
    threads exclude each other as two processes do). Nested acquisitions by the holder
    only count; asking for write while holding read converts the lock. ``on_acquire``
    runs when the outermost acquisition succeeds, with the counter's value; a writer's
    outermost release increments the counter if :meth:`mark_changed` was called.
    """

    def __init__(self, path: str, on_acquire: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.on_acquire = on_acquire
        self._local = threading.local()

    def _state(self):
        st = self._local
        if getattr(st, "pid", None) != os.getpid():
            st.fd, st.pid = _open(self.path), os.getpid()
            st.depth, st.mode, st.changed = 0, 0, False
        return st

    def acquire_read(self, *, timeout=None) -> None:
        self._acquire(fcntl.LOCK_SH)

    def acquire_write(self, *, timeout=None) -> None:
        self._acquire(fcntl.LOCK_EX)

    def _acquire(self, mode: int) -> None:
        st = self._state()
        if st.depth and (st.mode == fcntl.LOCK_EX or mode == fcntl.LOCK_SH):
            st.depth += 1
            return
        fcntl.flock(st.fd, mode)  # first acquisition, or read converted to write
        st.mode = mode
        st.depth += 1
        if self.on_acquire is not None:
            try:
                self.on_acquire(_read_counter(st.fd))
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        st = self._state()
        if not st.depth:
            raise ValueError("release of a lock this thread does not hold")
        st.depth -= 1
        if st.depth:
            return
        try:
            if st.changed:
                st.changed = False
                _write_counter(st.fd, _read_counter(st.fd) + 1)
        finally:
            st.mode = 0
            fcntl.flock(st.fd, fcntl.LOCK_UN)

    def mark_changed(self) -> int:
        """Called by a writer holding the lock; returns the counter value after release."""
        st = self._state()
        st.changed = True
        return _read_counter(st.fd) + 1
