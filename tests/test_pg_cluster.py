"""Two davserver nodes on one PostgreSQL database, one redis-server and one data dir,
behind nginx: what holds across nodes with SQLite (tests/test_redis_state.py) holds on
PostgreSQL too, a node killed mid-upload leaves nothing half visible, and PostgreSQL
going away gives 503 + Retry-After, then service again, never a wrong answer."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from tests.live import LiveServer
from tests.pg_metadata import drop_schema, new_schema

# The same cluster tests, run here on these nodes (fixtures resolve by name in this module).
from tests.test_redis_state import (  # noqa: F401
    proxy,
    second_node,
    test_litmus_through_proxy,
    test_lock_on_one_node_blocks_put_on_the_other,
    test_put_through_proxy_readable_on_each_node,
)


def _cluster(root, pg_cluster, redis_server, *, user_mode: bool = False):
    url = new_schema(pg_cluster.dsn)
    a = LiveServer(root, users={} if user_mode else None,
                   config={"database": {"url": url}, "redis": {"url": redis_server.url}})
    a.create()
    if user_mode:
        a.run_cli("encryption:disable-master-key", "--yes")
        a.run_cli("user:add", "alice", "--password-from-env", env={"DAVSERVER_PASS": "alice-pw-1"})
        a.users["alice"] = "alice-pw-1"
    a.start()
    return url, a, second_node(a).start()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, pg_cluster, redis_server):
    url, a, b = _cluster(tmp_path_factory.mktemp("pgcluster"), pg_cluster, redis_server)
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()
        drop_schema(pg_cluster.dsn, url)


def test_nodes_share_the_postgresql_index(nodes, pg_cluster):
    a, b = nodes
    assert "postgresql://" in open(a.config).read()
    assert not list((a.root / "data").glob("*.db")), "a SQLite index was made as well"
    r = requests.put(a.url("alice", "seen.txt"), data=b"from a", auth=a.auth("alice"),
                     timeout=10)
    assert r.status_code == 201, r.text
    r = requests.request("PROPFIND", b.url("alice"), auth=b.auth("alice"), timeout=10,
                         headers={"Depth": "1"})
    assert r.status_code == 207 and "seen.txt" in r.text
    assert requests.get(b.url("alice", "seen.txt"), auth=b.auth("alice"),
                        timeout=10).content == b"from a"


def test_user_key_login_on_either_node(tmp_path, pg_cluster, redis_server):
    url, a, b = _cluster(tmp_path / "userkeys", pg_cluster, redis_server, user_mode=True)
    try:
        body = b"sealed to alice's own key"
        r = requests.put(a.url("alice", "mine.txt"), data=body, auth=a.auth("alice"),
                         timeout=30)
        assert r.status_code == 201, r.text
        got = requests.get(b.url("alice", "mine.txt"), auth=b.auth("alice"), timeout=30)
        assert got.status_code == 200 and got.content == body
        wrong = requests.get(b.url("alice", "mine.txt"), auth=("alice", "not-it"), timeout=30)
        assert wrong.status_code == 401
    finally:
        b.stop()
        a.stop()
        drop_schema(pg_cluster.dsn, url)


def _slow_body(data: bytes, sent: threading.Event):
    for i in range(0, len(data), 64 * 1024):
        yield data[i:i + 64 * 1024]
        if i >= len(data) // 4:
            sent.set()
            time.sleep(0.05)


def test_node_killed_mid_upload_retry_on_the_other(nodes):
    a, b = nodes
    old, new = b"old version " * 1000, bytes(range(256)) * 40_000  # ~10 MB
    url_a, url_b = a.url("alice", "big.bin"), b.url("alice", "big.bin")
    assert requests.put(url_a, data=old, auth=a.auth("alice"), timeout=30).status_code == 201
    sent = threading.Event()
    outcome: list = []

    def upload():
        try:
            outcome.append(requests.put(url_a, data=_slow_body(new, sent),
                                        auth=a.auth("alice"), timeout=60).status_code)
        except requests.RequestException as e:
            outcome.append(e)

    t = threading.Thread(target=upload)
    t.start()
    assert sent.wait(30)
    a.kill()
    t.join(60)
    assert outcome and isinstance(outcome[0], requests.RequestException), outcome
    # Nothing half visible through the surviving node: the old version, whole.
    assert requests.get(url_b, auth=b.auth("alice"), timeout=30).content == old
    r = requests.put(url_b, data=new, auth=b.auth("alice"), timeout=60)
    assert r.status_code == 204, r.text
    assert requests.get(url_b, auth=b.auth("alice"), timeout=60).content == new
    a.start()  # recovers the dead upload's leftovers at start
    assert requests.get(url_a, auth=a.auth("alice"), timeout=60).content == new
    scan = json.loads(a.run_cli("encryption:scan", "--output", "json").stdout)
    assert not scan["problems"], scan
    orphans = json.loads(a.run_cli("encryption:clean-orphaned-keys", "--dry-run",
                                   "--output", "json").stdout)
    assert orphans["orphan_keys"] == [], orphans


def test_postgresql_down_gives_503_then_recovers(nodes, pg_cluster):
    a, b = nodes
    requests.put(a.url("alice", "before.txt"), data=b"kept", auth=a.auth("alice"),
                 timeout=10).raise_for_status()
    pg_cluster.stop(fast=True)  # what `systemctl restart postgresql` does to clients
    try:
        for node in (a, b):
            for method, data in (("PUT", b"while postgresql is down"), ("PROPFIND", None)):
                r = requests.request(method, node.url("alice", "down.txt" if data else ""),
                                     data=data, auth=node.auth("alice"), timeout=60,
                                     headers={"Depth": "0"})
                assert r.status_code == 503, (method, r.status_code, r.text)
                assert int(r.headers["Retry-After"]) > 0
                assert "Traceback" not in r.text
    finally:
        pg_cluster.start()
    # A pooled connection that died with the server may cost one more 503 (the pool
    # then tests and replaces the others); after that, service as before.
    for node in (a, b):
        r = _served("GET", node.url("alice", "before.txt"), node.auth("alice"))
        assert r.status_code == 200 and r.content == b"kept", r.status_code
    r = _served("GET", a.url("alice", "down.txt"), a.auth("alice"))
    assert r.status_code == 404, "a refused PUT left a file"
    r = _served("PUT", b.url("alice", "down.txt"), b.auth("alice"), b"after")
    assert r.status_code == 201, r.text
    assert _served("GET", a.url("alice", "down.txt"), a.auth("alice")).content == b"after"


def _served(method: str, url: str, auth, data: bytes | None = None) -> requests.Response:
    """The answer once it is not 503 (a retrying client's view)."""
    for _ in range(20):
        r = requests.request(method, url, data=data, auth=auth, timeout=30)
        if r.status_code != 503:
            return r
        assert int(r.headers["Retry-After"]) > 0
        time.sleep(0.2)
    raise AssertionError(f"{method} {url}: still 503 after PostgreSQL came back")
