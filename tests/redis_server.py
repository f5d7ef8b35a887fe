"""A throwaway redis-server on a free loopback port, its files in a temp dir.

Real Redis rather than a fake: key expiry, NX/GT options and scripts are the server's
behaviour the shared-state code relies on. No persistence (``save ""``), so a restart
starts empty, as a Redis that lost its memory would.
"""

from __future__ import annotations

from pathlib import Path

from tests import services
from tests.live import free_port, require_tool


class RedisServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = 0
        self.proc = None
        self.log = self.root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = require_tool("redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.root / "redis.conf"
        conf.write_text("\n".join([
            "bind 127.0.0.1", f"port {self.port}", f"dir {self.root}", 'save ""',
            "appendonly no", "daemonize no", "protected-mode yes", "databases 2",
            "logfile \"\"", ""]))
        self.proc = services.spawn([binary, str(conf)], self.log)
        services.wait_port(self.port, self.proc, self.log, "redis-server")
        return self

    def stop(self) -> None:
        services.stop(self.proc)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)
