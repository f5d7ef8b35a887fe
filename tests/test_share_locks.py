"""A WebDAV lock on a shared file stops the other users' writes through every URL that
reaches the file: /remote.php/dav/files/USER/... and /remote.php/webdav/..., the owner's
paths and each recipient's mount (renamed here, so no two URLs look alike)."""

from __future__ import annotations

import json

import pytest

from tests.live import LiveServer

LOCK_BODY = ('<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
             '</d:lockscope><d:locktype><d:write/></d:locktype><d:owner>{who}</d:owner>'
             '</d:lockinfo>')
#: Where each user finds the shared folder in their own tree.
FOLDER = {"alice": "lk", "bob": "from alice"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("share-locks"), {"alice": None, "bob": None})
    s.create().start()
    a, b = s.session("alice"), s.session("bob")
    assert a.request("MKCOL", s.url("alice", "lk")).status_code == 201
    for name in ("f.txt", "own.txt"):
        assert a.put(s.url("alice", f"lk/{name}"), data=b"v0").status_code == 201
    assert b.put(s.url("bob", "own.txt"), data=b"bob's own").status_code == 201
    assert a.put(s.url("alice", "own.txt"), data=b"alice's own").status_code == 201
    json.loads(s.run_cli("share:add", "alice", "lk", "--user", "bob", "--permissions", "all",
                         "--output", "json").stdout)
    r = b.request("MOVE", s.url("bob", "lk"),
                  headers={"Destination": s.url("bob", "from alice")})
    assert r.status_code == 201, r.text
    try:
        yield s
    finally:
        s.stop()


def url(srv: LiveServer, form: str, user: str, rel: str) -> str:
    if form == "files":
        return srv.url(user, rel)
    return f"{srv.base}/remote.php/webdav/{rel}"


def lock(session, target: str, who: str) -> str:
    r = session.request("LOCK", target, data=LOCK_BODY.format(who=who),
                        headers={"Timeout": "Second-60"})
    assert r.status_code == 200, r.text
    return r.headers["Lock-Token"]


@pytest.mark.parametrize("write_form", ["files", "webdav"])
@pytest.mark.parametrize("lock_form", ["files", "webdav"])
@pytest.mark.parametrize("locker,writer", [("alice", "bob"), ("bob", "alice")],
                         ids=["owner-locks", "recipient-locks"])
def test_lock_blocks_the_other_user_through_every_url(srv, locker, writer, lock_form,
                                                       write_form):
    s_lock, s_write = srv.session(locker), srv.session(writer)
    lock_url = url(srv, lock_form, locker, f"{FOLDER[locker]}/f.txt")
    write_url = url(srv, write_form, writer, f"{FOLDER[writer]}/f.txt")
    token = lock(s_lock, lock_url, locker)
    try:
        r = s_write.put(write_url, data=b"overwrite")
        assert r.status_code == 423 and "locked" in r.text, (r.status_code, r.text)
        assert s_write.delete(write_url).status_code == 423
        assert s_lock.get(lock_url).content != b"overwrite"
    finally:
        assert s_lock.request("UNLOCK", lock_url,
                              headers={"Lock-Token": token}).status_code == 204
    assert s_write.put(write_url, data=b"after unlock").status_code in (201, 204)
    assert s_lock.get(lock_url).content == b"after unlock"


@pytest.mark.parametrize("lock_form", ["files", "webdav"])
def test_lock_on_a_folder_above_blocks_the_other_user(srv, lock_form):
    a, b = srv.session("alice"), srv.session("bob")
    folder = url(srv, lock_form, "alice", "lk")
    r = a.request("LOCK", folder, data=LOCK_BODY.format(who="alice"),
                  headers={"Timeout": "Second-60", "Depth": "infinity"})
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"]
    try:
        for form in ("files", "webdav"):
            r = b.put(url(srv, form, "bob", "from alice/own.txt"), data=b"x")
            assert r.status_code == 423, (form, r.status_code, r.text)
    finally:
        assert a.request("UNLOCK", folder, headers={"Lock-Token": token}).status_code == 204


def test_same_relative_path_of_another_user_is_not_locked(srv):
    """/remote.php/webdav/own.txt is alice's file for alice and bob's for bob: alice's lock
    on hers neither refuses his writes, nor shows in his lockdiscovery, nor yields to his
    UNLOCK with her token."""
    a, b = srv.session("alice"), srv.session("bob")
    mine = url(srv, "webdav", "alice", "own.txt")
    token = lock(a, mine, "alice")
    try:
        for form in ("files", "webdav"):
            r = b.put(url(srv, form, "bob", "own.txt"), data=b"bob again")
            assert r.status_code == 204, (form, r.status_code, r.text)
        r = b.request("PROPFIND", mine, headers={"Depth": "0"},
                      data='<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>'
                           '<d:lockdiscovery/></d:prop></d:propfind>')
        assert r.status_code == 207 and token.strip("<>") not in r.text
        assert "alice" not in r.text
        assert b.request("UNLOCK", mine, headers={"Lock-Token": token}).status_code >= 400
        assert a.put(mine, data=b"no token").status_code == 423  # still hers
    finally:
        assert a.request("UNLOCK", mine, headers={"Lock-Token": token}).status_code == 204
    assert a.put(mine, data=b"unlocked").status_code == 204
