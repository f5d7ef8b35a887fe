"""A remote WebDAV server for tests: plain WsgiDAV (filesystem provider, Basic auth) in
its own process on a loopback port, the kind of server the webdav backend talks to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

from tests import services
from tests.live import _PROCS, _die_with_parent, free_port

USER = "remote"
PASSWORD = "remote-pass-1"

_SERVE = r"""
import json, sys
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp
conf = json.loads(sys.argv[1])
app = WsgiDAVApp({
    "provider_mapping": {"/dav": conf["root"]},
    "simple_dc": {"user_mapping": {"*": {conf["user"]: {"password": conf["password"]}}}},
    "http_authenticator": {"accept_basic": True, "accept_digest": False,
                           "default_to_digest": False},
    "verbose": 0, "logging": {"enable": False},
    "property_manager": True, "lock_storage": True,
})
server = wsgi.Server(("127.0.0.1", conf["port"]), app, numthreads=8)
server.start()
"""


class RemoteDav:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dav"

    def start(self) -> RemoteDav:
        conf = json.dumps({"root": str(self.root), "user": USER, "password": PASSWORD,
                           "port": self.port})
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        _PROCS.add(self.proc)
        services.wait_ready(
            lambda: requests.request("PROPFIND", self.url + "/", auth=(USER, PASSWORD),
                                     headers={"Depth": "0"}, timeout=1).status_code == 207,
            self.proc, "WsgiDAV")
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        services.stop(p, 5)
