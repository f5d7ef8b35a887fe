"""Commit locks that hold across the nodes of a cluster (``redis.url`` set).

A commit (vault.files) reads a path's index row, writes the new version and replaces the
row; two commits to one path must not interleave, or the second would index its version
over the first without retiring the first's key and object (an orphan that
``encryption:scan`` reports). On one node ``PathLocks`` (flock on a file in the data
directory) orders them. Nodes of a cluster share no file system, so each commit also holds
the path's key in Redis: ``SET NX PX`` with a lease, released by compare-and-delete so a
commit never frees a lease that expired and was taken by another node.

The node-local lock is taken first, so the threads and workers of one node queue in the
kernel and only one of them at a time polls Redis for a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator

from davserver.errors import DavServerError
from davserver.meta.interprocess import PathLocks
from davserver.meta.shared_state import RELEASE_IF_OWNER, redis_client, unavailable_as_503

log = logging.getLogger("davserver")

KEY_PREFIX = "davserver:commit:"
#: A commit holds its path for milliseconds (the data is written before); the lease only
#: bounds how long a node that died while holding one blocks that path.
LEASE_MS = 120_000
#: How long a commit waits for another node's commit of the same path.
WAIT_SECONDS = 60.0



class PathBusy(DavServerError):
    """{detail}"""

    HTTP_STATUS = 503
    EXIT_CODE = 9


class ClusterPathLocks:
    """``PathLocks``' interface: this node's lock, then the path's lease in Redis."""

    def __init__(self, local: PathLocks, redis_url: str) -> None:
        self.local = local
        self.redis_url = redis_url

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self.local.hold(key):
            r = redis_client(self.redis_url)
            name = KEY_PREFIX + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
            token = secrets.token_hex(16)
            deadline = time.monotonic() + WAIT_SECONDS
            delay = 0.001
            with unavailable_as_503():
                while not r.set(name, token, nx=True, px=LEASE_MS):
                    if time.monotonic() > deadline:
                        raise PathBusy("another node has been writing this file for over "
                                       f"{WAIT_SECONDS:.0f} s; try again shortly")
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                try:
                    with unavailable_as_503():
                        r.eval(RELEASE_IF_OWNER, 1, name, token)
                except DavServerError as e:
                    # The commit itself is done (or failed on its own): the lease expires.
                    log.warning("commit lock not released in Redis (expires by itself): %s", e)


def commit_locks(lock_file: str, redis_url: str) -> PathLocks | ClusterPathLocks:
    """The commit locks for a data directory: node-local, or cluster-wide with Redis."""
    local = PathLocks(lock_file)
    return ClusterPathLocks(local, redis_url) if redis_url else local
