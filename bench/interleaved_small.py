#!/usr/bin/env python3
"""Small-file PUT/GET ops/s, with the servers taking turns in every round.

bench/run measures one server after another, so a disturbance of the disk (write-back,
trims after a large delete) lands on whichever server runs then. Here every round runs
1000 x 4 KiB PUTs and GETs against each server in turn, with 1 and 4 clients, and the
ratios compare medians over the rounds, so a disturbance hits all of them alike.

    bench/interleaved_small.py                          # plain, master, master-nofsync
    ROUNDS=6 bench/interleaved_small.py plain master user
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import measure  # noqa: E402
import servers  # noqa: E402


def start(name: str, workdir: str):
    if name == "plain":
        s = servers.PlainWsgiDAV(workdir)
    else:
        s = servers.DavServer(os.path.join(workdir, name),
                              mode="user" if "user" in name else "master",
                              fsync="nofsync" not in name)
    s.prepare()
    s.start()
    return s


def main(names: list[str]) -> None:
    rounds = int(os.environ.get("ROUNDS", "4"))
    workdir = tempfile.mkdtemp(prefix="ab-small-")
    running = {}
    results: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    try:
        for n in names:
            running[n] = start(n, workdir)
        for r in range(rounds):
            for clients in (1, 4):
                for n, s in running.items():
                    headers = s.auth_headers()
                    folder = f"r{r}c{clients}"
                    c = measure.Client(s.port, s.base, headers)
                    c.mkcol(folder)
                    c.close()
                    os.sync()
                    put, get = measure.small_ops(s.port, s.base, headers, folder, 1000,
                                                 clients)
                    puts, gets = results.setdefault((n, clients), ([], []))
                    puts.append(put)
                    gets.append(get)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        for clients in (1, 4):
            base_put, base_get = (statistics.median(x) for x in results[(names[0], clients)])
            for n in names:
                puts, gets = results[(n, clients)]
                p, g = statistics.median(puts), statistics.median(gets)
                print(f"{clients} client(s) {n:16s} PUT {p:6.0f} ops/s ({p / base_put:.2f}x) "
                      f"GET {g:6.0f} ops/s ({g / base_get:.2f}x)  "
                      f"PUT by round {[round(x) for x in puts]}")
    finally:
        for s in running.values():
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["plain", "master", "master-nofsync"])
