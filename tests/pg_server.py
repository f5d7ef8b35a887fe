"""A throwaway PostgreSQL cluster: initdb + postgres in a temp dir, run as an unprivileged
user (the ``postgres`` system user the Debian package creates; PostgreSQL refuses to run
as root), listening on a free loopback port with its socket in the temp dir."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests import services
from tests.live import free_port

RUN_AS = "postgres"


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise AssertionError(f"PostgreSQL {name} not found; the test needs it "
                             "(apt-get install -y postgresql)")
    return found[-1]


def _as_user():
    """The uid/gid to drop to (None: already unprivileged)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(RUN_AS)
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


class PgServer:
    """``root`` is made by the fixture outside pytest's private (0700, root-owned) temp
    tree, which the unprivileged server user could not enter."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="davserver-pg-"))
        self.data = self.root / "pgdata"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.proc = None
        self.user = "davserver"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        ids = _as_user()
        kw = {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
        if res.returncode:
            raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n"
                                 f"{res.stdout}\n{res.stderr}")

    def start(self) -> PgServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        ids = _as_user()
        if ids is not None:
            for p in (self.root, self.sock):
                os.chown(p, *ids)
        if not self.data.exists():
            self._run([pg_bin("initdb"), "-D", str(self.data), "-U", self.user,
                       "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        if not self.port:
            self.port = free_port()
        ids = _as_user()
        kw = {} if ids is None else {"user": ids[0], "group": ids[1], "extra_groups": []}
        self.proc = services.spawn(
            [pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sock}",
             "-c", "fsync=off", "-c", "full_page_writes=off"], self.log, **kw)
        services.wait_port(self.port, self.proc, self.log, "postgres")
        return self

    def stop(self, *, fast: bool = False) -> None:
        """SIGTERM is PostgreSQL's "smart" shutdown, which waits for clients to leave
        (services.stop escalates if it hangs); ``fast`` (SIGINT) disconnects them at once,
        as a restart by an admin does."""
        if fast and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        services.stop(self.proc, timeout=15)
        self.proc = None

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
