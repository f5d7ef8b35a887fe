"""A node killed in the middle of an upload, with another node serving the same data.

What a client behind a load balancer sees when the node streaming its upload dies: the
old version stays in place on every node (nothing half-visible), the client's retry
through the other node succeeds, the killed node comes back with the new version and
nothing left over (no temporary files, no keys without a file: `encryption:scan` clean).
The two nodes share the data directory and Redis (tests/test_redis_state.py), as nodes on
one host do; the commit protocol is the same one that holds on S3 primary storage.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os

import pytest

from tests.live import LiveServer, wait_until

BIG = 48 << 20  # bytes of the new version: far more than the socket buffers hold
SENT_BEFORE_KILL = 16 << 20


def second_node(first: LiveServer) -> LiveServer:
    node = copy.copy(first)
    node.proc, node.port = None, 0
    node.log_path = first.root / "server-b.log"
    return node


@pytest.fixture(params=["master", "user"])
def pair(request, tmp_path, redis_server):
    a = LiveServer(tmp_path, users={"alice": None},
                   config={"redis": {"url": redis_server.url}}).create()
    if request.param == "user":
        a.run_cli("encryption:disable-master-key", "--yes")
    a.start()
    b = second_node(a).start()
    yield a, b
    b.stop()
    a.stop()


def _auth_header(srv: LiveServer) -> str:
    import base64

    return "Basic " + base64.b64encode(":".join(srv.auth("alice")).encode()).decode()


def test_node_killed_mid_upload_retry_through_other_node(pair):
    a, b = pair
    old = b"version one\n"
    r = a.session("alice").put(a.url("alice", "big.bin"), data=old, timeout=60)
    assert r.status_code == 201
    new = os.urandom(BIG)

    # Stream the new version to node A and kill A half-way through.
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    conn.putrequest("PUT", a.url("alice", "big.bin")[len(a.base):])
    conn.putheader("Authorization", _auth_header(a))
    conn.putheader("Content-Length", str(BIG))
    conn.endheaders()
    conn.send(new[:SENT_BEFORE_KILL])
    assert wait_until(lambda: a.tmp_files() != [], 30)  # the upload is being written
    a.kill()
    with pytest.raises(OSError):  # the rest cannot go anywhere
        view = memoryview(new)[SENT_BEFORE_KILL:]
        while view:
            conn.send(view[:1 << 20])
            view = view[1 << 20:]
        conn.getresponse()
    conn.close()

    # Nothing half-visible: node B still serves the old version, whole.
    sb = b.session("alice")
    assert sb.get(b.url("alice", "big.bin"), timeout=60).content == old

    # The client's retry through node B succeeds.
    r = sb.put(b.url("alice", "big.bin"), data=new, timeout=120)
    assert r.status_code == 204, r.text
    got = sb.get(b.url("alice", "big.bin"), timeout=120).content
    assert hashlib.sha256(got).digest() == hashlib.sha256(new).digest()

    # Node A comes back (its start-up recovery runs) with the new version, nothing left.
    a.start()
    got = a.session("alice").get(a.url("alice", "big.bin"), timeout=120).content
    assert hashlib.sha256(got).digest() == hashlib.sha256(new).digest()
    assert wait_until(lambda: a.tmp_files() == [], 10), a.tmp_files()
    scan = a.run_cli("encryption:scan", "--output", "json", check=False)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    report = json.loads(scan.stdout)
    assert report["counts"]["ok"] == 1 and not report["problems"], report
    assert report["orphan_keys"] == [], report  # the killed upload left no key behind
