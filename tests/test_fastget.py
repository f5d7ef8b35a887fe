"""The direct GET/HEAD answers exactly what WsgiDAV's generic GET answers."""

from __future__ import annotations

import base64
import io
import os
import re

import pytest

from davserver.dav import app as dav_app
from tests.instances import make_instance

AUTH = "Basic " + base64.b64encode(b"alice:alicepass1").decode()
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
    fast = dav_app.build_app(inst)
    reference = dav_app.build_app(inst, fast_get=False)
    yield fast, reference, inst
    inst.close()


def _request(app, method: str, path: str, **headers) -> tuple[str, dict, bytes]:
    wsgi_path = path.encode("utf-8").decode("latin-1")  # PEP 3333
    env = {"REQUEST_METHOD": method, "PATH_INFO": wsgi_path, "wsgi.input": io.BytesIO(b""),
           "HTTP_AUTHORIZATION": AUTH, "wsgi.url_scheme": "http", "SERVER_NAME": "x",
           "SERVER_PORT": "1", "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1",
           "wsgi.errors": io.StringIO(), **headers}
    got = []
    it = app(env, lambda s, h, e=None: got.append((s, h)))
    try:
        body = b"".join(it)
    finally:
        if hasattr(it, "close"):
            it.close()
    status, hdrs = got[0]
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
