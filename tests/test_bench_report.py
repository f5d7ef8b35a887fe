"""bench/report.py: the interleaved report's cells (median, spread, both ratios) and the
figures as fractions of the machine's ceilings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import report  # noqa: E402

FIGS = [dict(key="curl_put_mbs", title="512 MiB PUT, curl -T", short="curl PUT", unit="MB/s",
             better="higher"),
        dict(key="small_put_1", title="4 KiB PUT, 1 client", short="4K", unit="ops/s",
             better="higher")]
SERVERS = [("wsgidav", "plain"), ("wsgidav-1m", "plain 1M"),
           ("davserver-master", "ours"), ("davserver-master-nofsync", "ours nofsync")]
CEILINGS = {"AES-256-GCM seal, one core (MB/s)": 4000.0,
            "disk write 512 MiB + fsync (MB/s)": 500.0,
            "durable 4 KiB files, 1 thread (files/s)": 200.0,
            "durable 4 KiB files, 16 threads (files/s)": 2000.0,
            "loopback TCP copy (MB/s)": 2000.0}


def render(tmp_path, results) -> str:
    md = tmp_path / "r.md"
    missing = report.write_markdown(str(md), title="t", figures=FIGS, servers=SERVERS,
                                    results=results, info=[], notes=[], params=[],
                                    ceilings=CEILINGS, loads=[1.5, 2.5])
    assert missing == []
    return md.read_text()


def test_cells_give_median_spread_and_both_ratios(tmp_path):
    text = render(tmp_path, {
        "wsgidav": {"curl_put_mbs": [400.0, 300.0, 500.0], "small_put_1": [100.0]},
        "wsgidav-1m": {"curl_put_mbs": [800.0, 700.0, 900.0], "small_put_1": report.SKIP},
        "davserver-master": {"curl_put_mbs": [360.0, 200.0, 380.0], "small_put_1": [50.0]},
        "davserver-master-nofsync": {"curl_put_mbs": [720.0, 700.0, 760.0],
                                     "small_put_1": report.SKIP},
    })
    row = next(ln for ln in text.splitlines() if ln.startswith("| 512 MiB PUT, curl"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "400 MB/s [300–500]"
    assert cells[3] == "800 MB/s [700–900] (2.00×)"
    assert cells[4] == "360 MB/s [200–380] (0.90×; 0.45× vs 1 MiB)"
    assert cells[5] == "720 MB/s [700–760] (1.80×; 0.90× vs 1 MiB)"
    small = next(ln for ln in text.splitlines() if ln.startswith("| 4 KiB PUT"))
    assert "vs 1 MiB" not in small and "(0.50×)" in small
    assert "1.5, 2.5" in text


def test_fractions_use_the_lowest_ceiling_that_applies(tmp_path):
    text = render(tmp_path, {
        "wsgidav": {"curl_put_mbs": [1000.0], "small_put_1": [100.0]},
        "wsgidav-1m": {"curl_put_mbs": [1000.0], "small_put_1": report.SKIP},
        "davserver-master": {"curl_put_mbs": [250.0], "small_put_1": [50.0]},
        "davserver-master-nofsync": {"curl_put_mbs": [1000.0], "small_put_1": report.SKIP},
    })
    section = text.split("### Figures as a fraction of their limit", 1)[1]
    row = next(ln for ln in section.splitlines() if ln.startswith("| 512 MiB PUT, curl"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # plain: loopback only; durable davserver: the disk; without fsync: loopback again
    assert cells[1:] == ["50 % of loopback", "50 % of loopback", "50 % of disk+fsync",
                         "50 % of loopback"]
    small = next(ln for ln in section.splitlines() if ln.startswith("| 4 KiB PUT"))
    assert "25 % of durable files, 1 thread" in small


@pytest.mark.parametrize("server,key,expect", [
    ("wsgidav", "get_mbs", ["loopback"]),
    ("davserver-master", "get_mbs", ["loopback", "AES-GCM"]),
    ("davserver-master", "put_mbs", ["loopback", "AES-GCM", "disk+fsync"]),
    ("davserver-master-nofsync", "put_mbs", ["loopback", "AES-GCM"]),
    ("rclone-crypt", "put_mbs", ["loopback", "AES-GCM"]),
    ("davserver-master", "par_mbs", ["loopback", "AES-GCM ×2"]),
    ("wsgidav", "small_put_1", []),
])
def test_limits_per_server_and_figure(server, key, expect):
    assert [n for n, _v in report.limits(server, key, CEILINGS, 2)] == expect
