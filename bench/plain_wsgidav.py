#!/usr/bin/env python3
"""Plain WsgiDAV (filesystem provider, anonymous) on cheroot with a chosen block_size.

Equivalent to ``wsgidav --host H --port P --root DIR --auth anonymous --no-config -q`` but
lets the benchmark set WsgiDAV's ``block_size`` (davserver uses 262144; WsgiDAV's default is
8192) and the same cheroot thread count / socket timeout as davserver.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from cheroot import wsgi
from wsgidav.fs_dav_provider import FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--block-size", type=int, default=262144)
    ap.add_argument("--threads", type=int, default=16)
    a = ap.parse_args()
    config = {
        "provider_mapping": {"/": FilesystemProvider(a.root)},
        "simple_dc": {"user_mapping": {"*": True}},  # anonymous, like --auth anonymous
        "http_authenticator": {"domain_controller": None},
        "block_size": a.block_size,
        "verbose": 0,
        "logging": {"enable": False, "enable_loggers": []},
        "dir_browser": {"enable": False},
        "property_manager": True,
        "lock_storage": True,
    }
    app = WsgiDAVApp(config)
    server = wsgi.Server((a.host, a.port), app, numthreads=a.threads, timeout=300,
                         server_name="plain-wsgidav")
    server.max_request_body_size = 0

    def stop(signum, frame):
        # server.stop() must not run on the thread that is inside server.serve()
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.prepare()
    print(f"plain-wsgidav: serving {a.root} on {a.host}:{a.port} block_size={a.block_size}",
          flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
