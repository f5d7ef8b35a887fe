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
import subprocess
import sys

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


def test_start_up_recovery_leaves_a_live_commit_of_another_process_alone(tmp_path):
    """A node starting while another commits: its recovery must wait for that commit's
    path lock, not roll the commit back (which deleted the key of the file being written)."""
    import threading
    import time

    from tests.instances import make_instance

    a = make_instance(tmp_path)
    a.users.add("alice", "alicepass1")
    up = a.vault.begin_write("alice/f.bin")
    up.write(b"new content")
    in_commit, go_on = threading.Event(), threading.Event()
    rename = up._blob.commit

    def slow_rename():
        in_commit.set()  # pending row and key exist now, the rename has not happened
        assert go_on.wait(30)
        rename()

    up._blob.commit = slow_rename
    committer = threading.Thread(target=up.commit)
    committer.start()
    assert in_commit.wait(30)
    # The other node starting: another process (record locks exclude processes).
    script = ("import json, sys; from davserver import config; "
              "from davserver.instance import Instance; "
              "i = Instance(config.load(sys.argv[1], sys.argv[2])); "
              "print(json.dumps(i.vault.recover()))")
    starter = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "etc" /
                                "davserver.toml"), str(tmp_path / "data")],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    assert starter.poll() is None  # waits for the commit's lock
    go_on.set()
    committer.join(30)
    out, _ = starter.communicate(timeout=60)
    assert json.loads(out)["rolled_back"] == 0
    assert a.vault.read_all("alice/f.bin") == b"new content"
    assert a.db.list_pending() == []
    a.close()
