"""Spread connections over the worker processes by how many each one holds.

With one ``SO_REUSEPORT`` socket per worker the kernel picks the worker of a new connection
by a hash of its addresses. Sync clients keep a few connections open for hours, so with
four of them on two workers half the runs put three or four on one process, which then
serves them with one core while the other idles: 4-client small-file GETs measured 2,500
ops/s on a 3-1 split and 3,500 on 2-2.

So the workers share one listening socket instead, and each counts the connections it
holds in a small shared table (:class:`LoadTable`). Every worker is woken for a new
connection; one that holds more than another live worker (or as many, but has accepted
more in all) leaves it for up to :data:`ACCEPT_WAIT` seconds, and takes it itself only if
nobody did: a hung worker delays new connections by that much, and never refuses them.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import time

from cheroot import connections

#: How long a worker that holds more connections than another leaves a new one to it.
#: DAVSERVER_ACCEPT_WAIT overrides it (tests make it long, to be independent of timing).
ACCEPT_WAIT = float(os.environ.get("DAVSERVER_ACCEPT_WAIT", "0.005"))
_POLL = 0.0002
_ABSENT = -1


class LoadTable:
    """Per worker slot: connections held now and accepted in all, in shared memory.

    The memory is a memfd, so a replacement worker started with exec (not fork) maps the
    same table from the descriptor it inherits. Only a slot's own worker writes its
    slot (and the first process, when the worker is gone); others only read it.
    """

    def __init__(self, slots: int = 0, fd: int | None = None) -> None:
        """A new table of ``slots``, or the one behind an inherited ``fd``."""
        fresh = fd is None
        if fresh:
            fd = os.memfd_create("davserver-load", os.MFD_CLOEXEC)
            os.ftruncate(fd, 16 * slots)
        else:
            slots = os.fstat(fd).st_size // 16
        self.fd = fd
        self.slots = slots
        self._mm = mmap.mmap(fd, 16 * slots)
        self._held = (ctypes.c_int64 * slots).from_buffer(self._mm)
        self._accepted = (ctypes.c_int64 * slots).from_buffer(self._mm, 8 * slots)
        if fresh:
            for i in range(slots):
                self._held[i] = _ABSENT
        self._lock = threading.Lock()
        self.slot = 0

    def take(self, slot: int) -> None:
        """Make ``slot`` this process's; it counts once :meth:`serving` is called."""
        self.slot = slot

    def serving(self) -> None:
        """This worker accepts connections from now on, holding none yet."""
        self._accepted[self.slot] = 0
        self._held[self.slot] = 0

    def release(self, slot: int) -> None:
        """The worker of ``slot`` is gone: leave it out until a replacement takes it."""
        self._held[slot] = _ABSENT

    def opened(self) -> None:
        with self._lock:
            self._held[self.slot] += 1
            self._accepted[self.slot] += 1

    def closed(self) -> None:
        with self._lock:
            self._held[self.slot] -= 1

    def another_is_less_loaded(self) -> bool:
        me = (self._held[self.slot], self._accepted[self.slot])
        return any(0 <= self._held[i] and (self._held[i], self._accepted[i]) < me
                   for i in range(self.slots) if i != self.slot)


#: This process's table, when it is one of several workers (set by serve).
table: LoadTable | None = None


class BalancedConnections(connections.ConnectionManager):
    """cheroot's connection manager that leaves a new connection to a less loaded
    worker for a moment (see the module docstring)."""

    _waiting_since = 0.0
    _last_look = 0.0

    def _from_server_socket(self, server_socket):
        t = table
        if t is not None and ACCEPT_WAIT > 0 and t.another_is_less_loaded():
            now = time.monotonic()
            if now - self._last_look > 10 * _POLL:
                self._waiting_since = now  # not called just now: a new arrival
            self._last_look = now
            if now - self._waiting_since < ACCEPT_WAIT:
                time.sleep(_POLL)  # the selector reports the socket again if still pending
                return None
        return super()._from_server_socket(server_socket)


def counted_open(conn) -> None:
    """Called by each new connection of this worker."""
    if table is not None:
        conn._balance_counted = True
        table.opened()


def counted_close(conn) -> None:
    """Called when a connection closes (cheroot may close one more than once)."""
    if getattr(conn, "_balance_counted", False):
        conn._balance_counted = False
        if table is not None:
            table.closed()
