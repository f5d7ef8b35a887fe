"""Common plumbing for the real-service fixtures (redis-server, PostgreSQL, nginx): a
child process that dies with the test run, and waiting until a port answers."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.live import _PROCS, _die_with_parent

START_TIMEOUT = 20.0


def spawn(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """Start ``cmd`` in the foreground (no daemonising), output to ``log``; registered so
    tests.live.kill_all() kills it at session end even if a test forgot."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, **kw)
    _PROCS.add(proc)
    return proc


def wait_port(port: int, proc: subprocess.Popen | None, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} at start:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} not listening on {port} within {START_TIMEOUT} s:\n"
                         f"{log.read_text(errors='replace')[-3000:]}")


def wait_ready(ready, proc: subprocess.Popen, what: str) -> None:
    """Poll ``ready()`` (an HTTP probe; a request error counts as not ready) until it is
    true, failing at once if ``proc`` exits."""
    import requests

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not start within {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _PROCS.discard(proc)
