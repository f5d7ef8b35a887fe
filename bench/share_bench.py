#!/usr/bin/env python3
"""Sharing costs in user-key mode, in process (no HTTP for the key work; PROPFIND through
the WSGI app as a client would reach it).

    python3 bench/share_bench.py [--files 10000] [--workdir DIR] [--fsync]

Figures (targets from issue 15):
  1. add a member to a group whose share holds N files: wraps made (must be 1) and time
     (target < 50 ms)
  2. sharing an N-file folder: data-key wraps per second (target >= 5,000/s)
  3. PROPFIND Depth 1 of the shared N-file folder as the recipient vs as the owner
     (target: within 1.2x)
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from davserver.dav import app as dav_app  # noqa: E402
from davserver.vault import context  # noqa: E402
from davserver.vault.shares import ALL, GROUP, USER  # noqa: E402
from tests.instances import make_instance  # noqa: E402


def _propfind(app, user: str, password: str, path: str) -> float:
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    env = {"REQUEST_METHOD": "PROPFIND", "PATH_INFO": path, "HTTP_DEPTH": "1",
           "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0", "HTTP_AUTHORIZATION": auth,
           "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "1",
           "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO()}
    status = []
    t = time.perf_counter()
    body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    took = time.perf_counter() - t
    assert status[0].startswith("207"), (status, body[:300])
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--workdir")
    ap.add_argument("--fsync", action="store_true",
                    help="flush key files as a server does by default (off: as the tests)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="share-bench-", dir=args.workdir))
    try:
        inst = make_instance(work, user_mode=True, fsync=args.fsync)
        pw = {u: f"{u}-password" for u in ("alice", "bob", "carol", "dave")}
        for u, p in pw.items():
            inst.users.add(u, p)
        ids = {u: inst.unlock(u, p) for u, p in pw.items()}  # everyone has a key pair
        n = args.files
        print(f"creating {n} files ...", file=sys.stderr)
        with context.acting_as(*ids["alice"]):
            inst.vault.make_dir("alice/big")
            for i in range(n):
                inst.vault.write_bytes(f"alice/big/f{i:05d}.txt", b"x" * 100)

            # 2. share the folder: one data-key wrap per file.
            sk = inst.sharewraps.keys
            t = time.perf_counter()
            inst.shares.create("alice", "big", USER, "bob", permissions=ALL)
            share_time = time.perf_counter() - t
            assert not sk.pending(), sk.pending()

            # 1. a group share of the same folder; a member joins.
            inst.groups.add("team")
            inst.groups.add_user("team", "carol")
            inst.shares.create("alice", "big", GROUP, "team")
            before = sk.wraps_made
            t = time.perf_counter()
            inst.groups.add_user("team", "dave")
            join_time = time.perf_counter() - t
            join_wraps = sk.wraps_made - before
        assert not sk.pending(), sk.pending()

        # 3. PROPFIND of the folder, owner vs recipient (best of 3 each).
        app = dav_app.build_app(inst)
        owner = min(_propfind(app, "alice", pw["alice"], "/remote.php/dav/files/alice/big")
                    for _ in range(3))
        recipient = min(_propfind(app, "bob", pw["bob"], "/remote.php/dav/files/bob/big")
                        for _ in range(3))
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"# share_bench ({n} files, user-key mode, in process, fsync "
              f"{'on' if args.fsync else 'off'}, load average {load})\n")
        print("| figure | value | target |\n|---|---|---|")
        print(f"| member joins group share: wraps made | {join_wraps} | 1 |")
        print(f"| member joins group share: time | {join_time * 1000:.1f} ms | < 50 ms |")
        print(f"| share {n}-file folder: data-key wraps/s | {n / share_time:,.0f} | "
              f">= 5,000 |")
        print(f"| PROPFIND depth 1, owner | {owner * 1000:.0f} ms | |")
        print(f"| PROPFIND depth 1, recipient | {recipient * 1000:.0f} ms | |")
        print(f"| recipient / owner | {recipient / owner:.2f}x | <= 1.2x |")
        inst.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
