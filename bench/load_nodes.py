#!/usr/bin/env python3
"""Load through nginx to 1 and then 2 stateless davserver nodes (issue #18).

Why: the cluster tests show each cross-node rule once; this shows that many clients mixing
every operation through a round-robin proxy for minutes lose nothing, see no error, and
that a second node adds throughput. Each configuration runs on fresh services started
here, the same ones the tests use (tests/pg_server.py, redis_server.py, s3_server.py,
nginx_server.py, live.py): PostgreSQL metadata, Redis for locks/throttling/sessions,
file contents on the moto S3 server (objects named by file ID), the key store in
PostgreSQL (``key_storage_root = "db:"``) and a data dir per node, so the nodes share
nothing but those three services; and nginx in front (also with one node, so the
proxy's cost is in both figures).

The clients are bench/soak.py's (own folder each, plus a shared folder where all of them
contend; PUT sizes log-uniform 4 KiB .. 10 MiB; PROPFIND, GET, Range, MOVE, COPY,
DELETE, MKCOL, LOCK/UNLOCK); at the end every file a client must have is read back
through the proxy and its hash checked, and ``encryption:scan`` must find no problem.

    bench/load_nodes.py                          # 50 clients x 300 s, 1 node then 2
    bench/load_nodes.py --clients 8 --seconds 20 --nodes 2   # smoke

Writes bench/results/load-nodes-<UTC ts>.md (and stdout). Exit 1 on any error or lost file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import soak  # noqa: E402  (bench/ is not a package)

from tests.live import LiveServer, kill_all  # noqa: E402
from tests.nginx_server import NginxServer  # noqa: E402
from tests.pg_metadata import new_schema  # noqa: E402
from tests.pg_server import PgServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.s3_server import MotoServer  # noqa: E402

KiB, MiB = 1024, 1024 * 1024


def start_nodes(root: Path, n: int, pg: PgServer, redis: RedisServer,
                moto: MotoServer, keys: str) -> list[LiveServer]:
    """``n`` nodes on one config. keys="files": one data dir (key store) shared by all;
    keys="db": the key store in PostgreSQL and a data dir per node (no shared filesystem;
    needs a build with the database key store)."""
    url = new_schema(pg.dsn)
    s3 = moto.config_section(moto.new_bucket(), prefix="homes", objects_by="id")
    config = {"database": {"url": url}, "redis": {"url": redis.url},
              "storage": {"backend": "s3"}, "storage.s3": s3, "server": {"workers": 2}}
    if keys == "db":
        config["encryption"] = {"key_storage_root": "db:"}
    first = LiveServer(root / "node0", users={"alice": None}, config=config).create()
    nodes = [first]
    for i in range(1, n):
        node = LiveServer(root / f"node{i}", users={}, config=config)
        node.root.mkdir(parents=True, exist_ok=True)
        node.users = dict(first.users)
        if keys == "files":
            node.data_dir, node.config = first.data_dir, first.config
        else:  # the same config and instance secret, nothing else shared
            shutil.copytree(first.etc, node.etc)
            node.config = str(node.etc / "davserver.toml")
        nodes.append(node)
    for node in nodes:
        node.spawn()
    for node in nodes:
        node.wait_ready()
    return nodes


def run_config(args, root: Path, n: int, pg, redis, moto) -> dict:
    nodes = start_nodes(root, n, pg, redis, moto, args.keys)
    proxy = NginxServer(root / "nginx", [node.port for node in nodes]).start()
    try:
        port = int(urllib.parse.urlsplit(proxy.base).port)
        user, password = "alice", nodes[0].users["alice"]
        import base64
        auth = {"Authorization": "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()}
        base = "/remote.php/dav/files/alice/"
        stats, shared = soak.Stats(), soak.SharedVersions()
        setup = soak.Conn(port, auth)
        st, _, body = setup.request("MKCOL", base + "shared/")
        if st != 201:
            stats.error(f"MKCOL shared/: HTTP {st} {body[:200]!r}")
        setup.close()
        samplers = [soak.Sampler(node.proc.pid, args.sample) for node in nodes]
        for s in samplers:
            s.start()
        t0 = time.monotonic()
        stop_at = t0 + args.seconds
        clients = [soak.Client(i, base, port, auth, stop_at, stats, shared,
                               seed=args.seed * 1000 + i, sizes=(4 * KiB, args.max_size))
                   for i in range(args.clients)]
        soak.run_clients(clients, stop_at, stats)
        elapsed = time.monotonic() - t0
        for s in samplers:
            s.done.set()
            s.join(30)
        expected = sum(len(c.files) for c in clients)
        verified = sum(c.verify() for c in clients)
        scan = json.loads(nodes[-1].run_cli("encryption:scan", "--output", "json",
                                            check=False, timeout=1800).stdout or "{}")
        problems = scan.get("problems", ["scan gave no report"])
        for node in nodes:
            if node.proc.poll() is not None:
                stats.error(f"node on {node.port} exited: {node.log_tail(20)}")
        key_files_on_disk = sum(1 for node in nodes
                                for _p in (Path(node.data_dir) / "keys").rglob("*.json"))
        per_node = []
        for s in samplers:
            xs = s.samples
            half = [x for x in xs if x[0] >= xs[-1][0] / 2] if xs else []
            per_node.append({
                "rss_mib_first": round(xs[0][1] / MiB, 1) if xs else 0,
                "rss_mib_last": round(xs[-1][1] / MiB, 1) if xs else 0,
                "rss_slope_second_half": round(soak.slope_per_minute(
                    [(t, r / MiB) for t, r, _f, _n in half]), 2),
                "fds_first": xs[0][2] if xs else 0, "fds_last": xs[-1][2] if xs else 0,
                "fd_slope_second_half": round(soak.slope_per_minute(
                    [(t, f) for t, _r, f, _n in half]), 2),
            })
        ops = sum(stats.ops.values())
        return {"nodes": n, "elapsed_s": round(elapsed, 1), "ops": ops,
                "ops_per_s": round(ops / elapsed, 1), "errors": len(stats.errors),
                "first_errors": stats.errors[:10], "files_expected": expected,
                "files_verified": verified, "scan_problems": len(problems),
                "key_files_on_disk": key_files_on_disk,
                "latency_ms": stats.percentiles(), "ops_by_kind": dict(stats.ops),
                "per_node": per_node, "load_end": os.getloadavg()[0],
                "backends_used": len(proxy.backends_used())}
    finally:
        proxy.stop()
        for node in nodes:
            node.stop()


def report(results: list[dict], args) -> str:
    lines = [f"# Load through nginx: {args.clients} clients x {args.seconds} s, "
             f"PUT 4 KiB-{args.max_size // MiB} MiB, keys in {args.keys}", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
             f"{os.cpu_count()} cores; PostgreSQL + Redis + moto S3 + nginx on the same "
             "machine, each node 2 worker processes.", "",
             "| nodes | ops/s | ops | errors | files verified | scan problems | "
             "key files on node disks | backends used | load at end |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['nodes']} | {r['ops_per_s']} | {r['ops']} | {r['errors']} | "
                     f"{r['files_verified']}/{r['files_expected']} | {r['scan_problems']} | "
                     f"{r['key_files_on_disk']} | "
                     f"{r['backends_used']} | {r['load_end']:.1f} |")
    if len(results) == 2 and results[0]["ops_per_s"]:
        ratio = results[1]["ops_per_s"] / results[0]["ops_per_s"]
        lines += ["", f"{results[1]['nodes']} nodes / {results[0]['nodes']}: **{ratio:.2f}x**"]
    ops = sorted({op for r in results for op in r["latency_ms"]})
    lines += ["", "Latency p50 / p99 (ms) per operation:", "",
              "| op | " + " | ".join(f"{r['nodes']} node(s)" for r in results) + " |",
              "|---|" + "---|" * len(results)]
    for op in ops:
        cells = ["{} / {}".format(*r["latency_ms"][op]) if op in r["latency_ms"] else "-"
                 for r in results]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "Per node RSS (MiB, process tree) and open fds, first -> last, slope per "
              "minute over the second half:", ""]
    for r in results:
        for i, p in enumerate(r["per_node"]):
            lines.append(f"- {r['nodes']} node(s), node {i}: RSS {p['rss_mib_first']} -> "
                         f"{p['rss_mib_last']} ({p['rss_slope_second_half']:+}/min), fds "
                         f"{p['fds_first']} -> {p['fds_last']} ({p['fd_slope_second_half']:+}/min)")
    for r in results:
        if r["first_errors"]:
            lines += ["", f"First errors with {r['nodes']} node(s):", "```",
                      *r["first_errors"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--nodes", default="1,2", help="node counts to run, in order")
    p.add_argument("--max-size", type=int, default=10 * MiB)
    p.add_argument("--keys", choices=("db", "files"), default="db",
                   help="db: key store in PostgreSQL, a data dir per node (nothing shared "
                   "on disk); files: one data dir with the key store shared by the nodes")
    p.add_argument("--sample", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=None)
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--json", default=None, help="also write the figures here as JSON")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="davserver-load-", dir=args.workdir))
    os.chmod(root, 0o755)
    pg = PgServer(root / "pg").start()
    redis = RedisServer(root / "redis").start()
    moto = MotoServer().start()
    results = []
    try:
        for n in (int(x) for x in args.nodes.split(",")):
            results.append(run_config(args, root / f"run{n}", n, pg, redis, moto))
    finally:
        moto.stop()
        redis.stop()
        pg.stop()
        kill_all()
    text = report(results, args)
    print(text)
    os.makedirs(args.results, exist_ok=True)
    out = os.path.join(args.results, time.strftime("load-nodes-%Y%m%dT%H%M%SZ.md",
                                                   time.gmtime()))
    Path(out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    shutil.rmtree(root, ignore_errors=True)
    ok = all(r["errors"] == 0 and r["files_verified"] == r["files_expected"]
             and r["scan_problems"] == 0
             and (args.keys == "files" or r["key_files_on_disk"] == 0) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
