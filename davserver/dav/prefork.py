"""Several server processes on one port: the way a Python server uses more than one core.

AES-GCM, HPKE and most of a request's work hold the GIL, so one process serves one core's
worth of requests however many threads it has. ``[server] workers`` processes each run the
whole application with their own DB connections and caches, on sockets bound with
``SO_REUSEPORT`` so the kernel spreads new connections over them. What must be one truth
is not in their memory: files, index and WebDAV locks are in the data directory and the
DB, and the locks that make commits and lock grants atomic are shared between the
processes (``davserver.meta.interprocess``).

The parent does the start-up work once (crash recovery, temp cleanup), then only
supervises: a worker that dies is started again, SIGTERM/SIGINT stop them all, and a
worker dies with the parent (``PR_SET_PDEATHSIG``) so a killed server never leaves
processes holding the port.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

from davserver.errors import UserError

log = logging.getLogger("davserver")

_RESTART_WINDOW = 10.0  # a worker dying this soon after its start counts as a crash loop
_MAX_QUICK_DEATHS = 5
_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def probe_port(host: str, port: int) -> int:
    """Fail early (EADDRINUSE) if anyone already listens, and resolve port 0.

    Without this, SO_REUSEPORT would let a second server started by mistake on the same
    port quietly share its connections with the first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        return s.getsockname()[1]


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def serve_workers(count: int, run_worker: Callable[[], None]) -> int:
    """Fork ``count`` workers that each call ``run_worker`` (which serves until told to
    stop by SIGTERM); supervise them until SIGTERM/SIGINT. Returns the exit status."""
    parent = os.getpid()
    stopping = threading.Event()
    children: dict[int, float] = {}  # pid -> start time
    quick_deaths = 0

    def spawn() -> None:
        # Signals stay blocked across fork until the child has its own handlers: the
        # parent's would make a child signal its siblings.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards it
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                _die_with_parent(parent)
                run_worker()
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def stop(signum, frame) -> None:
        stopping.set()
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    gc.freeze()  # what the parent built stays shared with the workers (copy-on-write)
    for _ in range(count):
        spawn()
    status = 0
    while children:
        try:
            pid, wstatus = os.wait()
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.ECHILD:
                break
            raise
        started = children.pop(pid, None)
        if started is None or stopping.is_set():
            continue
        code = os.waitstatus_to_exitcode(wstatus)
        log.error("worker %d exited (%s); starting a new one", pid,
                  f"signal {-code}" if code < 0 else f"status {code}")
        if time.monotonic() - started < _RESTART_WINDOW:
            quick_deaths += 1
            if quick_deaths >= _MAX_QUICK_DEATHS:
                print("davserver: workers keep failing at start; see the log", file=sys.stderr)
                stop(signal.SIGTERM, None)
                status = 1
                continue
            time.sleep(0.5 * quick_deaths)
        spawn()
    return status
