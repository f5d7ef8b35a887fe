"""Two davserver nodes sharing one data dir, one SQLite DB and one real redis-server
(what "two nodes" means until PostgreSQL metadata lands): WebDAV locks, login throttling
and the encrypt-all job lock hold across them, and Redis going away gives 503 +
Retry-After, never a wrong answer."""

from __future__ import annotations

import copy
import os
import re
import subprocess

import pytest
import requests

from davserver.meta import job_lock
from tests.live import LiveServer, require_tool

LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
             b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
             b"<D:owner>node test</D:owner></D:lockinfo>")


def second_node(first: LiveServer) -> LiveServer:
    """Another server process on the same config, data dir and DB, with its own port."""
    node = copy.copy(first)
    node.proc, node.port = None, 0
    node.log_path = first.root / "server-b.log"
    return node


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, redis_server):
    a = LiveServer(tmp_path_factory.mktemp("cluster"),
                   config={"redis": {"url": redis_server.url}}).create().start()
    b = second_node(a).start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture
def clean_throttle(redis_server):
    """Failures from 127.0.0.1 would throttle every later login of the module."""
    r = redis_server.client()
    yield r
    for k in r.scan_iter(match="davserver:throttle:*"):
        r.delete(k)


def test_lock_on_one_node_blocks_put_on_the_other(nodes, redis_server):
    a, b = nodes
    url_a, url_b = a.url("alice", "locked.txt"), b.url("alice", "locked.txt")
    assert requests.put(url_a, data=b"v1", auth=a.auth("alice"), timeout=10).status_code == 201
    r = requests.request("LOCK", url_a, data=LOCK_BODY, auth=a.auth("alice"), timeout=10,
                         headers={"Timeout": "Second-120", "Content-Type": "application/xml"})
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"].strip("<>")

    # The lock lives in Redis and expires with its WebDAV timeout.
    ttl = redis_server.client().ttl(f"davserver:davlocks:k:{token}")
    assert 100 < ttl <= 121, ttl

    r = requests.put(url_b, data=b"v2 from b", auth=b.auth("alice"), timeout=10)
    assert r.status_code == 423, (r.status_code, r.text)
    assert requests.get(url_a, auth=a.auth("alice"), timeout=10).content == b"v1"

    r = requests.put(url_b, data=b"v2 with token", auth=b.auth("alice"), timeout=10,
                     headers={"If": f"(<{token}>)"})
    assert r.status_code in (200, 204), (r.status_code, r.text)
    r = requests.request("UNLOCK", url_b, auth=b.auth("alice"), timeout=10,
                         headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204, r.text
    assert not redis_server.client().exists(f"davserver:davlocks:k:{token}")
    r = requests.put(url_b, data=b"v3", auth=b.auth("alice"), timeout=10)
    assert r.status_code == 204, (r.status_code, r.text)
    assert requests.get(url_a, auth=a.auth("alice"), timeout=10).content == b"v3"


def test_lock_refresh_moves_the_expiry_in_redis(nodes, redis_server):
    a, b = nodes
    r = redis_server.client()
    url = a.url("alice", "refreshed.txt")
    requests.put(url, data=b"x", auth=a.auth("alice"), timeout=10).raise_for_status()
    res = requests.request("LOCK", url, data=LOCK_BODY, auth=a.auth("alice"), timeout=10,
                           headers={"Timeout": "Second-30", "Content-Type": "application/xml"})
    token = res.headers["Lock-Token"].strip("<>")
    url_keys = [k for k in r.scan_iter(match="davserver:davlocks:k:URL2TOKEN:*")
                if k.endswith(b"/refreshed.txt")]
    assert len(url_keys) == 1, url_keys
    assert r.ttl(f"davserver:davlocks:k:{token}") <= 31 and r.ttl(url_keys[0]) <= 31
    # Refreshed through the other node, for longer: both keys live longer now.
    res = requests.request("LOCK", b.url("alice", "refreshed.txt"), auth=b.auth("alice"),
                           timeout=10, headers={"Timeout": "Second-600", "If": f"(<{token}>)"})
    assert res.status_code == 200, res.text
    assert r.ttl(f"davserver:davlocks:k:{token}") > 500
    assert r.ttl(url_keys[0]) > 500
    res = requests.request("UNLOCK", url, auth=a.auth("alice"), timeout=10,
                           headers={"Lock-Token": f"<{token}>"})
    assert res.status_code == 204
    assert not r.exists(url_keys[0])


def test_throttling_counts_failures_on_all_nodes(nodes, clean_throttle):
    a, b = nodes
    wrong = ("bob", "not-the-password")
    # The default limit is 5 failures: 3 on A and 2 on B reach it together ...
    for node in (a, a, a, b, b):
        r = requests.get(node.url("bob"), auth=wrong, timeout=10)
        assert r.status_code == 401, r.status_code
    # The count is in Redis (hashed keys, expiring with the window), not in a node ...
    counts = [int(clean_throttle.get(k)) for k in clean_throttle.scan_iter(
        match="davserver:throttle:*")]
    assert sorted(counts) == [5, 5], counts  # user:bob and addr:127.0.0.1
    # ... so the right password is refused on both nodes until the window passes.
    for node in (a, b):
        r = requests.get(node.url("bob"), auth=node.auth("bob"), timeout=10)
        assert r.status_code == 429, r.status_code
        assert int(r.headers["Retry-After"]) > 0


def test_encrypt_and_decrypt_all_refused_while_another_node_runs_one(nodes, redis_server):
    a, _b = nodes
    requests.put(a.url("alice", "convert.txt"), data=b"converted back and forth",
                 auth=a.auth("alice"), timeout=10).raise_for_status()
    with job_lock.cluster_job(redis_server.url, "encrypt-decrypt-all"):
        for job in ("encryption:decrypt-all", "encryption:encrypt-all"):
            res = a.run_cli(job, "--yes", check=False)
            assert res.returncode == 2, res.stdout + res.stderr
            assert re.fullmatch(r"davserver: failed to .*already running.*\n", res.stderr), \
                res.stderr
        # Refused before it touched anything: no maintenance mode, no job recorded.
        status = a.run_cli("encryption:status", "--output", "json").stdout
        assert '"maintenance": false' in status and '"jobsInProgress": []' in status, status
    stored = next(p for p in a.stored_files() if p.name == "convert.txt")
    for job, verb, plain_on_disk in (("encryption:decrypt-all", "decrypted", True),
                                     ("encryption:encrypt-all", "encrypted", False)):
        if verb == "encrypted":
            a.run_cli("encryption:enable")
        res = a.run_cli(job, "--yes")  # lock released: runs, from this or any node
        m = re.search(rf"{verb} (\d+) files", res.stdout)
        assert m and int(m.group(1)) >= 1, res.stdout
        assert (stored.read_bytes() == b"converted back and forth") is plain_on_disk
        assert not redis_server.client().exists("davserver:job:encrypt-decrypt-all")
    for node in nodes:
        r = requests.get(node.url("alice", "convert.txt"), auth=node.auth("alice"), timeout=10)
        assert r.content == b"converted back and forth"


def test_redis_down_gives_503_then_recovers(nodes, redis_server):
    a, b = nodes
    held = a.url("alice", "held.txt")
    requests.put(held, data=b"kept", auth=a.auth("alice"), timeout=10).raise_for_status()
    token = requests.request("LOCK", held, data=LOCK_BODY, auth=a.auth("alice"), timeout=10,
                             headers={"Content-Type": "application/xml"}).headers["Lock-Token"]
    redis_server.stop()
    try:
        for node in (a, b):
            for method, data in (("PUT", b"while redis is down"), ("PROPFIND", None)):
                r = requests.request(method, node.url("alice", "down.txt" if data else ""),
                                     data=data, auth=node.auth("alice"), timeout=30,
                                     headers={"Depth": "0"})
                assert r.status_code == 503, (method, r.status_code, r.text)
                assert int(r.headers["Retry-After"]) > 0
                assert "Traceback" not in r.text
    finally:
        redis_server.start()
    assert requests.get(a.url("alice", "down.txt"), auth=a.auth("alice"),
                        timeout=10).status_code == 404, "a refused PUT left a file"
    r = requests.put(b.url("alice", "down.txt"), data=b"after", auth=b.auth("alice"),
                     timeout=10)
    assert r.status_code == 201, r.text
    assert requests.get(a.url("alice", "down.txt"), auth=a.auth("alice"),
                        timeout=10).content == b"after"
    # Redis came back empty (no persistence): the lock is gone, and a write that names
    # it is refused rather than taken as the lock holder's.
    r = requests.put(held, data=b"overwritten", auth=b.auth("alice"), timeout=10,
                     headers={"If": f"({token})"})
    assert r.status_code == 412, r.status_code
    assert requests.get(held, auth=a.auth("alice"), timeout=10).content == b"kept"


# --- nginx round-robin in front of both nodes ----------------------------------------

SUITES = ("basic", "copymove", "props", "locks", "http")
SUMMARY = re.compile(r"<- summary for [`'](\w+)': of (\d+) tests run: (\d+) passed, "
                     r"(\d+) failed")


@pytest.fixture
def proxy(nodes, nginx_factory):
    return nginx_factory([n.port for n in nodes])


def test_put_through_proxy_readable_on_each_node(nodes, proxy):
    a, _b = nodes
    body = os.urandom(300_000)
    url = f"{proxy.base}/remote.php/dav/files/alice/via-proxy.bin"
    for i in range(2):  # twice: round-robin sends one of them to each node
        r = requests.put(url, data=body[i:], auth=a.auth("alice"), timeout=30)
        assert r.status_code in (201, 204), (r.status_code, r.text)
        for node in nodes:
            got = requests.get(node.url("alice", "via-proxy.bin"), auth=node.auth("alice"),
                               timeout=30)
            assert got.content == body[i:], node.port
    assert proxy.backends_used() == {n.port for n in nodes}


def test_litmus_through_proxy(nodes, proxy, tmp_path):
    a, b = nodes
    litmus = require_tool("litmus")
    env = dict(os.environ, TESTS=" ".join(SUITES))
    res = subprocess.run([litmus, f"{proxy.base}/remote.php/dav/files/alice/", "alice",
                          a.users["alice"]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    out = res.stdout + res.stderr
    (tmp_path / "litmus.out").write_text(out)
    lines = [ln for ln in out.splitlines() if "summary for" in ln or "FAIL" in ln]
    detail = "\n".join(lines) + f"\nnode A:\n{a.log_tail(20)}\nnode B:\n{b.log_tail(20)}"
    assert res.returncode == 0, detail
    summaries = {m.group(1): m for m in SUMMARY.finditer(out)}
    for suite in SUITES:
        m = summaries.get(suite)
        assert m is not None, f"no summary for {suite}\n{detail}"
        assert int(m.group(4)) == 0 and m.group(2) == m.group(3), detail
    access = (proxy.root / "access.log").read_text().count("\n")
    assert access > 100, "litmus did not go through the proxy"
    assert proxy.backends_used() == {a.port, b.port}


def test_job_lock_is_renewed_while_held_and_freed_after(redis_server, monkeypatch):
    import time

    monkeypatch.setattr(job_lock, "LEASE_SECONDS", 3)
    monkeypatch.setattr(job_lock, "RENEW_EVERY", 0.2)
    r = redis_server.client()
    key = job_lock.KEY_PREFIX + "renewal-check"
    with job_lock.cluster_job(redis_server.url, "renewal-check"):
        time.sleep(4)  # longer than the lease: only the renewals keep it
        assert r.exists(key)
        with pytest.raises(job_lock.JobRunning, match="already running"), \
                job_lock.cluster_job(redis_server.url, "renewal-check"):
            pass
    assert not r.exists(key)


def test_commit_locks_hold_across_nodes_without_a_shared_file_system(redis_server, tmp_path):
    """Two nodes with their own data directories (their own flock files) still commit
    one path at a time: the second waits for the first's Redis lease; other paths and
    the lease's release are not held up."""
    import threading
    import time

    from davserver.meta import cluster_locks

    a = cluster_locks.commit_locks(str(tmp_path / "a" / "commit.lock"), redis_server.url)
    b = cluster_locks.commit_locks(str(tmp_path / "b" / "commit.lock"), redis_server.url)
    events: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    def first():
        with a.hold("alice/f.txt"):
            events.append("a in")
            entered.set()
            release.wait(10)
            events.append("a out")

    def second():
        with b.hold("alice/f.txt"):
            events.append("b in")

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    with b.hold("alice/other.txt"):
        events.append("b other")  # another path: not held up
    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.5)
    assert "b in" not in events  # waits for node a's commit
    release.set()
    t.join(10)
    waiter.join(10)
    assert events == ["a in", "b other", "a out", "b in"]
    r = redis_server.client()
    assert not list(r.scan_iter(match=cluster_locks.KEY_PREFIX + "*"))  # all released


def test_commit_lock_with_redis_down_is_a_clear_503(tmp_path):
    from davserver.meta import cluster_locks
    from davserver.meta.shared_state import SharedStateUnavailable

    locks = cluster_locks.commit_locks(str(tmp_path / "commit.lock"),
                                       "redis://127.0.0.1:1/0")
    with pytest.raises(SharedStateUnavailable), locks.hold("alice/f.txt"):
        pass
