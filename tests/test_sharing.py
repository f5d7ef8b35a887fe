"""Sharing over real HTTP against a real server process (master-key mode).

alice shares folders with bob (read-only, read-write) and with a group; bob reaches them
under his own tree, carol reaches nothing of alice's. Shares are made with the CLI, the
same service the OCS API and the settings pages call.
"""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.live import LiveServer


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("sharing"),
                   {"alice": None, "bob": None, "carol": None, "dave": None})
    s.create().start()
    a = s.session("alice")
    for folder in ("ro", "ro/sub", "rw", "team", "moving"):
        assert a.request("MKCOL", s.url("alice", folder)).status_code == 201
    for path, data in (("ro/a.txt", b"read me"), ("ro/sub/b.txt", b"deeper"),
                       ("rw/seed.txt", b"seed"), ("team/t.txt", b"team file"),
                       ("moving/m.txt", b"follows the folder"), ("single.txt", b"one file")):
        assert a.put(s.url("alice", path), data=data).status_code == 201
    try:
        yield s
    finally:
        s.stop()


def share(srv: LiveServer, *args: str, check: bool = True):
    res = srv.run_cli("share:add", *args, "--output", "json", check=check)
    return json.loads(res.stdout) if check else res


def shares(srv: LiveServer, user: str | None = None) -> list[dict]:
    args = ["share:list", "--output", "json"] + (["--user", user] if user else [])
    return json.loads(srv.run_cli(*args).stdout)


def names(session: requests.Session, url: str) -> set[str]:
    r = session.request("PROPFIND", url, headers={"Depth": "1"})
    assert r.status_code == 207, r.text
    hrefs = re.findall(r"<(?:\w+:)?href>([^<]+)</", r.text)
    return {requests.utils.unquote(h).rstrip("/").rsplit("/", 1)[-1] for h in hrefs[1:]}


@pytest.fixture(scope="module")
def read_only(srv):
    return share(srv, "alice", "ro", "--user", "bob")


def test_read_only_share_lists_and_reads(srv, read_only):
    b = srv.session("bob")
    assert "ro" in names(b, srv.url("bob"))
    assert names(b, srv.url("bob", "ro")) == {"a.txt", "sub"}
    assert b.get(srv.url("bob", "ro/a.txt")).content == b"read me"
    assert b.get(srv.url("bob", "ro/sub/b.txt")).content == b"deeper"
    # Through the other URL form too.
    assert b.get(f"{srv.base}/remote.php/webdav/ro/a.txt").content == b"read me"


@pytest.mark.parametrize("method,path,extra", [
    ("PUT", "ro/a.txt", {"data": b"changed"}),
    ("PUT", "ro/new.txt", {"data": b"new"}),
    ("DELETE", "ro/a.txt", {}),
    ("MKCOL", "ro/newdir", {}),
    ("MOVE", "ro/a.txt", {"headers": {"Destination": "/remote.php/dav/files/bob/x.txt"}}),
    ("PROPPATCH", "ro/a.txt", {"data": (
        '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:z="urn:z"><d:set>'
        '<d:prop><z:color>red</z:color></d:prop></d:set></d:propertyupdate>')}),
    ("LOCK", "ro/a.txt", {"data": (
        '<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
        '</d:lockscope><d:locktype><d:write/></d:locktype></d:lockinfo>')}),
])
def test_read_only_share_refuses_writes(srv, read_only, method, path, extra):
    b = srv.session("bob")
    r = b.request(method, srv.url("bob", path), **extra)
    assert r.status_code == 403, (r.status_code, r.text)
    assert "permission" in r.text
    a = srv.session("alice")
    assert a.get(srv.url("alice", "ro/a.txt")).content == b"read me"
    assert a.get(srv.url("alice", "ro/new.txt")).status_code == 404
    assert srv.session("bob").get(srv.url("bob", "x.txt")).status_code == 404


def test_copy_into_read_only_share_refused_copy_out_allowed(srv, read_only):
    b = srv.session("bob")
    r = b.request("COPY", srv.url("bob", "ro/a.txt"),
                  headers={"Destination": "/remote.php/dav/files/bob/copied.txt"})
    assert r.status_code == 201, r.text
    assert b.get(srv.url("bob", "copied.txt")).content == b"read me"
    r = b.request("COPY", srv.url("bob", "copied.txt"),
                  headers={"Destination": "/remote.php/dav/files/bob/ro/c.txt"})
    assert r.status_code == 403


