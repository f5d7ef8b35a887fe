"""The direct GET/HEAD/PUT answer exactly what WsgiDAV's generic handlers answer."""

from __future__ import annotations

import base64
import io
import os
import re

import pytest

from davserver.dav import app as dav_app
from tests.instances import make_instance

AUTH = "Basic " + base64.b64encode(b"alice:alicepass1").decode()
QUINN = "Basic " + base64.b64encode(b"quinn:quinnpass1").decode()
FILES = {"a.txt": b"hello", "big.tar.gz": os.urandom(600_000), "empty": b"",
         "Grüße & <tags>.md": b"unicode", "sp ace.pdf": b"%PDF"}


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    inst = make_instance(tmp_path_factory.mktemp("fastget"))
    inst.users.add("alice", "alicepass1")
    inst.users.add("bob", "bobpass1")
    inst.vault.make_dir("alice/dir")
    for name, data in FILES.items():
        inst.vault.write_bytes(f"alice/dir/{name}", data)
    inst.vault.write_bytes("bob/secret.txt", b"bob's")
    inst.users.add("quinn", "quinnpass1")
    inst.users.set_quota("quinn", 10_000)
    inst.vault.make_dir("quinn/d")
    fast = dav_app.build_app(inst)
    reference = dav_app.build_app(inst, fast_files=False)
    yield fast, reference, inst
    inst.close()


def _request(app, method: str, path: str, body=b"", **headers) -> tuple[str, dict, bytes]:
    wsgi_path = path.encode("utf-8").decode("latin-1")  # PEP 3333
    stream = body if hasattr(body, "read") else io.BytesIO(body)
    env = {"REQUEST_METHOD": method, "PATH_INFO": wsgi_path, "wsgi.input": stream,
           "HTTP_AUTHORIZATION": AUTH if "quinn" not in path else QUINN,
           "wsgi.url_scheme": "http", "SERVER_NAME": "x",
           "SERVER_PORT": "1", "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "x",
           "wsgi.errors": io.StringIO(), **headers}
    got = []
    it = app(env, lambda s, h, e=None: got.append((s, h)))
    try:
        body = b"".join(it)
    finally:
        if hasattr(it, "close"):
            it.close()
    status, hdrs = got[0]
    if method == "PUT":
        # Versions and file IDs (OC-ETag, OC-FileId) differ between the two files.
        hdrs = [(k, "<etag>" if k in ("ETag", "OC-ETag") and re.fullmatch(
            r'"[0-9a-f]{32}"', v) else "<id>" if k == "OC-FileId" else v) for k, v in hdrs]
    body = re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", b"<time>", body)  # error pages
    return status, {k.lower(): v for k, v in hdrs if k.lower() != "date"}, body


