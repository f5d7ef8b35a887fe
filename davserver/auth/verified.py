"""Recently verified passwords, shared by the worker processes of a server.

A password check is Argon2id: about 100 ms of CPU and a 64 MiB allocation. Cached per
process, every worker paid it again at each user's first request there: with N workers,
N slow first requests per user and N transient 64 MiB peaks. The server creates this
table in shared memory before it forks its workers, so a password one worker verified is
known to all of them; a process that was not forked from the server (a replacement
worker, an admin command) has a table of its own.

An entry is an HMAC of user name and password under a random key that exists only in
the server's memory, a hash of the user name (to forget a user), a hash of the stored
password hash it was checked against (a reset elsewhere ends the entry) and an expiry.
Slots are read and written without a lock: a torn slot can only fail to match, and a
tag cannot match by accident, so the worst a race does is cost one more check.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import struct
import time

SLOTS = 1024
_SLOT = struct.Struct("32s8sd16s")  # tag, name hash, expiry (CLOCK_MONOTONIC), stamp hash
_EMPTY = bytes(_SLOT.size)


def _h(text: str | None, n: int) -> bytes:
    return hashlib.sha256(b"\x00" if text is None else b"\x01" + text.encode()).digest()[:n]


class VerifiedCache:
    def __init__(self) -> None:
        self._key = os.urandom(32)
        # Anonymous and MAP_SHARED: children forked after this share the pages.
        self._table = mmap.mmap(-1, SLOTS * _SLOT.size)

    def tag(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), "sha256").digest()

    def _offset(self, tag: bytes) -> int:
        return int.from_bytes(tag[:4], "big") % SLOTS * _SLOT.size

    def hit(self, tag: bytes, name: str, stamp: str | None) -> bool:
        off = self._offset(tag)
        t, who, expires, st = _SLOT.unpack(self._table[off:off + _SLOT.size])
        return (hmac.compare_digest(t, tag) and who == _h(name, 8)
                and st == _h(stamp, 16) and expires > time.monotonic())

    def add(self, tag: bytes, name: str, stamp: str | None, lifetime: float) -> None:
        """Remember a success; the user's other passwords are forgotten."""
        self.forget(name)
        off = self._offset(tag)
        self._table[off:off + _SLOT.size] = _SLOT.pack(
            tag, _h(name, 8), time.monotonic() + lifetime, _h(stamp, 16))

    def forget(self, name: str) -> None:
        who, size, table = _h(name, 8), _SLOT.size, self._table
        for off in range(0, SLOTS * size, size):
            if table[off + 32:off + 40] == who:
                table[off:off + size] = _EMPTY


_shared: VerifiedCache | None = None


def share_with_forked_workers() -> None:
    """Called by the server process before it forks: its workers then use one table."""
    global _shared
    _shared = VerifiedCache()


def for_this_process() -> VerifiedCache:
    return _shared if _shared is not None else VerifiedCache()