def test_others_get_404_on_unshared_paths(srv, read_only):
    c = srv.session("carol")
    for path in ("ro", "ro/a.txt", "rw/seed.txt"):
        assert c.get(srv.url("alice", path)).status_code == 404
        # Writes answer exactly as for a path that does not exist: nothing leaks.
        assert c.put(srv.url("alice", path), data=b"x").status_code == c.put(
            srv.url("alice", "no-such-dir/x"), data=b"x").status_code
        assert c.delete(srv.url("alice", path)).status_code == 404
    assert "ro" not in names(c, srv.url("carol"))
    # bob reaches alice's files only through his own tree, never through hers.
    assert srv.session("bob").get(srv.url("alice", "ro/a.txt")).status_code == 404


def test_read_write_share_round_trip(srv):
    share(srv, "alice", "rw", "--user", "bob", "--permissions", "read,update,create,delete")
    b = srv.session("bob")
    payload = bytes(range(256)) * 1000
    assert b.put(srv.url("bob", "rw/from-bob.bin"), data=payload).status_code == 201
    assert srv.session("alice").get(srv.url("alice", "rw/from-bob.bin")).content == payload
    assert b.put(srv.url("bob", "rw/seed.txt"), data=b"seed 2").status_code == 204
    assert srv.session("alice").get(srv.url("alice", "rw/seed.txt")).content == b"seed 2"
    assert b.request("MKCOL", srv.url("bob", "rw/made-by-bob")).status_code == 201
    r = b.request("MOVE", srv.url("bob", "rw/from-bob.bin"),
                  headers={"Destination": srv.url("bob", "rw/made-by-bob/moved.bin")})
    assert r.status_code == 201, r.text
    assert srv.session("alice").get(
        srv.url("alice", "rw/made-by-bob/moved.bin")).content == payload
    assert b.delete(srv.url("bob", "rw/made-by-bob")).status_code == 204
    assert srv.session("alice").get(srv.url("alice", "rw/made-by-bob")).status_code == 404


def test_owner_rename_keeps_share(srv):
    share(srv, "alice", "moving", "--user", "bob")
    b = srv.session("bob")
    assert b.get(srv.url("bob", "moving/m.txt")).content == b"follows the folder"
    a = srv.session("alice")
    r = a.request("MOVE", srv.url("alice", "moving"),
                  headers={"Destination": srv.url("alice", "ro/renamed")})
    assert r.status_code == 201
    # bob keeps his mount point name; the share follows the node.
    assert b.get(srv.url("bob", "moving/m.txt")).content == b"follows the folder"
    listed = [s for s in shares(srv, "bob") if s["path"] == "/ro/renamed"]
    assert len(listed) == 1


def test_recipient_moves_and_leaves_mount_point(srv):
    share(srv, "alice", "single.txt", "--user", "carol")
    c = srv.session("carol")
    assert c.get(srv.url("carol", "single.txt")).content == b"one file"
    assert c.request("MKCOL", srv.url("carol", "inbox")).status_code == 201
    r = c.request("MOVE", srv.url("carol", "single.txt"),
                  headers={"Destination": srv.url("carol", "inbox/from-alice.txt")})
    assert r.status_code == 201
    assert c.get(srv.url("carol", "inbox/from-alice.txt")).content == b"one file"
    a = srv.session("alice")
    assert a.get(srv.url("alice", "single.txt")).content == b"one file"  # owner unaffected
    assert c.delete(srv.url("carol", "inbox/from-alice.txt")).status_code == 204
    assert c.get(srv.url("carol", "inbox/from-alice.txt")).status_code == 404
    assert a.get(srv.url("alice", "single.txt")).content == b"one file"


def test_name_clash_gets_a_number(srv):
    d = srv.session("dave")
    assert d.request("MKCOL", srv.url("dave", "team")).status_code == 201
    share(srv, "alice", "team", "--user", "dave")
    assert {"team", "team (2)"} <= names(d, srv.url("dave"))
    assert d.get(srv.url("dave", "team (2)/t.txt")).content == b"team file"


