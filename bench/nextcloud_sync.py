#!/usr/bin/env python3
"""Nextcloud-client sync against davserver, next to its closest plain-WebDAV equivalent.

    bench/nextcloud_sync.py                 # 1,000 small files + one 1 GiB file
    bench/nextcloud_sync.py --large-mb 256  # a smaller large file
    bench/nextcloud_sync.py --quick         # 100 small files + 32 MB

Measures, on 127.0.0.1:
- nextcloudcmd's first sync (upload) of the tree to davserver (master-key mode; the large
  file goes up in chunks), then a no-op sync;
- rclone sync of the same tree to plain WsgiDAV (no encryption, no chunking), then a
  no-op rclone sync;
- the large file as one PUT to davserver, and as a chunked upload (MKCOL, PUT of
  ``--chunk-mb`` chunks, MOVE) to davserver: the chunked rate as a share of the PUT rate,
  ``--rounds`` times with the two interleaved (so machine load hits both alike); the
  median of each, and the ratio of each round, are reported with the load average.

Writes bench/results/<UTC ts>-nextcloud-sync.md and prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import BENCH_PASS, BENCH_USER, DavServer, PlainWsgiDAV  # noqa: E402

MB = 1_000_000


def make_tree(root: str, small: int, large_mb: int) -> int:
    total = 0
    for i in range(small):
        d = os.path.join(root, f"dir{i % 10:02d}", f"sub{i % 3}")
        os.makedirs(d, exist_ok=True)
        data = os.urandom(4096)
        with open(os.path.join(d, f"file{i:04d}.bin"), "wb") as f:
            f.write(data)
        total += len(data)
    with open(os.path.join(root, "large.bin"), "wb") as f:
        for _ in range(large_mb):
            f.write(os.urandom(MB))
    return total + large_mb * MB


def settle() -> None:
    subprocess.run(["sync"], check=False)


def timed(cmd: list[str], env: dict | None = None) -> float:
    settle()
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return elapsed


def nextcloudcmd(local: str, server: DavServer, home: str) -> list[str]:
    return ["nextcloudcmd", "--non-interactive", "--silent", "-u", BENCH_USER, "-p", BENCH_PASS,
            local, f"http://127.0.0.1:{server.port}"]


def rclone(src: str, wsgidav: PlainWsgiDAV) -> list[str]:
    return ["rclone", "sync", src, ":webdav:/", f"--webdav-url=http://127.0.0.1:{wsgidav.port}/",
            "--webdav-vendor=other", "--transfers", "4", "--checkers", "8", "-q"]


def single_put(server: DavServer, path: str, name: str) -> float:
    settle()
    with open(path, "rb") as f:
        t = time.perf_counter()
        r = requests.put(f"http://127.0.0.1:{server.port}{server.base}{name}", data=f,
                         auth=(BENCH_USER, BENCH_PASS))
        elapsed = time.perf_counter() - t
    assert r.status_code in (201, 204), r.text
    return elapsed


class FileSlice:
    """The next ``length`` bytes of an open file as a request body, streamed as requests
    streams a whole file for the single PUT (so both clients read the same way)."""

    def __init__(self, f, length: int) -> None:
        self._f, self._left = f, length

    def __len__(self) -> int:
        return self._left

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def __iter__(self):
        while data := self.read(1 << 16):
            yield data


def chunked_put(server: DavServer, path: str, name: str, chunk: int) -> tuple[float, float]:
    """Seconds for the whole chunked upload, and for its MOVE alone."""
    s = requests.Session()
    s.auth = (BENCH_USER, BENCH_PASS)
    base = f"http://127.0.0.1:{server.port}"
    up = f"{base}/remote.php/dav/uploads/{BENCH_USER}/bench{time.time_ns()}"
    size = os.path.getsize(path)
    settle()
    t = time.perf_counter()
    assert s.request("MKCOL", up).status_code == 201
    with open(path, "rb") as f:
        for n, at in enumerate(range(0, size, chunk), 1):
            r = s.put(f"{up}/{n:05d}", data=FileSlice(f, min(chunk, size - at)),
                      headers={"OC-Total-Length": str(size)})
            assert r.status_code == 201, r.text
    moving = time.perf_counter()
    r = s.request("MOVE", f"{up}/.file", headers={
        "Destination": f"{base}{server.base}{name}", "OC-Total-Length": str(size)})
    done = time.perf_counter()
    assert r.status_code in (201, 204), r.text
    return done - t, done - moving


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large-mb", type=int, default=1024)
    ap.add_argument("--chunk-mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3,
                    help="single PUT and chunked upload rounds, interleaved")
    ap.add_argument("--large-only", action="store_true",
                    help="only the single PUT / chunked upload comparison")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    if a.quick:
        a.small, a.large_mb = 100, 32
    for tool in ("nextcloudcmd", "rclone", "davserver"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    work = tempfile.mkdtemp(prefix="ncbench-", dir=a.workdir)
    dav, plain = DavServer(work), PlainWsgiDAV(work)
    try:
        dav.prepare()
        dav.start()
        plain.start()
        src = os.path.join(work, "src")
        os.makedirs(src)
        total = make_tree(src, a.small, a.large_mb)
        local = os.path.join(work, "nc-local")
        if not a.large_only:
            shutil.copytree(src, local)
        home = os.path.join(work, "nc-home")
        os.makedirs(home)
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=home)
        if not a.large_only:
            nc_first = timed(nextcloudcmd(local, dav, home), env)
            nc_noop = timed(nextcloudcmd(local, dav, home), env)
            rc_first = timed(rclone(src, plain))
            rc_noop = timed(rclone(src, plain))
        large = os.path.join(src, "large.bin")
        rounds = []
        for i in range(a.rounds):
            # Alternate which goes first, so neither always meets a just-flushed disk.
            if i % 2:
                chunk_s, move_s = chunked_put(dav, large, "chunked-large.bin", a.chunk_mb * MB)
                put_s = single_put(dav, large, "put-large.bin")
            else:
                put_s = single_put(dav, large, "put-large.bin")
                chunk_s, move_s = chunked_put(dav, large, "chunked-large.bin", a.chunk_mb * MB)
            rounds.append((put_s, chunk_s, move_s, os.getloadavg()[0]))
    finally:
        dav.stop()
        plain.stop()
    size = a.large_mb * MB
    put_s = statistics.median(r[0] for r in rounds)
    chunk_s = statistics.median(r[1] for r in rounds)
    rows = [] if a.large_only else [
        ("first sync, nextcloudcmd -> davserver (master-key)", nc_first, total / nc_first),
        ("first sync, rclone sync -> plain WsgiDAV", rc_first, total / rc_first),
        ("no-op sync, nextcloudcmd -> davserver", nc_noop, None),
        ("no-op sync, rclone sync -> plain WsgiDAV", rc_noop, None),
    ]
    rows += [
        (f"large file, one PUT -> davserver ({a.large_mb} MB), median of {a.rounds}", put_s,
         size / put_s),
        (f"large file, chunked v2 -> davserver ({a.chunk_mb} MB chunks), median of "
         f"{a.rounds}", chunk_s, size / chunk_s),
    ]
    ts = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"# Nextcloud-client sync, {ts}", "",
             (f"{a.small} files of 4 KiB in 30 folders + " if not a.large_only else "")
             + f"one file of {a.large_mb} MB ({total / MB:.0f} MB in all), loopback, "
             f"{os.cpu_count()} cores.", "",
             "| what | seconds | MB/s |", "|---|---:|---:|"]
    lines += [f"| {w} | {s:.2f} | {'' if r is None else f'{r / MB:.1f}'} |" for w, s, r in rows]
    lines += ["", "Rounds (single PUT and chunked upload interleaved):", "",
              "| round | PUT MB/s | chunked MB/s | of which MOVE s | chunked / PUT | load avg |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {size / p / MB:.0f} | {size / c / MB:.0f} | {m:.2f} | {p / c:.2f} "
              f"| {load:.2f} |" for i, (p, c, m, load) in enumerate(rounds)]
    ratios = [p / c for p, c, _m, _l in rounds]
    lines += ["", f"Chunked upload rate / single PUT rate: {statistics.median(ratios):.2f} "
              f"(median of the rounds' ratios; range {min(ratios):.2f}-{max(ratios):.2f})"]
    text = "\n".join(lines) + "\n"
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{ts}-nextcloud-sync.md"), "w") as f:
        f.write(text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
