"""The servers under test: start, stop (whole process group, bounded waits), where data lands."""

from __future__ import annotations

import atexit
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_USER = "bench"
BENCH_PASS = "benchpass1"
DAV_BLOCK_SIZE = 262144

_LIVE: list[Server] = []


def _stop_all() -> None:
    for s in list(_LIVE):
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_stop_all)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_has_command(*argv: str) -> bool:
    """True if ``argv --help`` exits 0 (used to detect davserver admin commands)."""
    try:
        r = subprocess.run([*argv, "--help"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class StartError(RuntimeError):
    pass


class NotAvailable(StartError):
    """The server build says the feature does not exist (yet)."""


_NOT_AVAILABLE = re.compile(r"not (available|implemented|supported)|invalid choice", re.I)


class Server:
    """One server process (own process group) plus its data directory."""

    name = "?"
    label = "?"
    base = "/"  # WebDAV base path
    user: str | None = None
    password: str | None = None
    ready_path = "/"
    stop_grace = 5.0

    def __init__(self, workdir: str):
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = os.path.join(self.dir, "server.log")
        self.notes: list[str] = []
        self.na: dict[str, str] = {}  # figure key -> reason it is not available

    # -- lifecycle ---------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time setup before the first start (config, init, users)."""

    def start(self) -> None:
        self.port = self.port or free_port()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=self.env())
        log.close()
        _LIVE.append(self)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"{self.name} exited with {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.1)
        raise StartError(f"{self.name} not ready within 60 s: {self.log_tail()}")

    def env(self) -> dict:
        return dict(os.environ)

    def _ready(self) -> bool:
        # no credentials here: the first authenticated request is measured separately
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{self.ready_path}")
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status < 500
        except urllib.error.HTTPError as e:
            return e.code < 500
        except OSError:
            return False

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        if self in _LIVE:
            _LIVE.remove(self)
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(self.stop_grace)
            return
        except subprocess.TimeoutExpired:
            note = (f"{self.name} did not exit within {self.stop_grace:.0f} s of SIGTERM; "
                    "killed with SIGKILL")
            if note not in self.notes:
                self.notes.append(note)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # -- client side -------------------------------------------------------------------
    def auth_headers(self) -> dict:
        if not self.user:
            return {}
        tok = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {tok}"}

    def disk_path(self, rel: str, since: float, min_size: int) -> str | None:
        """Path of the stored (backend) file for WebDAV path ``rel``."""
        raise NotImplementedError

    def bulk_create_on_disk(self, rel_dir: str, names: list[str], data: bytes) -> bool:
        """Create files directly in storage, bypassing the server. False if not possible."""
        return False


class PlainWsgiDAV(Server):
    def __init__(self, workdir: str, block_size: int = DAV_BLOCK_SIZE):
        self.block_size = block_size
        if block_size == DAV_BLOCK_SIZE:
            self.name, self.label = "wsgidav", "plain WsgiDAV"
        elif block_size % (1 << 20) == 0:
            self.name = f"wsgidav-{block_size >> 20}m"
            self.label = f"plain WsgiDAV, {block_size >> 20} MiB block"
        else:
            self.name = f"wsgidav-{block_size // 1024}k"
            self.label = f"plain WsgiDAV, {block_size // 1024} KiB block"
        super().__init__(workdir)
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.root, exist_ok=True)

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(HERE, "plain_wsgidav.py"), "--port", str(self.port),
                "--root", self.root, "--block-size", str(self.block_size)]

    def disk_path(self, rel, since, min_size):
        return os.path.join(self.root, rel)

    def bulk_create_on_disk(self, rel_dir, names, data):
        d = os.path.join(self.root, rel_dir)
        os.makedirs(d, exist_ok=True)
        for n in names:
            with open(os.path.join(d, n), "wb") as f:
                f.write(data)
        return True


