"""Whose keys the current request (or command) may use, in user-key mode.

A context variable rather than an argument threaded through WsgiDAV's callbacks: each
worker thread serves one request at a time, the auth layer sets it first thing, and the
Guard clears it at the start of every request so nothing carries over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from davserver.vault.keystore import Identity

_current: ContextVar[tuple[Identity, ...]] = ContextVar("davserver_identities", default=())


def current() -> tuple[Identity, ...]:
    return _current.get()


def set_current(identities: tuple[Identity, ...]) -> None:
    _current.set(identities)


@contextlib.contextmanager
def acting_as(*identities: Identity) -> Iterator[None]:
    token = _current.set(tuple(identities))
    try:
        yield
    finally:
        _current.reset(token)
