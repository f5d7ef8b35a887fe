"""bench/s3_bench.py runs end to end at a tiny size (speed itself is not judged in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_s3_bench_produces_figures():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "s3_bench.py"),
                          "--size-mib", "8", "--files", "5"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = {ln.split("|")[1].strip(): ln for ln in res.stdout.splitlines()
            if ln.startswith("| ") and "---" not in ln}
    assert "davserver-s3" in rows and "rclone serve webdav, crypt over s3" in rows
    for name in ("davserver-s3", "rclone serve webdav, crypt over s3"):
        cells = [c.strip() for c in rows[name].split("|")[2:-1]]
        assert len(cells) == 5, rows[name]  # PUT, GET, PSS, PROPFIND, MOVE
        figures = [float(c) for c in cells]
        assert figures[0] > 0 and figures[1] > 0 and figures[2] > 0, rows[name]
    assert re.search(r"ratio davserver / rclone \| \d+\.\d+ \| \d+\.\d+", res.stdout)