class DavServer(Server):
    base = f"/remote.php/dav/files/{BENCH_USER}/"
    user = BENCH_USER
    password = BENCH_PASS
    ready_path = "/status.php"

    def __init__(self, workdir: str, mode: str = "master", fsync: bool = True,
                 threads: int = 16, workers: int = 0):
        self.mode = mode
        self.name = f"davserver-{mode}" + ("" if fsync else "-nofsync") + (
            "-1proc" if workers == 1 else "")
        self.label = f"davserver {mode}-key" + ("" if fsync else ", fsync off") + (
            ", 1 process" if workers == 1 else "")
        super().__init__(workdir)
        self.fsync = fsync
        self.threads = threads
        self.workers = workers  # 0: davserver's default
        self.config = os.path.join(self.dir, "davserver.toml")
        self.data = os.path.join(self.dir, "data")

    def _cli(self, *args: str, env: dict | None = None, timeout: float = 120) -> str:
        r = subprocess.run(["davserver", *args, "--config", self.config,
                            "--data-dir", self.data], capture_output=True, text=True,
                           timeout=timeout, env=env or self.env(), stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            out = (r.stderr or r.stdout).strip()
            if _NOT_AVAILABLE.search(out):
                raise NotAvailable(f"davserver {args[0]}: {out[-300:]}")
            raise StartError(f"davserver {args[0]} failed ({r.returncode}): "
                             f"{(r.stderr or r.stdout)[-800:]}")
        return r.stdout

    def prepare(self) -> None:
        with open(self.config, "w") as f:
            f.write(f"[server]\nworkers = {self.workers}\nthreads = {self.threads}\n"
                    f"block_size = {DAV_BLOCK_SIZE}\n"
                    f"[storage]\nfsync = {'true' if self.fsync else 'false'}\n"
                    f"[logging]\nlevel = \"warning\"\n")
        out = self._cli("init")
        if "admin password" not in out:
            raise StartError(f"davserver init printed no admin password: {out[-400:]}")
        if self.mode == "user":
            self._cli("encryption:disable-master-key", "--yes")
        env = self.env()
        env["DAVSERVER_PASS"] = BENCH_PASS
        self._cli("user:add", BENCH_USER, "--password-from-env", env=env)

    def command(self) -> list[str]:
        return ["davserver", "serve", "--config", self.config, "--data-dir", self.data,
                "--host", "127.0.0.1", "--port", str(self.port)]

    def disk_path(self, rel, since, min_size):
        p = os.path.join(self.data, "files", BENCH_USER, rel)
        return p if os.path.exists(p) else _newest_big_file(
            os.path.join(self.data, "files"), since, min_size)


class RcloneCrypt(Server):
    name = "rclone-crypt"
    label = "rclone serve webdav, crypt"
    user = BENCH_USER
    password = BENCH_PASS

    def __init__(self, workdir: str):
        super().__init__(workdir)
        self.backend = os.path.join(self.dir, "backend")
        self.conf = os.path.join(self.dir, "rclone.conf")
        os.makedirs(self.backend, exist_ok=True)

    def prepare(self) -> None:
        def obscure(pw: str) -> str:
            return subprocess.run(["rclone", "obscure", pw], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()

        with open(self.conf, "w") as f:
            f.write(f"[benchcrypt]\ntype = crypt\nremote = {self.backend}\n"
                    f"password = {obscure('bench-crypt-password')}\n"
                    f"password2 = {obscure('bench-crypt-salt')}\n")

    def command(self) -> list[str]:
        return ["rclone", "serve", "webdav", "benchcrypt:", "--config", self.conf,
                "--addr", f"127.0.0.1:{self.port}", "--user", BENCH_USER, "--pass", BENCH_PASS,
                "--log-level", "ERROR"]

    def disk_path(self, rel, since, min_size):
        return _newest_big_file(self.backend, since, min_size)


def _newest_big_file(root: str, since: float, min_size: int) -> str | None:
    best, best_m = None, 0.0
    for dp, _dn, fns in os.walk(root):
        for fn in fns:
            p = os.path.join(dp, fn)
            try:
                st = os.stat(p)
            except OSError:
                continue
            if st.st_size >= min_size and st.st_mtime >= since - 2 and st.st_mtime > best_m:
                best, best_m = p, st.st_mtime
    return best


def rclone_available() -> bool:
    return shutil.which("rclone") is not None
