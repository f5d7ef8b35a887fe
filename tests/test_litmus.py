"""The litmus WebDAV compliance suite against a live server (warnings allowed, no failures)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.live import LiveServer, require_tool

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for [`'](\w+)': of (\d+) tests run: (\d+) passed, "
                     r"(\d+) failed")


@pytest.fixture(params=["default", "3 workers"])
def litmus_server(request, server, tmp_path):
    """The module's server (default workers), and one with three worker processes so the
    lock suite's requests are spread over processes that must agree on every lock."""
    if request.param == "default":
        yield server
        return
    srv = LiveServer(tmp_path / "srv3", config={"server": {"workers": 3}}).create().start()
    yield srv
    srv.stop()


def test_litmus(litmus_server, tmp_path):
    server = litmus_server
    litmus = require_tool("litmus")
    env = dict(os.environ, TESTS=" ".join(SUITES))
    res = subprocess.run([litmus, server.url("alice"), "alice", server.users["alice"]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    out = res.stdout + res.stderr
    (tmp_path / "litmus.out").write_text(out)
    summaries = {m.group(1): m for m in SUMMARY.finditer(out)}
    lines = [ln for ln in out.splitlines()
             if "summary for" in ln or "FAIL" in ln or "WARNING" in ln]
    detail = ("\n".join(lines) + f"\n(full output: {tmp_path / 'litmus.out'}, debug log: "
              f"{tmp_path / 'debug.log'})\nserver log tail:\n{server.log_tail(30)}")
    assert res.returncode == 0, f"litmus exited {res.returncode}\n{detail}"
    for suite in SUITES:
        m = summaries.get(suite)
        assert m is not None, f"no summary for suite {suite!r}\n{detail}"
        assert int(m.group(4)) == 0, f"suite {suite!r} has failures\n{detail}"
        assert int(m.group(2)) > 0 and m.group(2) == m.group(3), f"{suite}: {m.group(0)}"
