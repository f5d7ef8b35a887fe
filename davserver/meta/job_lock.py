"""Long admin jobs (encrypt-all, decrypt-all) run once at a time across the cluster.

With ``redis.url`` set, a job holds a Redis key (``SET NX`` with an expiry) naming the node
and process that runs it, and a thread renews the expiry while the job lives; a second
start on any node is refused with that name. If the node dies, the key expires within
:data:`LEASE_SECONDS` and the job can be started again anywhere: the jobs are resumable
(each file's state is its own checkpoint, see :mod:`davserver.vault.convert`).

Without Redis the jobs run as before on one node (they hold maintenance mode meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator

from davserver.errors import DavServerError
from davserver.meta.shared_state import RELEASE_IF_OWNER, redis_client, unavailable_as_503

LEASE_SECONDS = 60
RENEW_EVERY = LEASE_SECONDS / 3
KEY_PREFIX = "davserver:job:"

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class JobRunning(DavServerError):
    """{detail}"""

    HTTP_STATUS = 409
    EXIT_CODE = 2  # refused: the message says what to do


@contextlib.contextmanager
def cluster_job(redis_url: str, name: str) -> Iterator[None]:
    """Hold the cluster-wide lock for job ``name`` while the block runs."""
    if not redis_url:
        yield
        return
    r = redis_client(redis_url)
    key = KEY_PREFIX + name
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
    with unavailable_as_503():
        if not r.set(key, holder, nx=True, ex=LEASE_SECONDS):
            other = (r.get(key) or b"?").decode(errors="replace").rsplit(":", 1)[0]
            raise JobRunning(f"{name} is already running (host:pid {other}); wait for it "
                             "or stop it, then run it again: it resumes where it stopped")
    stop = threading.Event()
    renew = r.register_script(_RENEW)

    def keep_alive() -> None:
        while not stop.wait(RENEW_EVERY):
            try:
                renew(keys=[key], args=[holder, LEASE_SECONDS * 1000])
            except Exception:  # noqa: BLE001 - retried at the next tick; expiry is the bound
                pass

    t = threading.Thread(target=keep_alive, name=f"job-lock-{name}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        with contextlib.suppress(Exception):
            r.register_script(RELEASE_IF_OWNER)(keys=[key], args=[holder])
