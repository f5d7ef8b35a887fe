"""bench/soak.py in miniature: a few clients for seconds, no error, every file read back.

Speed and the RSS/fd slopes are not judged here (no wall-clock thresholds in tests); the
real run is 50 clients x 10 minutes, see bench/results/soak-*.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_soak_smoke_has_no_errors_and_verifies_every_file(tmp_path):
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--clients", "5",
                          "--minutes", "0.2", "--sample", "1", "--workdir", str(tmp_path),
                          "--results", str(tmp_path / "results"), "--json", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["first_errors"]
    assert result["files_expected"] > 0
    assert result["files_verified"] == result["files_expected"]
    kinds = result["ops_by_kind"]
    for op in ("put", "get", "range", "propfind", "move", "copy", "delete", "mkcol", "lock",
               "shared_put", "shared_get", "shared_lock"):
        assert kinds.get(op, 0) > 0, f"no {op} operation ran"
    assert result["samples"] >= 2 and result["rss_mib_last"] > 0 and result["fds_last"] > 0
    report = sorted((tmp_path / "results").glob("soak-*.md"))
    assert report and "**Result: PASS**" in report[-1].read_text()


def _soak_module():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import soak
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return soak


def test_slope_is_least_squares_per_minute():
    soak = _soak_module()
    assert soak.slope_per_minute([(0, 10), (30, 11), (60, 12), (90, 13)]) == 2.0
    assert soak.slope_per_minute([(0, 5), (60, 7), (120, 5)]) == 0.0
    assert soak.slope_per_minute([(0, 5)]) == 0.0


def test_shared_versions_accept_only_whole_written_versions():
    soak = _soak_module()
    v = soak.SharedVersions()
    v.add("shared/a", 7, 1000)
    whole = soak.content(7, 1000)
    assert v.legal("shared/a", whole)
    assert not v.legal("shared/a", whole[:999])
    assert not v.legal("shared/a", whole[:500] + soak.content(8, 1000)[500:])
    assert not v.legal("shared/b", whole)
