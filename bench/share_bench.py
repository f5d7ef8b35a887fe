#!/usr/bin/env python3
"""Sharing costs in user-key mode, in process (no HTTP for the key work; PROPFIND through
the WSGI app as a client would reach it).

    python3 bench/share_bench.py [--files 10000] [--workdir DIR] [--fsync] [--http]
                                 [--master] [--rounds 7]

Figures (targets from issue 15):
  1. add a member to a group whose share holds N files: wraps made (must be 1) and time
     (target < 50 ms)
  2. sharing an N-file folder: data-key wraps per second (target >= 5,000/s)
  3. PROPFIND Depth 1 of the shared N-file folder as the recipient vs as the owner
     (target: within 1.2x)
  4. with --http: the same over HTTP (a `davserver serve` process, requests as client)
     with the property set the Nextcloud desktop client asks for, owner vs recipient,
     rounds interleaved, median; the owner's figure is issue 19's (target <= 0.12 s)

--master: master-key mode (figures 1 and 2 are then skipped: no key work).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from davserver.dav import app as dav_app  # noqa: E402
from davserver.vault import context  # noqa: E402
from davserver.vault.shares import ALL, GROUP, USER  # noqa: E402
from tests.instances import make_instance  # noqa: E402

#: What the Nextcloud desktop client (nextcloudcmd) asks for in its discovery PROPFIND.
NC_BODY = (
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
    b'xmlns:nc="http://nextcloud.org/ns"><d:prop><d:resourcetype/><d:getlastmodified/>'
    b"<d:getcontentlength/><d:getetag/><oc:size/><oc:id/><oc:fileid/><oc:downloadURL/>"
    b"<oc:dDC/><oc:permissions/><oc:checksums/><nc:is-encrypted/><nc:has-preview/>"
    b"<oc:share-types/><oc:data-fingerprint/><nc:lock/><nc:lock-owner/>"
    b"<nc:is-mount-root/></d:prop></d:propfind>")


def _propfind(app, user: str, password: str, path: str) -> float:
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    env = {"REQUEST_METHOD": "PROPFIND", "PATH_INFO": path, "HTTP_DEPTH": "1",
           "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0", "HTTP_AUTHORIZATION": auth,
           "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "1",
           "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "x",
           "wsgi.errors": io.StringIO()}
    status = []
    t = time.perf_counter()
    body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    took = time.perf_counter() - t
    assert status[0].startswith("207"), (status, body[:300])
    return took


def _key_figures(inst, ids, n: int, figures: list[str]) -> None:
    """Figures 1 and 2 (user-key mode): the folder is created, shared with bob (one
    data-key wrap per file) and with a group, and a member joins (one wrap)."""
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
    figures.append(f"| member joins group share: wraps made | {join_wraps} | 1 |")
    figures.append(f"| member joins group share: time | {join_time * 1000:.1f} ms | < 50 ms |")
    figures.append(f"| share {n}-file folder: data-key wraps/s | {n / share_time:,.0f} | "
                   ">= 5,000 |")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_figures(work: Path, pw: dict[str, str], rounds: int) -> list[str]:
    """Figure 4: PROPFIND Depth 1 with the Nextcloud property set over HTTP, owner and
    recipient interleaved round by round (one disturbance lands on both)."""
    import requests

    port = _free_port()
    cmd = [sys.executable, "-m", "davserver", "serve", "--config",
           str(work / "etc" / "davserver.toml"), "--data-dir", str(work / "data"),
           "--host", "127.0.0.1", "--port", str(port)]
    log = open(work / "server.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(f"{base}/status.php", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        cases = {"owner (alice/big)": ("alice", f"{base}/remote.php/dav/files/alice/big"),
                 "recipient (bob/big)": ("bob", f"{base}/remote.php/dav/files/bob/big")}
        sessions = {}
        for name, (user, _url) in cases.items():
            sessions[name] = requests.Session()
            sessions[name].auth = (user, pw[user])
        times: dict[str, list[float]] = {k: [] for k in cases}
        sizes = {}
        for r in range(rounds + 1):
            for name, (_user, url) in cases.items():
                t = time.perf_counter()
                resp = sessions[name].request("PROPFIND", url, data=NC_BODY,
                                              headers={"Depth": "1"})
                took = time.perf_counter() - t
                assert resp.status_code == 207, resp.text[:300]
                sizes[name] = (len(resp.content), resp.content.count(b"<d:response>"))
                if r:  # round 0 warms up (logins, caches)
                    times[name].append(took)
        out = []
        for name, xs in times.items():
            xs.sort()
            out.append(f"| HTTP PROPFIND depth 1, NC property set, {name} | "
                       f"{statistics.median(xs) * 1000:.0f} ms (min {xs[0] * 1000:.0f}, max "
                       f"{xs[-1] * 1000:.0f}; {sizes[name][1]} responses, "
                       f"{sizes[name][0] / 1e6:.1f} MB) | "
                       f"{'<= 120 ms' if name.startswith('owner') else ''} |")
        o, rc = (statistics.median(times[k]) for k in cases)
        out.append(f"| HTTP recipient / owner | {rc / o:.2f}x | <= 1.2x |")
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--workdir")
    ap.add_argument("--fsync", action="store_true",
                    help="flush key files as a server does by default (off: as the tests)")
    ap.add_argument("--http", action="store_true", help="also figure 4, over HTTP")
    ap.add_argument("--master", action="store_true", help="master-key mode")
    ap.add_argument("--rounds", type=int, default=7, help="HTTP rounds (figure 4)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="share-bench-", dir=args.workdir))
    mode = "master-key" if args.master else "user-key"
    try:
        inst = make_instance(work, user_mode=not args.master, fsync=args.fsync)
        pw = {u: f"{u}-password" for u in ("alice", "bob", "carol", "dave")}
        for u, p in pw.items():
            inst.users.add(u, p)
        ids = {u: inst.unlock(u, p) for u, p in pw.items()}  # everyone has a key pair
        n = args.files
        print(f"creating {n} files ...", file=sys.stderr)
        figures: list[str] = []
        if args.master:
            inst.vault.make_dir("alice/big")
            for i in range(n):
                inst.vault.write_bytes(f"alice/big/f{i:05d}.txt", b"x" * 100)
            inst.shares.create("alice", "big", USER, "bob", permissions=ALL)
            inst.groups.add("team")
            inst.groups.add_user("team", "carol")
            inst.shares.create("alice", "big", GROUP, "team")
        else:
            _key_figures(inst, ids, n, figures)
        # 3. PROPFIND of the folder, owner vs recipient (best of 3 each).
        app = dav_app.build_app(inst)
        owner = min(_propfind(app, "alice", pw["alice"], "/remote.php/dav/files/alice/big")
                    for _ in range(3))
        recipient = min(_propfind(app, "bob", pw["bob"], "/remote.php/dav/files/bob/big")
                        for _ in range(3))
        figures.append(f"| PROPFIND depth 1 (allprop), in process, owner | "
                       f"{owner * 1000:.0f} ms | |")
        figures.append(f"| PROPFIND depth 1 (allprop), in process, recipient | "
                       f"{recipient * 1000:.0f} ms | |")
        figures.append(f"| in process recipient / owner | {recipient / owner:.2f}x | <= 1.2x |")
        inst.close()
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        if args.http:
            figures += _http_figures(work, pw, args.rounds)
        load += " before, " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " after"
        print(f"# share_bench ({n} files, {mode} mode, fsync "
              f"{'on' if args.fsync else 'off'}, load average {load})\n")
        print("| figure | value | target |\n|---|---|---|")
        print("\n".join(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
