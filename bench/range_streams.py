#!/usr/bin/env python3
"""Range GETs: 1-byte ranges in a large file, and one download split over 8 streams.

What multi-stream clients (rclone ``--multi-thread-streams``, download managers) and
resumed downloads do. The servers take turns in every round, as in interleaved_small.py:

- ``range_srv_ms``: median of 100 1-byte Range GETs at random offsets minus the median
  of 100 GETs of an empty file on the same connection (the round trip), i.e. server time;
- ``single_mbs``: one GET of the whole download file; ``streams_mbs``: the same bytes as
  8 Range GETs on 8 connections at once; ``gain`` = streams / single.

    bench/range_streams.py                        # plain master, 4 GiB range file, 1 GiB
    RANGE_MIB=256 DOWN_MIB=256 ROUNDS=2 bench/range_streams.py plain master user
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
from interleaved_small import start  # noqa: E402

MiB = 1 << 20
STREAMS = 8


def split_download(s, rel: str, size: int, streams: int = STREAMS) -> float:
    """MB/s of ``size`` bytes fetched as ``streams`` Range GETs in parallel."""
    part = -(-size // streams)
    errors: list[str] = []

    def one(i: int) -> None:
        first, last = i * part, min(size, (i + 1) * part) - 1
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=600)
        try:
            c.request("GET", s.base + rel, headers={**s.auth_headers(),
                                                    "Range": f"bytes={first}-{last}"})
            r = c.getresponse()
            buf, got = bytearray(4 * MiB), 0
            while n := r.readinto(buf):
                got += n
            if r.status != 206 or got != last - first + 1:
                errors.append(f"stream {i}: HTTP {r.status}, {got} bytes")
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    if errors:
        raise measure.BenchError("; ".join(errors))
    return size / 1e6 / secs


def main(names: list[str]) -> None:
    rounds = int(os.environ.get("ROUNDS", "3"))
    range_size = int(os.environ.get("RANGE_MIB", "4096")) * MiB
    down_size = int(os.environ.get("DOWN_MIB", "1024")) * MiB
    workdir = tempfile.mkdtemp(prefix="ab-range-")
    running = {}
    res: dict[tuple[str, str], list[float]] = {}
    try:
        for n in names:
            s = running[n] = start(n, workdir)
            c = measure.Client(s.port, s.base, s.auth_headers())
            c.put_stream("range.bin", range_size)
            c.put_stream("down.bin", down_size)
            c.request("PUT", "empty.bin", body=b"")
            c.close()
        for r in range(rounds):
            for n, s in running.items():
                c = measure.Client(s.port, s.base, s.auth_headers())
                total, empty = measure.range_gets(c, "range.bin", range_size, 100, "empty.bin",
                                                  seed=r + 1)
                res.setdefault((n, "range_srv_ms"), []).append(total - empty)
                os.sync()
                t0 = time.perf_counter()
                c.get_stream("down.bin", down_size)
                res.setdefault((n, "single_mbs"), []).append(
                    down_size / 1e6 / (time.perf_counter() - t0))
                c.close()
                res.setdefault((n, "streams_mbs"), []).append(
                    split_download(s, "down.bin", down_size))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        print(f"{rounds} rounds, servers taking turns; range file {range_size // MiB} MiB, "
              f"download {down_size // MiB} MiB; median [min-max]")
        for n in names:
            line = [f"{n:16s}"]
            for key in ("range_srv_ms", "single_mbs", "streams_mbs"):
                v = res[(n, key)]
                line.append(f"{key} {statistics.median(v):8.3f} [{min(v):.3f}-{max(v):.3f}]")
            gains = [p / q for p, q in zip(res[(n, "streams_mbs")], res[(n, "single_mbs")],
                                           strict=True)]
            line.append(f"gain {statistics.median(gains):.2f}x")
            print("  ".join(line))
    finally:
        for s in running.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["plain", "master"])
