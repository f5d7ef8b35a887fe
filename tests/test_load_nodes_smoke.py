"""bench/load_nodes.py in miniature: two nodes that share nothing on disk (a data dir
each, keys in PostgreSQL, file contents on moto S3, locks in Redis) behind nginx, a few
clients for seconds: no error, every file read back through the proxy, both nodes served
requests, scan clean, no key file on either node's disk.

Throughput is not judged here (no wall-clock thresholds in tests); the real run is 50
clients x 300 s with 1 and 2 nodes, see bench/results/load-nodes-*.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_two_nodes_behind_nginx_lose_nothing(tmp_path):
    # No --workdir: PostgreSQL runs as an unprivileged user, which cannot enter pytest's
    # private temp tree; the script makes (and removes) its own under /tmp.
    out = tmp_path / "load.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "load_nodes.py"),
                          "--clients", "4", "--seconds", "8", "--nodes", "2",
                          "--max-size", str(256 * 1024), "--sample", "1",
                          "--results", str(tmp_path / "results"),
                          "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert run["nodes"] == 2 and run["backends_used"] == 2
    assert run["errors"] == 0, run["first_errors"]
    assert run["files_expected"] > 0 and run["files_verified"] == run["files_expected"]
    assert run["scan_problems"] == 0
    assert run["key_files_on_disk"] == 0
    for op in ("put", "get", "propfind", "move", "delete", "lock"):
        assert run["ops_by_kind"].get(op, 0) > 0, f"no {op} operation ran"
        p50, p99 = run["latency_ms"][op]
        assert 0 < p50 <= p99
    assert all(n["rss_mib_last"] > 0 and n["fds_last"] > 0 for n in run["per_node"])
