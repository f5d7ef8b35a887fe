#!/usr/bin/env python3
"""Large PUT/GET MB/s with http.client, curl and rclone, the servers taking turns.

The quick way to look at one thing bench/run also measures: every round uploads and
downloads one file of SIZE_MIB with each client against each server in turn, page cache
written back (sync) before each transfer, and prints the median, min-max and the ratio of
medians to the first server.

    bench/interleaved_large.py                           # plain-1m plain master-nofsync master
    ROUNDS=5 SIZE_MIB=512 CLIENTS=curl bench/interleaved_large.py plain-1m master-nofsync

A davserver name may end in ``@TREE``: that server runs the davserver package found in
TREE (a checkout or ``git archive`` of another commit), for an A/B of two versions:

    bench/interleaved_large.py plain-1m master-nofsync@/tmp/base master-nofsync
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import clients  # noqa: E402
import measure  # noqa: E402
import servers  # noqa: E402

MiB = 1 << 20


class TreeDavServer(servers.DavServer):
    """davserver run from another source tree (PYTHONPATH), for A/B runs of two versions."""

    def __init__(self, workdir: str, tree: str, **kw) -> None:
        super().__init__(workdir, **kw)
        self.tree = tree

    def env(self) -> dict:
        env = super().env()
        env["PYTHONPATH"] = self.tree
        return env


def start(name: str, workdir: str):
    kind, _, tree = name.partition("@")
    if kind.startswith("plain"):
        s = servers.PlainWsgiDAV(workdir, block_size=MiB if kind.endswith("1m") else 262144)
    else:
        kw = dict(mode="user" if "user" in kind else "master", fsync="nofsync" not in kind)
        folder = os.path.join(workdir, name.replace("/", "_"))
        s = TreeDavServer(folder, tree, **kw) if tree else servers.DavServer(folder, **kw)
    s.prepare()
    s.start()
    return s


def transfer(client: str, s, size: int, src: str) -> tuple[float, float]:
    rel = f"big/{client}.bin"
    if client == "http.client":
        cl = measure.Client(s.port, s.base, s.auth_headers())
        cl.mkcol("big")
        os.sync()
        put = measure.big_put(cl, rel, size, s.pid)[0]
        os.sync()
        get = measure.big_get(cl, rel, size, s.pid)[0]
        cl.close()
        return put, get
    cl = measure.Client(s.port, s.base, s.auth_headers())
    cl.mkcol("big")
    cl.close()
    os.sync()
    if client == "curl":
        put = clients.curl_put(s.port, s.base, s.user, s.password, rel, src, size)
        os.sync()
        return put, clients.curl_get(s.port, s.base, s.user, s.password, rel, size)
    rc = clients.Rclone(s.port, s.base, s.user, s.password)
    put = rc.put(rel, src, size)
    os.sync()
    return put, rc.get(rel, size)


def main(names: list[str]) -> None:
    rounds = int(os.environ.get("ROUNDS", "3"))
    size = int(os.environ.get("SIZE_MIB", "256")) * MiB
    which = os.environ.get("CLIENTS", "http.client,curl,rclone").split(",")
    workdir = tempfile.mkdtemp(prefix="ab-large-")
    running = {}
    res: dict[tuple[str, str, str], list[float]] = {}
    try:
        src = clients.make_source(workdir, size)
        for n in names:
            running[n] = start(n, workdir)
        for r in range(rounds):
            for c in which:
                order = list(running.items())
                order = order[r % len(order):] + order[:r % len(order)]
                for n, s in order:
                    put, get = transfer(c, s, size, src)
                    res.setdefault((c, "PUT", n), []).append(put)
                    res.setdefault((c, "GET", n), []).append(get)
            print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
        for c in which:
            for d in ("PUT", "GET"):
                base = statistics.median(res[(c, d, names[0])])
                for n in names:
                    v = res[(c, d, n)]
                    m = statistics.median(v)
                    print(f"{c:11s} {d} {n:15s} {m:7.0f} MB/s [{min(v):.0f}-{max(v):.0f}] "
                          f"{m / base:.2f}x")
    finally:
        for s in running.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["plain-1m", "plain", "master-nofsync", "master"])
