"""Recently verified passwords, shared by the worker processes of a server.

A password check is Argon2id: about 100 ms of CPU and a 64 MiB allocation, and so is
unlocking a user's key in user-key mode. Cached per process, every worker paid it again
at each user's first request there: with N workers, N slow first requests per user and N
transient 64 MiB peaks. The server creates these tables in shared memory before it forks
its workers, so what one worker verified is known to all of them; a process that was not
forked from the server (a replacement worker, an admin command) has tables of its own.

An entry is an HMAC of user name and password under a random key that exists only in
the server's memory, a hash of the user name (to forget a user), a hash of what it was
checked against (the stored password hash, the key file: a change elsewhere ends the
entry), an expiry, and optionally a small payload that the caller sealed under
``secret(name, password)``, a second HMAC that is not stored, so only a request bearing
the password opens it. Slots are read and written without a lock: a torn slot can only
fail to match, and a tag cannot match by accident, so the worst a race does is cost one
more check.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import struct
import time

WAYS = 4  # an entry may sit in any of 4 slots of its bucket: few users evict each other
SLOTS = 4096  # x 193 bytes: 0.8 MiB per table, shared by all workers
PAYLOAD_MAX = 128
# tag, name hash, expiry (CLOCK_MONOTONIC), stamp hash, payload length, payload
_SLOT = struct.Struct(f"32s8sd16sB{PAYLOAD_MAX}s")
_EMPTY = bytes(_SLOT.size)


def _h(value: object, n: int) -> bytes:
    return hashlib.sha256(repr(value).encode()).digest()[:n]


class VerifiedCache:
    def __init__(self) -> None:
        self._key = os.urandom(32)
        # Anonymous and MAP_SHARED: children forked after this share the pages.
        self._table = mmap.mmap(-1, SLOTS * _SLOT.size)

    def tag(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"tag\0{name}\0{password}".encode(), "sha256").digest()

    def secret(self, name: str, password: str) -> bytes:
        """A key for sealing a payload: derivable only with the password, never stored."""
        return hmac.new(self._key, f"seal\0{name}\0{password}".encode(), "sha256").digest()

    def _bucket(self, tag: bytes) -> range:
        first = int.from_bytes(tag[:4], "big") % (SLOTS // WAYS) * WAYS * _SLOT.size
        return range(first, first + WAYS * _SLOT.size, _SLOT.size)

    def get(self, tag: bytes, name: str, stamp: object) -> bytes | None:
        """The entry's payload (b"" if none) if it is valid, else None."""
        for off in self._bucket(tag):
            t, who, expires, st, n, payload = _SLOT.unpack(self._table[off:off + _SLOT.size])
            if hmac.compare_digest(t, tag):
                if (who == _h(name, 8) and st == _h(stamp, 16) and expires > time.monotonic()
                        and n <= PAYLOAD_MAX):
                    return payload[:n]
                return None
        return None

    def hit(self, tag: bytes, name: str, stamp: object) -> bool:
        return self.get(tag, name, stamp) is not None

    def add(self, tag: bytes, name: str, stamp: object, lifetime: float,
            payload: bytes = b"") -> None:
        """Remember a success; the user's other passwords are forgotten."""
        if len(payload) > PAYLOAD_MAX:
            raise ValueError("payload too large for the shared table")
        self.forget(name)
        # The slot expiring first (an empty one has expiry 0) makes room.
        off = min(self._bucket(tag), key=lambda o: _SLOT.unpack_from(self._table, o)[2])
        self._table[off:off + _SLOT.size] = _SLOT.pack(
            tag, _h(name, 8), time.monotonic() + lifetime, _h(stamp, 16), len(payload), payload)

    def forget(self, name: str) -> None:
        who, size, table = _h(name, 8), _SLOT.size, self._table
        for off in range(0, SLOTS * size, size):
            if table[off + 32:off + 40] == who:
                table[off:off + size] = _EMPTY


_shared: dict[str, VerifiedCache] = {}
PASSWORDS, USER_KEYS = "passwords", "user keys"


def share_with_forked_workers() -> None:
    """Called by the server process before it forks: its workers then use one table each."""
    for purpose in (PASSWORDS, USER_KEYS):
        _shared[purpose] = VerifiedCache()


def for_this_process(purpose: str) -> VerifiedCache:
    return _shared.get(purpose) or VerifiedCache()
