"""App passwords and Nextcloud's login flow v2, in master-key and user-key mode: a device
password logs in (and in user-key mode opens the user's files), revoking it stops it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.live import LiveServer


@pytest.fixture(scope="module", params=["master-key", "user-key"])
def srv(request, tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp(f"app-{request.param}"), {"alice": None},
                   {"encryption": {"kdf_memory_kib": 8192, "kdf_time_cost": 1},
                    # The tests try wrong and revoked passwords on purpose.
                    "auth": {"throttle_max_failures": 100}})
    s.create()
    s.mode = request.param
    if request.param == "user-key":
        s.run_cli("encryption:disable-master-key", "--yes")
    s.start()
    # A file written with the real password (in user-key mode: under alice's key).
    r = requests.put(s.url("alice", "secret.txt"), data=b"only alice", auth=s.auth("alice"))
    assert r.status_code == 201
    try:
        yield s
    finally:
        s.stop()


def _works(s: LiveServer, token: str) -> bool:
    r = requests.get(s.url("alice", "secret.txt"), auth=("alice", token))
    if r.status_code != 200:
        return False
    assert r.content == b"only alice"
    w = requests.put(s.url("alice", "from-device.txt"), data=b"d", auth=("alice", token))
    assert w.status_code in (201, 204), w.text
    return True


def _seals(s: LiveServer) -> list[Path]:
    return sorted((Path(s.data_dir) / "keys" / "app-passwords").rglob("*.json"))


def test_cli_app_password(srv):
    if srv.mode == "user-key":
        res = srv.run_cli("user:add-app-password", "alice", check=False)
        assert res.returncode != 0
        assert res.stderr.strip().startswith("davserver: failed to")
        assert "password" in res.stderr
        res = srv.run_cli("user:add-app-password", "alice", "--password-from-env",
                          env={"DAVSERVER_PASS": "wrong"}, check=False)
        assert res.returncode != 0
    out = srv.run_cli("user:add-app-password", "alice", "--label", "laptop",
                      "--password-from-env", env={"DAVSERVER_PASS": srv.users["alice"]}).stdout
    m = re.search(r"app password (\d+) for alice: (\S+)", out)
    assert m, out
    app_id, token = m.group(1), m.group(2)
    assert token not in (Path(srv.data_dir) / "davserver.db").read_bytes().decode("latin-1")
    assert _works(srv, token)
    assert len(_seals(srv)) == (1 if srv.mode == "user-key" else 0)
    assert not _works(srv, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert requests.get(srv.url("alice", "secret.txt"), auth=("bob", token)).status_code == 401
    listed = srv.run_cli("user:list-app-passwords", "alice").stdout
    assert f"{app_id}: laptop" in listed and token not in listed
    srv.run_cli("user:revoke-app-password", "alice", app_id)
    assert not _works(srv, token)
    assert _seals(srv) == []


def test_login_flow_v2(srv):
    start = requests.post(f"{srv.base}/index.php/login/v2",
                          headers={"User-Agent": "Test client (desktop)"})
    assert start.status_code == 200
    flow = start.json()
    poll_url, poll_token = flow["poll"]["endpoint"], flow["poll"]["token"]
    assert poll_url == f"{srv.base}/index.php/login/v2/poll"
    assert requests.post(poll_url, data={"token": poll_token}).status_code == 404  # not yet
    page = requests.get(flow["login"])
    assert page.status_code == 200 and "Test client (desktop)" in page.text
    assert "<form" in page.text
    bad = requests.post(flow["login"], data={"user": "alice", "password": "wrong"})
    assert bad.status_code == 401 and "wrong" in bad.text
    assert requests.post(poll_url, data={"token": poll_token}).status_code == 404
    ok = requests.post(flow["login"], data={"user": "alice", "password": srv.users["alice"]})
    assert ok.status_code == 200 and "Access granted" in ok.text
    assert requests.post(poll_url, data={"token": "guess"}).status_code == 404
    got = requests.post(poll_url, data={"token": poll_token})
    assert got.status_code == 200
    creds = got.json()
    assert creds["loginName"] == "alice" and creds["server"] == srv.base
    assert creds["appPassword"] != srv.users["alice"]
    assert _works(srv, creds["appPassword"])
    # Collected once; the link is spent.
    assert requests.post(poll_url, data={"token": poll_token}).status_code == 404
    assert requests.get(flow["login"]).status_code == 404
    # The password is listed with the client's name and can be revoked.
    listed = srv.run_cli("user:list-app-passwords", "alice", "--output", "json").stdout
    assert "Test client (desktop)" in listed
    app_id = re.findall(r'"id": (\d+)', listed)[-1]
    srv.run_cli("user:revoke-app-password", "alice", app_id)
    assert not _works(srv, creds["appPassword"])


def test_real_client_with_an_app_password(srv, tmp_path):
    from tests.test_nextcloudcmd import Client, assert_same, write

    out = srv.run_cli("user:add-app-password", "alice", "--label", "nextcloudcmd",
                      "--password-from-env", env={"DAVSERVER_PASS": srv.users["alice"]}).stdout
    app_id, token = re.search(r"app password (\d+) for alice: (\S+)", out).groups()
    c = Client(srv, tmp_path, password=token)
    write(c.local / "up/from-client.txt", b"synced with an app password")
    c.sync()
    assert (c.local / "secret.txt").read_bytes() == b"only alice"  # opened with her key
    assert_same(c)
    srv.run_cli("user:revoke-app-password", "alice", app_id)
    write(c.local / "up/later.txt", b"after the revocation")
    c.sync(expect_ok=False)
    r = requests.get(srv.url("alice", "up/later.txt"), auth=srv.auth("alice"))
    assert r.status_code == 404
