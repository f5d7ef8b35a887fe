"""bench/run --quick produces every figure (speed itself is not judged in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_produces_figures(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "run"), "--quick", "--runs", "1",
                          "--workdir", str(tmp_path), "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    reports = sorted((tmp_path / "results").glob("*-quick.md"))
    assert reports, "no report written"
    text = reports[-1].read_text()
    for figure in ("PUT", "GET", "PROPFIND", "Range", "overhead", "peak memory",
                   "PUT, curl -T", "GET, curl", "PUT, rclone copyto", "GET, rclone cat",
                   "Machine ceilings", "fraction of their limit", "vs 1 MiB", "Load average"):
        assert figure in text, f"{figure} missing from the report"
    rows = [ln for ln in text.splitlines() if ln.startswith("|") and "davserver" not in ln]
    numbers = re.findall(r"\d+\.\d+", "\n".join(rows))
    assert len(numbers) > 20, "the report has too few figures"
    assert list((tmp_path / "results").glob("*-quick.png")), "no chart written"
