#!/usr/bin/env python3
"""What share keys add to every request in user-key mode, in process (WSGI app, no
sockets): a GET by a user who is in one share while many shares exist, and by a user who
is in all of them.

    python3 bench/share_request_bench.py [--shares 200] [--requests 400] [--workdir DIR]

Each request resolves the share keys its user holds (vault.sharewraps.identities_for).
Reported: median and 90th percentile per GET, and the time of identities_for alone.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from davserver.dav import app as dav_app  # noqa: E402
from davserver.vault import context  # noqa: E402
from davserver.vault.shares import USER  # noqa: E402
from tests.instances import make_instance  # noqa: E402


def _get(app, user: str, password: str, path: str) -> float:
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO(b""),
           "CONTENT_LENGTH": "0", "HTTP_AUTHORIZATION": auth, "wsgi.url_scheme": "http",
           "SERVER_NAME": "x", "SERVER_PORT": "1", "SCRIPT_NAME": "",
           "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO()}
    status = []
    t = time.perf_counter()
    body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    took = time.perf_counter() - t
    assert status[0].startswith("200"), (status, body[:300])
    return took


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{statistics.median(xs) * 1e3:.3f} ms (p90 {xs[int(len(xs) * 0.9)] * 1e3:.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shares", type=int, default=200)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="share-req-bench-", dir=args.workdir))
    try:
        inst = make_instance(work, user_mode=True)
        pw = {u: f"{u}-password" for u in ("alice", "bob", "carol")}
        for u, p in pw.items():
            inst.users.add(u, p)
        ids = {u: inst.unlock(u, p) for u, p in pw.items()}
        with context.acting_as(*ids["bob"]):
            inst.vault.write_bytes("bob/own.txt", b"b" * 1000)
        with context.acting_as(*ids["alice"]):
            for i in range(args.shares):
                inst.vault.make_dir(f"alice/s{i:04d}")
                inst.vault.write_bytes(f"alice/s{i:04d}/f.txt", b"a" * 1000)
                inst.shares.create("alice", f"s{i:04d}", USER, "carol")
            inst.shares.create("alice", "s0000", USER, "bob")
        assert not inst.sharewraps.keys.pending()
        app = dav_app.build_app(inst)
        cases = [
            ("bob (1 share) GET own file", "bob", "/remote.php/dav/files/bob/own.txt"),
            ("bob (1 share) GET shared file", "bob",
             "/remote.php/dav/files/bob/s0000/f.txt"),
            (f"carol ({args.shares} shares) GET shared file", "carol",
             "/remote.php/dav/files/carol/s0000/f.txt"),
        ]
        times: dict[str, list[float]] = {c[0]: [] for c in cases}
        for _ in range(5):  # warm up: logins, caches
            for _name, user, path in cases:
                _get(app, user, pw[user], path)
        for _ in range(args.requests):  # interleaved, so load changes hit every case alike
            for name, user, path in cases:
                times[name].append(_get(app, user, pw[user], path))
        own = tuple(ids["bob"])
        idt = []
        for _ in range(args.requests):
            t = time.perf_counter()
            inst.sharewraps.identities_for(own)
            idt.append(time.perf_counter() - t)
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"# share_request_bench ({args.shares} shares, user-key mode, in process, "
              f"load average {load})\n")
        print("| request | time per request |\n|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {_stats(xs)} |")
        print(f"| identities_for (bob) alone | {_stats(idt)} |")
        inst.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
