#!/usr/bin/env python3
"""Large PUT/GET MB/s with http.client, curl and rclone, the servers taking turns.

The quick way to look at one thing bench/run also measures: every round uploads and
downloads one file of SIZE_MIB with each client against each server in turn, page cache
written back (sync) before each transfer, and prints the median, min-max and the ratio of
medians to the first server, and the server's CPU time per GiB (user + system of its
process tree: what a loaded machine disturbs least, so the fairer A/B of two versions).

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


def transfer(client: str, s, size: int, src: str) -> tuple[float, float, float, float]:
    """(PUT MB/s, GET MB/s, server CPU s/GiB of the PUT, of the GET)."""
    cpu: list[float] = []

    def timed(fn, *a):
        c0 = measure.tree_cpu(s.pid)
        v = fn(*a)
        cpu.append((measure.tree_cpu(s.pid) - c0) * (1 << 30) / size)
        return v

    put, get = _transfer(client, s, size, src, timed)
    return put, get, cpu[0], cpu[1]


def _transfer(client: str, s, size: int, src: str, timed) -> tuple[float, float]:
    rel = f"big/{client}.bin"
    cl = measure.Client(s.port, s.base, s.auth_headers())
    cl.mkcol("big")
    cl.request("DELETE", rel, ok=(200, 204, 404))  # every PUT makes a new file
    os.sync()
    if client == "http.client":
        put = timed(lambda: measure.big_put(cl, rel, size, s.pid)[0])
        os.sync()
        get = timed(lambda: measure.big_get(cl, rel, size, s.pid)[0])
        cl.close()
        return put, get
    cl.close()
    if client == "curl":
        put = timed(clients.curl_put, s.port, s.base, s.user, s.password, rel, src, size)
        os.sync()
        return put, timed(clients.curl_get, s.port, s.base, s.user, s.password, rel, size)
    rc = clients.Rclone(s.port, s.base, s.user, s.password)
    put = timed(rc.put, rel, src, size)
    os.sync()
    return put, timed(rc.get, rel, size)


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
                    put, get, cput, cget = transfer(c, s, size, src)
                    res.setdefault((c, "PUT", n), []).append(put)
                    res.setdefault((c, "GET", n), []).append(get)
                    res.setdefault((c, "PUT cpu", n), []).append(cput)
                    res.setdefault((c, "GET cpu", n), []).append(cget)
            print(f"round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
        for c in which:
            for d in ("PUT", "GET"):
                base = statistics.median(res[(c, d, names[0])])
                for n in names:
                    v = res[(c, d, n)]
                    m = statistics.median(v)
                    cpu = statistics.median(res[(c, d + " cpu", n)])
                    cbase = statistics.median(res[(c, d + " cpu", names[0])])
                    print(f"{c:11s} {d} {n:15s} {m:7.0f} MB/s [{min(v):.0f}-{max(v):.0f}] "
                          f"{m / base:.2f}x   server CPU {cpu:5.2f} s/GiB "
                          f"({cpu / cbase:.2f}x)")
    finally:
        for s in running.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["plain-1m", "plain", "master-nofsync", "master"])