PATHS = [f"/remote.php/dav/files/alice/dir/{n}" for n in FILES] + [
    "/remote.php/webdav/dir/a.txt",
    "/remote.php/dav/files/alice/dir/missing",
    "/remote.php/dav/files/alice/dir",
    "/remote.php/dav/files/bob/secret.txt",
    "/remote.php/dav/files/alice/../bob/secret.txt",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", PATHS)
def test_same_answer_as_wsgidav(apps, method, path):
    fast, reference, _ = apps
    assert _request(fast, method, path) == _request(reference, method, path)


def test_fast_path_serves_plaintext(apps):
    fast, _, _ = apps
    for name, data in FILES.items():
        status, headers, body = _request(fast, "GET", f"/remote.php/dav/files/alice/dir/{name}")
        assert status == "200 OK" and body == data
        assert headers["content-length"] == str(len(data))


def test_conditional_and_range_requests_still_work(apps):
    fast, _, _ = apps
    path = "/remote.php/dav/files/alice/dir/a.txt"
    _, headers, _ = _request(fast, "GET", path)
    status, _, body = _request(fast, "GET", path, HTTP_IF_NONE_MATCH=headers["etag"])
    assert status.startswith("304") and body == b""
    status, _, body = _request(fast, "GET", path, HTTP_RANGE="bytes=1-3")
    assert status.startswith("206") and body == b"ell"


def test_refused_file_gets_the_reference_error(apps):
    """A swapped file is refused the same way on both paths (nothing served)."""
    fast, reference, inst = apps
    inst.vault.write_bytes("alice/dir/victim", b"victim data")
    inst.vault.write_bytes("alice/dir/other", b"other data")
    root = inst.config.data_dir
    a = os.path.join(root, "files", "alice", "dir", "victim")
    b = os.path.join(root, "files", "alice", "dir", "other")
    with open(b, "rb") as f:
        other = f.read()
    with open(a, "wb") as f:
        f.write(other)
    got = _request(fast, "GET", "/remote.php/dav/files/alice/dir/victim")
    assert got[0].startswith("5") and b"victim" not in got[2] and b"other" not in got[2]
    assert got == _request(reference, "GET", "/remote.php/dav/files/alice/dir/victim")


def test_plain_get_takes_the_direct_path(apps, monkeypatch):
    """Guards the comparison above: WsgiDAV's resolver is not consulted by the fast path."""
    from davserver.dav.provider import HomeProvider

    calls = []
    real = HomeProvider.get_resource_inst
    monkeypatch.setattr(HomeProvider, "get_resource_inst",
                        lambda self, *a, **k: calls.append(a[0]) or real(self, *a, **k))
    fast, reference, _ = apps
    path = "/remote.php/dav/files/alice/dir/a.txt"
    assert _request(fast, "GET", path)[2] == b"hello" and calls == []
    assert _request(reference, "GET", path)[2] == b"hello" and calls


def test_large_file_is_read_ahead_with_the_same_answer(apps, monkeypatch):
    from davserver.dav import overlap

    bodies = []
    real = overlap.ReadAhead
    monkeypatch.setattr(overlap, "READ_AHEAD_MIN", 500_000)
    monkeypatch.setattr(overlap, "ReadAhead",
                        lambda *a, **k: bodies.append(real(*a, **k)) or bodies[-1])
    fast, reference, _ = apps
    path = "/remote.php/dav/files/alice/dir/big.tar.gz"
    got = _request(fast, "GET", path)
    assert len(bodies) == 1  # the 600 kB file took the helper; a.txt below does not
    assert got == _request(reference, "GET", path) and got[2] == FILES["big.tar.gz"]
    assert _request(fast, "GET", "/remote.php/dav/files/alice/dir/a.txt")[2] == b"hello"
    assert len(bodies) == 1


def _put(app, path, data, **headers):
    return _request(app, "PUT", path, data, CONTENT_LENGTH=str(len(data)), **headers)


PUT_CASES = {
    "new, then overwrite": [("f.bin", b"one", {}), ("f.bin", b"two two", {})],
    "client mtime": [("m.txt", b"m", {"HTTP_X_OC_MTIME": "1700000000"})],
    "bad client mtime": [("bad.txt", b"b", {"HTTP_X_OC_MTIME": "yesterday"})],
    "no parent": [("nope/f.txt", b"x", {})],
    "onto a folder": [("sub", b"x", {})],
    "empty body": [("e", b"", {})],
    "conditional": [("c.txt", b"1", {}), ("c.txt", b"2", {"HTTP_IF_MATCH": '"nomatch"'})],
}


@pytest.mark.parametrize("case", PUT_CASES, ids=list(PUT_CASES))
def test_put_same_answer_as_wsgidav(apps, case):
    fast, reference, inst = apps
    for side in ("fast", "ref"):
        inst.vault.make_dir(f"alice/{side}-{case}")
        inst.vault.make_dir(f"alice/{side}-{case}/sub")
    for name, data, headers in PUT_CASES[case]:
        answers = [_put(app, f"/remote.php/dav/files/alice/{side}-{case}/{name}", data,
                        **headers) for side, app in (("fast", fast), ("ref", reference))]
        assert answers[0] == answers[1]
    for name, _data, _ in PUT_CASES[case]:
        a, b = (inst.vault.stat(f"alice/{side}-{case}/{name}")
                for side in ("fast", "ref"))
        assert (a is None) == (b is None)
        if a is not None and not a.is_dir:
            assert (a.size, a.mtime if case == "client mtime" else 0) == (
                b.size, b.mtime if case == "client mtime" else 0)
            assert inst.vault.read_all(a.path) == inst.vault.read_all(b.path)


def test_put_is_direct_and_round_trips(apps, monkeypatch):
    from davserver.dav.provider import HomeProvider

    fast, _, inst = apps
    calls = []
    real = HomeProvider.get_resource_inst
    monkeypatch.setattr(HomeProvider, "get_resource_inst",
                        lambda self, *a, **k: calls.append(a[0]) or real(self, *a, **k))
    data = os.urandom(700_000)
    status, headers, _ = _put(fast, "/remote.php/dav/files/alice/dir/up.bin", data)
    assert status.startswith("201") and calls == []
    assert _request(fast, "GET", "/remote.php/dav/files/alice/dir/up.bin")[2] == data
    assert inst.vault.stat("alice/dir/up.bin").encrypted


def test_short_body_stores_nothing(apps):
    fast, _, inst = apps
    path = "/remote.php/dav/files/alice/dir/short.txt"
    _put(fast, path, b"before")
    status, _, body = _request(fast, "PUT", path, b"12345", CONTENT_LENGTH="10")
    assert status.startswith("400") and b"nothing was stored" in body
    assert inst.vault.read_all("alice/dir/short.txt") == b"before"
    assert os.listdir(os.path.join(inst.config.data_dir, "tmp")) == []


def test_quota_is_enforced(apps):
    fast, reference, inst = apps
    answers = []
    for app in (fast, reference):
        answers.append(_put(app, "/remote.php/dav/files/quinn/d/q", b"x" * 20_000))
        assert answers[-1][0].startswith("507")
        assert inst.vault.stat("quinn/d/q") is None
    assert answers[0] == answers[1]  # the error page WsgiDAV renders, from the direct path


WRONG = "Basic " + base64.b64encode(b"alice:wrong-one").decode()


@pytest.mark.parametrize("auth", [WRONG, "Basic !!", None], ids=["wrong password", "malformed",
                                                          "none"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_refused_logins_get_the_same_answer_and_count_once(apps, auth, method):
    fast, reference, inst = apps
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {"HTTP_AUTHORIZATION": ""}
    body = b"data" if method == "PUT" else b""
    if method == "PUT":
        headers["CONTENT_LENGTH"] = "4"
    answers = []
    for app in (fast, reference):
        before = inst.db.failure_counts(["user:alice"], 0).get("user:alice", (0,))[0]
        answers.append(_request(app, method, "/remote.php/dav/files/alice/dir/a.txt", body,
                                **headers))
        after = inst.db.failure_counts(["user:alice"], 0).get("user:alice", (0,))[0]
        assert after - before == (1 if auth == WRONG else 0)
        inst.db.clear_failures(["user:alice", "addr:"])
    assert answers[0] == answers[1]
    assert answers[0][0][:3] == ("401" if auth != "Basic !!" else "400")
    assert inst.vault.read_all("alice/dir/a.txt") == FILES["a.txt"]


LOCK_BODY = (b'<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
             b"</d:lockscope><d:locktype><d:write/></d:locktype></d:lockinfo>")


def _lock(app, path):
    status, headers, _ = _request(app, "LOCK", path, LOCK_BODY, HTTP_DEPTH="0",
                                  CONTENT_LENGTH=str(len(LOCK_BODY)), HTTP_TIMEOUT="Second-60")
    assert status.startswith("200"), status
    return headers["lock-token"]


def _unlock(app, path, token):
    assert _request(app, "UNLOCK", path, HTTP_LOCK_TOKEN=token)[0].startswith("204")


def test_locked_file_is_refused_without_its_token(apps):
    fast, _, inst = apps
    path = "/remote.php/dav/files/alice/dir/locked.txt"
    _put(fast, path, b"mine")
    token = _lock(fast, path)
    try:
        assert _put(fast, path, b"theirs")[0].startswith("423")
        assert inst.vault.read_all("alice/dir/locked.txt") == b"mine"
        assert _put(fast, path, b"mine 2", HTTP_IF=f"({token})")[0].startswith("204")
    finally:
        _unlock(fast, path, token)
    assert inst.vault.read_all("alice/dir/locked.txt") == b"mine 2"


class _LockWhileReading(io.BytesIO):
    """A request body during which another client takes a lock on the target."""

    def __init__(self, data, app, path):
        super().__init__(data)
        self.app, self.path, self.token = app, path, None

    def read(self, n=-1):
        if self.token is None:
            self.token = _lock(self.app, self.path)
        return super().read(n)


def test_lock_taken_during_the_upload_wins(apps):
    fast, _, inst = apps
    path = "/remote.php/dav/files/alice/dir/race.txt"
    _put(fast, path, b"original")
    body = _LockWhileReading(b"overwrite", fast, path)
    try:
        status, _, _ = _request(fast, "PUT", path, body, CONTENT_LENGTH="9")
        assert status.startswith("423")
        assert inst.vault.read_all("alice/dir/race.txt") == b"original"
    finally:
        _unlock(fast, path, body.token)


@pytest.mark.parametrize("which", ["fast", "reference"])
def test_commit_between_stat_and_open_never_mixes_versions(apps, monkeypatch, which):
    """Headers (Content-Length, ETag) always describe the bytes sent, even when another
    upload commits between the lookup and the open."""
    fast, reference, inst = apps
    app = fast if which == "fast" else reference
    path = f"alice/dir/race-{which}.bin"
    old, new = b"o" * 1000, b"n" * 3000
    inst.vault.write_bytes(path, old)
    real_stat = type(inst.vault).stat
    fired = []

    def stat_then_commit(self, p):
        node = real_stat(self, p)
        if p == path and not fired:
            fired.append(1)
            inst.vault.write_bytes(path, new)  # lands after the lookup, before the open
        return node

    monkeypatch.setattr(type(inst.vault), "stat", stat_then_commit)
    status, headers, body = _request(app, "GET", f"/remote.php/dav/files/{path}")
    assert fired and status == "200 OK"
    assert body == new and headers["content-length"] == str(len(new))
    assert headers["etag"] == f'"{inst.vault.stat(path).etag}"'


def test_lock_on_another_file_during_the_upload_does_not_refuse_it(apps):
    """Another client of the same account locking a different file (or a sibling folder)
    while the body arrives is no conflict: the upload is stored (found by bench/soak.py)."""
    fast, _, inst = apps
    _put(fast, "/remote.php/dav/files/alice/dir/other.txt", b"other")
    other = "/remote.php/dav/files/alice/dir/other.txt"
    path = "/remote.php/dav/files/alice/dir/mine.txt"
    body = _LockWhileReading(b"stored", fast, other)
    try:
        status, _, _ = _request(fast, "PUT", path, body, CONTENT_LENGTH="6")
        assert status.startswith("201"), status
        assert inst.vault.read_all("alice/dir/mine.txt") == b"stored"
    finally:
        _unlock(fast, other, body.token)


def test_lock_on_the_folder_during_the_upload_wins(apps):
    fast, _, inst = apps
    folder = "/remote.php/dav/files/alice/dir"
    path = folder + "/new-in-locked.txt"
    body = _LockWhileReading(b"refused", fast, folder)
    try:
        status, _, _ = _request(fast, "PUT", path, body, CONTENT_LENGTH="7")
        assert status.startswith("423"), status
        assert inst.vault.stat("alice/dir/new-in-locked.txt") is None
    finally:
        _unlock(fast, folder, body.token)
