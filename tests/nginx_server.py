"""nginx as the load balancer in front of several davserver nodes: round-robin over
loopback backends, bodies streamed (no request buffering, no size limit), run in the
foreground with its config, pid, logs and temp files in a temp dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests import services
from tests.live import free_port


def require_tool(name: str) -> str:
    """nginx lives in /usr/sbin, which a non-root PATH may lack."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        raise AssertionError(f"{name!r} is not installed; the test needs it "
                             f"(apt-get install -y {name})")
    return path

CONF = """\
{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format upstream '$request_method $status $upstream_addr';
    access_log {root}/access.log upstream;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream davservers {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        location / {{
            proxy_pass http://davservers;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


class NginxServer:
    def __init__(self, root: Path, backends: list[int]) -> None:
        self.root = Path(root)
        self.backends = list(backends)
        self.port = 0
        self.proc = None
        self.log = self.root / "nginx.out"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> NginxServer:
        binary = require_tool("nginx")
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in self.backends)
        conf = self.root / "nginx.conf"
        # As root, nginx would run its worker as nobody, which cannot enter pytest's
        # private temp dirs; the test's nginx stays the test's user.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf.write_text(CONF.format(user=user, root=self.root, servers=servers,
                                    port=self.port))
        self.proc = services.spawn([binary, "-c", str(conf), "-p", str(self.root),
                                    "-e", str(self.root / "error.log")], self.log)
        services.wait_port(self.port, self.proc, self.log, "nginx")
        return self

    def backends_used(self) -> set[int]:
        """Ports of the backends that answered requests (from the access log)."""
        used = set()
        for line in (self.root / "access.log").read_text().splitlines():
            for addr in line.split(" ", 2)[-1].split(", "):
                if addr.rpartition(":")[2].isdigit():
                    used.add(int(addr.rpartition(":")[2]))
        return used

    def stop(self) -> None:
        services.stop(self.proc)
        self.proc = None
