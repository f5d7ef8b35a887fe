"""WebDAV locks under /remote.php/webdav/ seen only by the user who took them.

WsgiDAV keys locks by URL. Under /remote.php/dav/files/USER/ a URL names one user's file,
but /remote.php/webdav/PATH names a different file for each user (the caller's home): a
lock alice took on her /remote.php/webdav/notes.txt would otherwise refuse bob's PUT of
his own notes.txt (423) and show him her lock in lockdiscovery. The lock manager therefore
reads the lock table through this view, which hides such locks from everyone but the
lock's principal. A lock that concerns another user's write because the file is shared
is found by dav.share_guard, which knows which URLs reach the same node and looks
through :func:`unscoped`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import quote

_ROOT = quote("/remote.php/webdav")
_state = threading.local()


def set_user(user: str | None) -> None:
    """The principal of the request this thread serves (set for every request)."""
    _state.user = user


@contextlib.contextmanager
def unscoped() -> Iterator[None]:
    """Every lock visible, whoever took it (the cross-user check of shared nodes)."""
    before = getattr(_state, "user", None)
    _state.user = None
    try:
        yield
    finally:
        _state.user = before


def _hidden(lock: dict, user: str) -> bool:
    root = lock.get("root") or ""
    return (root == _ROOT or root.startswith(_ROOT + "/")) and lock.get("principal") != user


class PerUserLockView:
    """The lock storage as the current request's principal sees it; everything but
    ``get_lock_list`` and ``get`` goes to the storage unchanged."""

    def __init__(self, storage) -> None:
        self._storage = storage

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def __repr__(self) -> str:
        return f"PerUserLockView({self._storage!r})"

    def get(self, token):
        lock = self._storage.get(token)
        user = getattr(_state, "user", None)
        if lock is not None and user and _hidden(lock, user):
            return None
        return lock

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        user = getattr(_state, "user", None)
        if not user:
            return self._storage.get_lock_list(path, include_root=include_root,
                                               include_children=include_children,
                                               token_only=token_only)
        locks = [lock for lock in self._storage.get_lock_list(
            path, include_root=include_root, include_children=include_children,
            token_only=False) if not _hidden(lock, user)]
        return [lock["token"] for lock in locks] if token_only else locks