def test_group_membership_changes_access_without_restart(srv):
    srv.run_cli("group:add", "staff")
    share(srv, "alice", "team", "--group", "staff")
    c = srv.session("carol")
    assert c.get(srv.url("carol", "team/t.txt")).status_code == 404
    srv.run_cli("group:adduser", "staff", "carol")
    assert c.get(srv.url("carol", "team/t.txt")).content == b"team file"
    listed = [s for s in shares(srv) if s["type"] == "group"]
    assert listed[0]["recipients"] == ["carol"]
    srv.run_cli("group:removeuser", "staff", "carol")
    assert c.get(srv.url("carol", "team/t.txt")).status_code == 404


@pytest.mark.parametrize("args,message", [
    (["alice", "nope", "--user", "bob"], "not found"),
    (["alice", "ro", "--user", "alice"], "own owner"),
    (["alice", "ro", "--user", "nobody"], "nobody"),
    (["alice", "ro", "--group", "nogroup"], "nogroup"),
    (["alice", "../bob", "--user", "carol"], "'..'"),
    (["alice", "ro", "--user", "carol", "--expire", "2001-01-01"], "past"),
    (["alice", "ro", "--user", "carol", "--permissions", "fly"], "unknown permission"),
    (["alice", "ro", "--user", "carol", "--group", "staff"], "exactly one"),
    # bob holds ro read-only, without the share bit: no re-share at all.
    (["bob", "ro/sub", "--user", "carol"], "re-share"),
])
def test_bad_share_requests_are_refused_cleanly(srv, read_only, args, message):
    before = shares(srv)
    res = share(srv, *args, check=False)
    assert res.returncode != 0
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("davserver: failed to create the share:"), res.stderr
    assert message in line
    assert "Traceback" not in res.stderr
    assert shares(srv) == before


def test_reshare_never_beyond_own_permissions(srv):
    r = share(srv, "alice", "ro/sub", "--user", "carol", "--permissions", "read,share")
    res = share(srv, "carol", "sub", "--user", "dave", "--permissions", "read,update",
                check=False)
    assert res.returncode != 0 and "cannot grant update" in res.stderr
    ok = share(srv, "carol", "sub", "--user", "dave")
    assert ok["owner"] == "alice" and ok["initiator"] == "carol"
    assert srv.session("dave").get(srv.url("dave", "sub/b.txt")).content == b"deeper"
    srv.run_cli("share:remove", str(ok["id"]))
    srv.run_cli("share:remove", str(r["id"]))
    assert srv.session("dave").get(srv.url("dave", "sub/b.txt")).status_code == 404


# --- OCS Share API (what Nextcloud/ownCloud clients' share dialogs call) -----------------

OCS = "/ocs/v2.php/apps/files_sharing/api/v1"
OCS_HEADERS = {"OCS-APIRequest": "true"}


def ocs(srv, user, method, path, version=2, fmt="json", **kw):
    base = OCS if version == 2 else OCS.replace("v2.php", "v1.php")
    params = dict(kw.pop("params", {}))
    if fmt == "json":
        params["format"] = "json"
    return requests.request(method, f"{srv.base}{base}{path}", auth=srv.auth(user),
                            headers=kw.pop("headers", OCS_HEADERS), params=params, **kw)


