"""Live davserver instances for end-to-end tests: real subprocesses on loopback ports.

:class:`LiveServer` creates an instance (config + secret in ``<root>/etc``, data in
``<root>/data``), adds users, runs ``python3 -m davserver serve`` and stops it again. Every
process started here is registered in ``_PROCS`` and killed by :func:`kill_all` (called at
session end and at interpreter exit); on Linux the server also gets ``PR_SET_PDEATHSIG`` so
it dies with the test process even if pytest itself is SIGKILLed.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

_PROCS: set[subprocess.Popen] = set()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_all() -> None:
    """Kill every server process this module started that is still running."""
    for proc in list(_PROCS):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _PROCS.discard(proc)


atexit.register(kill_all)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise AssertionError(f"{name!r} is not installed; the test needs it "
                             f"(apt-get install -y {name})")
    return path


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


DEFAULT_CONFIG: dict[str, dict] = {
    "server": {"host": "127.0.0.1", "threads": 8, "socket_timeout": 60},
    "auth": {"throttle_max_failures": 5},
    "logging": {"level": "info"},
}


class LiveServer:
    """One davserver instance under ``root`` and (while started) its server process."""

    def __init__(self, root: Path, users: dict[str, str | None] | None = None,
                 config: dict[str, dict] | None = None) -> None:
        self.root = Path(root)
        self.etc = self.root / "etc"
        self.config = str(self.etc / "davserver.toml")
        self.data_dir = str(self.root / "data")
        self.log_path = self.root / "server.log"
        self.users: dict[str, str] = {}
        self.quotas = dict(users if users is not None else {"alice": None, "bob": None})
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.admin_password = ""
        cfg = {k: dict(v) for k, v in DEFAULT_CONFIG.items()}
        for section, values in (config or {}).items():
            cfg.setdefault(section, {}).update(values)
        self._config_doc = cfg

    # --- set-up ------------------------------------------------------------------------

    def write_config(self, **changes: dict) -> None:
        """(Re)write the config file, ``changes`` merged per section; a restart applies it."""
        for section, values in changes.items():
            self._config_doc.setdefault(section, {}).update(values)
        self.etc.mkdir(parents=True, exist_ok=True)
        lines = []
        for section, values in self._config_doc.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        Path(self.config).write_text("\n".join(lines) + "\n")

    def create(self) -> LiveServer:
        self.write_config()
        out = self.run_cli("init").stdout
        m = re.search(r"admin password:\s+(\S+)", out)
        assert m, f"init printed no admin password:\n{out}"
        self.admin_password = m.group(1)
        for name, quota in self.quotas.items():
            password = f"{name}-pw-{secrets.token_hex(6)}"
            args = ["user:add", name, "--password-from-env"]
            if quota:
                args += ["--quota", quota]
            self.run_cli(*args, env={"DAVSERVER_PASS": password})
            self.users[name] = password
        return self

    def run_cli(self, *args: str, env: dict | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "davserver", *args, "--config", self.config,
               "--data-dir", self.data_dir]
        full_env = dict(os.environ)
        full_env.update(env or {})
        res = subprocess.run(cmd, env=full_env, capture_output=True, text=True,
                             timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {res.returncode}:\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    # --- process -----------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, user: str, path: str = "") -> str:
        return f"{self.base}/remote.php/dav/files/{user}/{path.lstrip('/')}"

    def auth(self, user: str) -> tuple[str, str]:
        return (user, self.users[user])

    def session(self, user: str) -> requests.Session:
        s = requests.Session()
        s.auth = self.auth(user)
        return s

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def start(self) -> LiveServer:
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting; several servers can then start together
        (spawn each from this thread: the child dies with the thread that forked it)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not self.port:
            # A fixed port, not 0: cheroot sets SO_REUSEADDR only for fixed ports, and
            # restart() must get the same port back despite connections in TIME_WAIT.
            self.port = free_port()
        cmd = [sys.executable, "-m", "davserver", "serve", "--config", self.config,
               "--data-dir", self.data_dir, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent)
        _PROCS.add(self.proc)

    def wait_ready(self) -> LiveServer:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"davserver exited with {self.proc.returncode} at "
                                     f"start:\n{self.log_tail()}")
            try:
                r = requests.get(f"{self.base}/status.php", timeout=2)
                if r.status_code == 200 and r.json().get("installed"):
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"davserver not ready within {START_TIMEOUT} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        _PROCS.discard(p)

    def kill(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.kill()
            p.wait(5)
        _PROCS.discard(p)

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    # --- inspection of the data directory ----------------------------------------------

    def tmp_files(self) -> list[str]:
        tmp = Path(self.data_dir) / "tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []

    def key_files(self) -> list[Path]:
        return sorted(p for p in (Path(self.data_dir) / "keys" / "files").rglob("*.json"))

    def stored_files(self) -> list[Path]:
        return sorted(p for p in (Path(self.data_dir) / "files").rglob("*") if p.is_file())


def wait_until(cond, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
