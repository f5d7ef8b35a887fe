"""A server killed in the middle of an upload keeps the previous version, leaks no temp
files and no keys, and comes back on its own."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.live import wait_until

MiB = 1024 * 1024
V1_SIZE = 64 * MiB
V2_SIZE = 256 * MiB


def _random_blocks(total: int, block: int = MiB):
    sent = 0
    while sent < total:
        n = min(block, total - sent)
        yield os.urandom(n)
        sent += n


def _tmp_bytes(srv) -> int:
    tmp = Path(srv.data_dir) / "tmp"
    return sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())


def _assert_consistent(srv) -> None:
    assert srv.tmp_files() == [], f"temp files left behind: {srv.tmp_files()}"
    keys = srv.key_files()
    files = srv.stored_files()
    assert len(keys) == len(files), (f"{len(keys)} key files for {len(files)} stored files:"
                                     f"\nkeys: {[k.name for k in keys]}\nfiles: {files}")


@pytest.mark.parametrize("kill_after", [0, 32 * MiB, V2_SIZE - 16 * MiB],
                         ids=["after-headers", "after-32MiB", "near-end"])
def test_kill_during_upload_keeps_previous_version(server_factory, kill_after):
    srv = server_factory(users={"alice": None})
    url = srv.url("alice", "big.bin")
    s = srv.session("alice")
    v1 = os.urandom(V1_SIZE)
    v1_hash = hashlib.sha256(v1).hexdigest()
    assert s.put(url, data=v1).status_code == 201
    del v1
    s.close()
    _assert_consistent(srv)

    u = urlsplit(url)
    cred = base64.b64encode(f"alice:{srv.users['alice']}".encode()).decode()
    head = (f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Basic {cred}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {V2_SIZE}\r\n\r\n").encode()
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        sock.sendall(head)
        sent = 0
        for block in _random_blocks(kill_after):
            sock.sendall(block)
            sent += len(block)
        # the server has really started writing version 2 (at least most of what was sent)
        want = max(1, kill_after - 8 * MiB)
        assert wait_until(lambda: srv.tmp_files() and _tmp_bytes(srv) >= want, timeout=30), (
            f"upload never reached {want} bytes in tmp: {_tmp_bytes(srv) if srv.tmp_files() else 0}"
            f"\n{srv.log_tail(20)}")
        srv.kill()
    finally:
        sock.close()
    assert srv.proc.returncode == -signal.SIGKILL
    assert srv.tmp_files(), "the crash should have left a partial upload in tmp/"

    srv.start()
    s = srv.session("alice")
    h = hashlib.sha256()
    size = 0
    with s.get(url, stream=True) as r:
        assert r.status_code == 200, r.text[:300]
        assert r.headers["Content-Length"] == str(V1_SIZE)
        for block in r.iter_content(MiB):
            h.update(block)
            size += len(block)
    assert size == V1_SIZE
    assert h.hexdigest() == v1_hash, "GET after the crash did not return version 1"
    _assert_consistent(srv)
    # and the file can be replaced normally afterwards
    assert s.put(url, data=b"version 3").status_code == 204
    assert s.get(url).content == b"version 3"
    _assert_consistent(srv)


def test_sigterm_stops_server_promptly(server_factory):
    srv = server_factory(users={"alice": None})
    assert srv.session("alice").put(srv.url("alice", "a.txt"), data=b"a").status_code == 201
    srv.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        srv.proc.wait(8)
    except subprocess.TimeoutExpired:
        pass
    assert srv.proc.poll() is not None, (
        "davserver did not exit within 8 s of SIGTERM (log tail below)\n" + srv.log_tail(10))
    assert srv.proc.returncode == 0
    assert time.monotonic() - t0 < 8