def test_ocs_create_list_update_delete(srv):
    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "ocsdir")).status_code == 201
    assert a.put(srv.url("alice", "ocsdir/o.txt"), data=b"via ocs").status_code == 201
    r = ocs(srv, "alice", "POST", "/shares", data={
        "path": "/ocsdir", "shareType": 0, "shareWith": "carol", "permissions": 1})
    assert r.status_code == 200, r.text
    created = r.json()["ocs"]["data"]
    assert r.json()["ocs"]["meta"]["statuscode"] == 200
    assert created["share_with"] == "carol" and created["permissions"] == 1
    assert created["item_type"] == "folder" and created["path"] == "/ocsdir"
    sid = created["id"]
    assert srv.session("carol").get(srv.url("carol", "ocsdir/o.txt")).content == b"via ocs"

    listed = ocs(srv, "alice", "GET", "/shares", params={"path": "/ocsdir"}).json()
    assert [s["id"] for s in listed["ocs"]["data"]] == [sid]
    mine = ocs(srv, "carol", "GET", "/shares", params={"shared_with_me": "true"}).json()
    assert sid in [s["id"] for s in mine["ocs"]["data"]]
    sub = ocs(srv, "alice", "GET", "/shares", params={"path": "/", "subfiles": "true"}).json()
    assert sid in [s["id"] for s in sub["ocs"]["data"]]

    r = ocs(srv, "alice", "PUT", f"/shares/{sid}", data={"permissions": 3})
    assert r.json()["ocs"]["data"]["permissions"] == 3
    c = srv.session("carol")
    assert c.put(srv.url("carol", "ocsdir/o.txt"), data=b"carol edits").status_code == 204
    assert ocs(srv, "carol", "DELETE", f"/shares/{sid}").status_code == 403  # not hers
    assert ocs(srv, "alice", "DELETE", f"/shares/{sid}").status_code == 200
    assert c.get(srv.url("carol", "ocsdir/o.txt")).status_code == 404
    assert ocs(srv, "alice", "GET", f"/shares/{sid}").status_code == 404


def test_ocs_xml_and_v1_status_codes(srv):
    r = ocs(srv, "alice", "GET", "/shares", version=1, fmt="xml")
    assert r.status_code == 200 and r.text.startswith("<?xml")
    assert "<statuscode>100</statuscode>" in r.text
    r = ocs(srv, "alice", "GET", "/shares/999999", version=1, fmt="xml")
    assert r.status_code == 200 and "<statuscode>404</statuscode>" in r.text
    r = ocs(srv, "alice", "GET", "/shares/999999")
    assert r.status_code == 404 and r.json()["ocs"]["meta"]["status"] == "failure"


@pytest.mark.parametrize("data,status", [
    ({"path": "/missing", "shareType": 0, "shareWith": "bob"}, 404),
    ({"path": "/rw", "shareType": 0, "shareWith": "nobody"}, 404),
    ({"path": "/rw", "shareType": 1, "shareWith": "nogroup"}, 404),
    ({"path": "/rw", "shareType": 0, "shareWith": "alice"}, 400),
    ({"path": "/rw", "shareType": 7, "shareWith": "bob"}, 400),
    ({"path": "/../bob", "shareType": 0, "shareWith": "carol"}, 400),
    ({"path": "/rw", "shareType": 0, "shareWith": "dave", "expireDate": "2000-01-01"}, 400),
])
def test_ocs_bad_input(srv, data, status):
    before = shares(srv)
    r = ocs(srv, "alice", "POST", "/shares", data=data)
    assert r.status_code == status, r.text
    assert r.json()["ocs"]["meta"]["message"]
    assert shares(srv) == before


def test_ocs_needs_api_header_and_login(srv):
    r = ocs(srv, "alice", "GET", "/shares", headers={})
    assert r.status_code == 412
    r = requests.get(f"{srv.base}{OCS}/shares", headers=OCS_HEADERS,
                     params={"format": "json"}, auth=("alice", "wrong-password"))
    assert r.status_code == 401


def test_ocs_sharees(srv):
    srv.run_cli("group:add", "staff", check=False)  # may exist from the group test
    r = ocs(srv, "alice", "GET", "/sharees", params={"search": "car", "itemType": "folder"})
    data = r.json()["ocs"]["data"]
    assert [u["value"]["shareWith"] for u in data["users"]] == ["carol"]
    r = ocs(srv, "alice", "GET", "/sharees", params={"search": "staff"})
    assert r.json()["ocs"]["data"]["exact"]["groups"][0]["value"] == {
        "shareType": 1, "shareWith": "staff"}


OC_PROPS = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
            "<d:prop><oc:permissions/><oc:share-types/><oc:owner-id/>"
            "<oc:owner-display-name/></d:prop></d:propfind>")


