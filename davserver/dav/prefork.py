"""Several server processes on one port: the way a Python server uses more than one core.

AES-GCM, HPKE and most of a request's work hold the GIL, so one process serves one core's
worth of requests however many threads it has. With ``[server] workers = N`` the server
process does the start-up work once (crash recovery, temp cleanup), forks N-1 more
workers, and then serves as a worker itself. Each process runs the whole application with
its own DB connections and caches, on one listening socket that the first process opens
before it forks; ``dav.balance`` spreads new connections over the workers by how many each
already holds. What must be one truth is not in their memory: files,
index and WebDAV locks are in the data directory and the DB, and the locks that make
commits and lock grants atomic are shared between the processes
(``davserver.meta.interprocess``).

Why the first process serves too, instead of only supervising: forked workers share the
pages of everything it had loaded, and a supervisor that only waits would still hold
~20 MiB of its own. Forked workers start before the first process runs any thread (fork
and threads do not mix); a worker that dies later is replaced by a freshly executed one
(``davserver serve --worker-of PID``). Workers die with the first process
(``PR_SET_PDEATHSIG``), so a killed server never leaves processes holding the port;
SIGTERM/SIGINT to it stop them all.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from davserver.dav import balance
from davserver.errors import UserError

log = logging.getLogger("davserver")

_RESTART_WINDOW = 10.0  # a worker dying this soon after its start counts as a crash loop
_MAX_QUICK_DEATHS = 5
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: How long a worker stopped by SIGTERM/SIGINT waits for its replacement: the signal may
#: be a stop of the whole process group that has not reached this process yet.
_STOP_GRACE = 2.0


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def listen(host: str, port: int) -> socket.socket:
    """The listening socket all workers share, set up as cheroot sets up its own.

    Opened once, before any worker exists, so a second server started by mistake on the
    same port fails here (EADDRINUSE) with a clear line."""
    from cheroot.server import HTTPServer

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = HTTPServer.prepare_socket((host, port), family, socket.SOCK_STREAM, 0,
                                         True, None)
        sock = HTTPServer.bind_socket(sock, (host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return sock


def die_with(parent: int) -> None:
    """Make this process die when ``parent`` does (or exit now if it already has)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)


class Workers:
    """The first process's view of the other workers: start, replace, stop."""

    def __init__(self, count: int, run_worker: Callable[[], None],
                 respawn_argv: list[str], sock: socket.socket) -> None:
        self.count = count
        self._run_worker = run_worker
        self._respawn_argv = respawn_argv
        self._sock = sock
        self._children: dict[int, float] = {}  # pid -> start time
        self._slots: dict[int, int] = {}  # pid -> slot in the load table
        balance.table = balance.LoadTable(count)
        balance.table.take(0)  # the first process
        self._stopping = threading.Event()
        self._quick_deaths = 0

    def fork_initial(self) -> None:
        """Fork the other workers; call before this process starts any thread."""
        parent = os.getpid()
        gc.collect()
        gc.freeze()  # what is loaded now stays shared with the workers (copy-on-write)
        for slot in range(1, self.count):
            # Signals stay blocked across fork until the child has its own handlers.
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the first process forwards it
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                    die_with(parent)
                    balance.table.take(slot)
                    self._run_worker()
                except BaseException:
                    log.exception("worker %d failed", os.getpid())
                    code = 1
                finally:
                    logging.shutdown()
                    os._exit(code)
            self._children[pid] = time.monotonic()
            self._slots[pid] = slot
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def supervise(self) -> None:
        """Replace workers that die (on a thread of the first process)."""
        threading.Thread(target=self._watch, name="workers", daemon=True).start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                pid, wstatus = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.2)  # none right now (a replacement may be starting)
                continue
            except InterruptedError:
                continue
            started = self._children.pop(pid, None)
            slot = self._slots.pop(pid, None)
            if started is None or self._stopping.is_set():
                continue
            balance.table.release(slot)
            code = os.waitstatus_to_exitcode(wstatus)
            if (code == 0 or -code in _SIGNALS) and self._stopping.wait(_STOP_GRACE):
                # Stopped on request (a worker's SIGTERM handler exits 0): systemd signals
                # the whole group, and the first process's signal may come a moment later.
                continue
            log.error("worker %d exited (%s); starting a new one", pid,
                      f"signal {-code}" if code < 0 else f"status {code}")
            if time.monotonic() - started < _RESTART_WINDOW:
                self._quick_deaths += 1
                if self._quick_deaths >= _MAX_QUICK_DEATHS:
                    log.error("workers keep failing at start; serving with fewer")
                    continue
                time.sleep(0.5 * self._quick_deaths)
            self._respawn(slot)

    def _respawn(self, slot: int) -> None:
        """Start a replacement by exec: it inherits the listening socket and the load
        table as descriptors, and takes over the dead worker's slot."""
        fds = (self._sock.fileno(), balance.table.fd)
        argv = [sys.executable, "-m", "davserver", *self._respawn_argv,
                "--worker-of", str(os.getpid()), "--listen-fd", str(fds[0]),
                "--load-fd", str(fds[1]), "--worker-slot", str(slot)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=fds)
        self._children[proc.pid] = time.monotonic()
        self._slots[proc.pid] = slot

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while self._children and time.monotonic() < deadline:
            for pid in list(self._children):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self._children.pop(pid, None)
            time.sleep(0.05)
        for pid in list(self._children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def pids(self) -> list[int]:
        return list(self._children)