def oc_props(session, url) -> dict[str, dict[str, str]]:
    r = session.request("PROPFIND", url, headers={"Depth": "1"}, data=OC_PROPS)
    assert r.status_code == 207, r.text
    out = {}
    for resp in re.findall(r"<(?:\w+:)?response\b.*?</(?:\w+:)?response>", r.text, re.S):
        href = re.search(r"<(?:\w+:)?href>([^<]+)<", resp).group(1)
        name = requests.utils.unquote(href).rstrip("/").rsplit("/", 1)[-1]
        props = {}
        for local in ("permissions", "owner-id", "owner-display-name"):
            m = re.search(rf"<(?:\w+:)?{local}[^>]*>([^<]*)</", resp)
            props[local] = m.group(1) if m else None
        props["share-types"] = ",".join(re.findall(r"<(?:\w+:)?share-type>(\d)<", resp))
        out[name] = props
    return out


def test_propfind_share_properties(srv, read_only):
    owner_view = oc_props(srv.session("alice"), srv.url("alice"))
    assert owner_view["ro"]["share-types"] == "0"
    assert owner_view["ro"]["owner-id"] == "alice"
    assert "C" in owner_view["ro"]["permissions"] and "S" not in owner_view["ro"]["permissions"]
    bob_root = oc_props(srv.session("bob"), srv.url("bob"))
    assert bob_root["ro"]["owner-id"] == "alice"
    assert bob_root["ro"]["permissions"].startswith("SM")  # shared with me, a mount point
    inside = oc_props(srv.session("bob"), srv.url("bob", "ro"))
    assert inside["a.txt"]["permissions"] == "SG"  # read-only: no W, D, N, V
    assert inside["a.txt"]["owner-display-name"] == "alice"


def test_litmus_on_a_read_write_share_mount(srv, tmp_path):
    """The whole WebDAV compliance suite, run by the recipient inside a share mount."""
    import os
    import subprocess

    from tests.live import require_tool
    from tests.test_litmus import SUITES, SUMMARY

    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "litmus-area")).status_code == 201
    share(srv, "alice", "litmus-area", "--user", "bob", "--permissions", "all")
    litmus = require_tool("litmus")
    env = dict(os.environ, TESTS=" ".join(SUITES))
    res = subprocess.run([litmus, srv.url("bob", "litmus-area/"), "bob", srv.users["bob"]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    fails = [ln for ln in out.splitlines() if "FAIL" in ln or "summary for" in ln]
    assert res.returncode == 0, "\n".join(fails) + srv.log_tail(30)
    for suite in SUITES:
        m = {m.group(1): m for m in SUMMARY.finditer(out)}.get(suite)
        assert m is not None and int(m.group(4)) == 0, "\n".join(fails)
        assert int(m.group(2)) > 0 and m.group(2) == m.group(3)


# --- team folders -------------------------------------------------------------------------

def test_team_folder_members_rename_quota_and_delete(srv):
    srv.run_cli("group:add", "eng")
    for u in ("bob", "dave"):
        srv.run_cli("group:adduser", "eng", u)
    fid = srv.run_cli("groupfolder:create", "Engineering").stdout.strip()
    srv.run_cli("groupfolder:group", fid, "eng", "read,update,create,delete")
    b, d = srv.session("bob"), srv.session("dave")
    assert "Engineering" in names(b, srv.url("bob"))
    assert b.put(srv.url("bob", "Engineering/plan.txt"), data=b"the plan").status_code == 201
    assert d.get(srv.url("dave", "Engineering/plan.txt")).content == b"the plan"
    assert srv.session("carol").get(srv.url("carol", "Engineering/plan.txt")).status_code == 404
    # Members cannot rename or remove the folder itself; the admin renames it.
    r = b.request("MOVE", srv.url("bob", "Engineering"),
                  headers={"Destination": srv.url("bob", "Mine")})
    assert r.status_code == 403
    assert b.delete(srv.url("bob", "Engineering")).status_code == 403
    srv.run_cli("groupfolder:rename", fid, "R&D")
    assert d.get(srv.url("dave", "R&D/plan.txt")).content == b"the plan"
    assert d.get(srv.url("dave", "Engineering/plan.txt")).status_code == 404
    srv.run_cli("groupfolder:quota", fid, "20")
    r = b.put(srv.url("bob", "R&D/big.bin"), data=b"x" * 100)
    assert r.status_code == 507
    listed = json.loads(srv.run_cli("groupfolder:list", "--output", "json").stdout)
    assert listed == [{"id": int(fid), "name": "R&D", "quota": 20, "groups": {"eng": 15}}]
    bad = srv.run_cli("groupfolder:rename", fid, "../x", check=False)
    assert bad.returncode != 0 and "invalid team folder name" in bad.stderr
    srv.run_cli("groupfolder:delete", fid)
    assert d.get(srv.url("dave", "R&D/plan.txt")).status_code == 404
    assert json.loads(srv.run_cli("groupfolder:list", "--output", "json").stdout) == []


def test_litmus_on_a_team_folder(srv, tmp_path):
    import os
    import subprocess

    from tests.live import require_tool
    from tests.test_litmus import SUITES, SUMMARY

    srv.run_cli("group:add", "litmus-team")
    srv.run_cli("group:adduser", "litmus-team", "carol")
    fid = srv.run_cli("groupfolder:create", "LitmusTeam").stdout.strip()
    srv.run_cli("groupfolder:group", fid, "litmus-team")
    env = dict(os.environ, TESTS=" ".join(SUITES))
    res = subprocess.run([require_tool("litmus"), srv.url("carol", "LitmusTeam/"), "carol",
                          srv.users["carol"]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    out = res.stdout + res.stderr
    fails = [ln for ln in out.splitlines() if "FAIL" in ln or "summary for" in ln]
    assert res.returncode == 0, "\n".join(fails) + srv.log_tail(30)
    for suite in SUITES:
        m = {m.group(1): m for m in SUMMARY.finditer(out)}.get(suite)
        assert m is not None and int(m.group(4)) == 0, "\n".join(fails)


def test_owner_lock_stops_recipient_writes(srv):
    a, b = srv.session("alice"), srv.session("bob")
    assert a.request("MKCOL", srv.url("alice", "lk")).status_code == 201
    share(srv, "alice", "lk", "--user", "bob", "--permissions", "all")
    assert a.put(srv.url("alice", "lk/locked.txt"), data=b"v1").status_code == 201
    body = ('<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
            '</d:lockscope><d:locktype><d:write/></d:locktype><d:owner>alice</d:owner>'
            '</d:lockinfo>')
    r = a.request("LOCK", srv.url("alice", "lk/locked.txt"), data=body,
                  headers={"Timeout": "Second-60"})
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"]
    r = b.put(srv.url("bob", "lk/locked.txt"), data=b"bob overwrites")
    assert r.status_code == 423 and "locked" in r.text
    assert b.delete(srv.url("bob", "lk/locked.txt")).status_code == 423
    assert a.request("UNLOCK", srv.url("alice", "lk/locked.txt"),
                     headers={"Lock-Token": token}).status_code == 204
    assert b.put(srv.url("bob", "lk/locked.txt"), data=b"v2").status_code == 204
    assert a.get(srv.url("alice", "lk/locked.txt")).content == b"v2"
    # The other way round: bob's lock through his mount stops alice's writes.
    r = b.request("LOCK", srv.url("bob", "lk/locked.txt"), data=body.replace("alice", "bob"),
                  headers={"Timeout": "Second-60"})
    assert r.status_code == 200, r.text
    bob_token = r.headers["Lock-Token"]
    r = a.put(srv.url("alice", "lk/locked.txt"), data=b"alice overwrites")
    assert r.status_code == 423 and "locked" in r.text
    assert b.request("UNLOCK", srv.url("bob", "lk/locked.txt"),
                     headers={"Lock-Token": bob_token}).status_code == 204
    assert a.put(srv.url("alice", "lk/locked.txt"), data=b"v3").status_code == 204


def etag(session, url) -> str:
    r = session.request("PROPFIND", url, headers={"Depth": "0"})
    assert r.status_code == 207
    return re.search(r"<(?:\w+:)?getetag>([^<]+)<", r.text).group(1)


def test_recipient_root_etag_changes_with_the_share(srv, read_only):
    """Sync clients poll the root's ETag: a change by the owner inside a share must show."""
    b = srv.session("bob")
    before = etag(b, srv.url("bob"))
    assert etag(b, srv.url("bob")) == before  # stable while nothing changes
    assert srv.session("alice").put(srv.url("alice", "ro/sub/new.txt"),
                                    data=b"new").status_code == 201
    after = etag(b, srv.url("bob"))
    assert after != before
    assert etag(b, srv.url("bob")) == after
