"""Range GETs on the direct path answer exactly what WsgiDAV answers, byte and header.

Every range form is sent to both paths for an encrypted and a plaintext file, in master-key
and user-key mode; the forms the direct path takes must not reach WsgiDAV's resolver, the
others (several ranges, unsatisfiable, malformed) must, and still answer the same.
"""

from __future__ import annotations

import os

import pytest

from davserver.dav import app as dav_app
from davserver.dav.provider import HomeProvider
from davserver.vault import context
from tests.instances import make_instance
from tests.test_fastfiles import _request

SIZE = 600_000  # three 256 KiB chunks, the last one partial
DATA = os.urandom(SIZE)
CHUNK = 1 << 18

#: Range header -> does the direct path answer it.
FORMS = {
    "bytes=0-0": True,
    "bytes=1-3": True,
    f"bytes={CHUNK - 5}-{CHUNK + 5}": True,  # across a chunk boundary
    f"bytes={SIZE - 1}-{SIZE - 1}": True,  # the last byte
    f"bytes={CHUNK}-": True,
    "bytes=0-": True,
    "bytes=-4": True,
    f"bytes=-{SIZE + 10}": True,  # a suffix longer than the file: all of it
    f"bytes=10-{SIZE * 2}": True,  # an end past the file
    " bytes=7-9 ": True,
    "bytes=1-3,5-6": False,  # several ranges
    "bytes=0-1,1-4": False,
    f"bytes={SIZE}-": False,  # 416
    f"bytes={SIZE + 5}-{SIZE + 9}": False,
    "bytes=5-3": False,  # reversed
    "bytes=-0": False,
    "items=0-3": False,
    "bytes=abc": False,
}


@pytest.fixture(scope="module", params=["master", "user"])
def apps(tmp_path_factory, request):
    inst = make_instance(tmp_path_factory.mktemp(f"ranges-{request.param}"),
                         user_mode=request.param == "user")
    inst.users.add("alice", "alicepass1")
    inst.users.add("quinn", "quinnpass1")  # used by the shared request helper
    principal = inst.login.login("alice", "alicepass1")
    with context.acting_as(*principal.identities):
        inst.vault.make_dir("alice/dir")
        inst.vault.write_bytes("alice/dir/enc.bin", DATA)
        inst.vault.write_bytes("alice/dir/empty", b"")
        up = inst.vault.begin_write("alice/dir/plain.bin", encrypt=False)
        up.write(DATA)
        up.commit()
    assert inst.vault.stat("alice/dir/enc.bin").encrypted
    assert not inst.vault.stat("alice/dir/plain.bin").encrypted
    yield dav_app.build_app(inst), dav_app.build_app(inst, fast_files=False), inst
    inst.close()


@pytest.fixture
def resolved(monkeypatch):
    """Paths WsgiDAV's resolver was asked for (empty: the direct path answered)."""
    calls: list[str] = []
    real = HomeProvider.get_resource_inst
    monkeypatch.setattr(HomeProvider, "get_resource_inst",
                        lambda self, *a, **k: calls.append(a[0]) or real(self, *a, **k))
    return calls


def _both(apps, resolved, method, path, **headers):
    fast, reference, _ = apps
    got = _request(fast, method, path, **headers)
    direct = not resolved
    want = _request(reference, method, path, **headers)
    return got, want, direct


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("name", ["enc.bin", "plain.bin"])
@pytest.mark.parametrize("form", FORMS, ids=list(FORMS))
def test_range_same_answer_as_wsgidav(apps, resolved, method, name, form):
    got, want, direct = _both(apps, resolved, method, f"/remote.php/dav/files/alice/dir/{name}",
                              HTTP_RANGE=form)
    assert got == want
    assert direct == FORMS[form]
    status, headers, body = got
    if direct:
        first, last = map(int, headers["content-range"].split()[1].split("/")[0].split("-"))
        assert status == "206 Partial Content"
        assert headers["content-length"] == str(last - first + 1)
        assert body == (DATA[first:last + 1] if method == "GET" else b"")


@pytest.mark.parametrize("form", ["bytes=0-3", "bytes=-2", "bytes=3-"])
def test_range_of_empty_file_same_as_wsgidav(apps, resolved, form):
    got, want, _ = _both(apps, resolved, "GET", "/remote.php/dav/files/alice/dir/empty",
                         HTTP_RANGE=form)
    assert got == want and got[0] == "200 OK" and got[2] == b""


def _validators(apps, name):
    _, headers, _ = _request(apps[0], "HEAD", f"/remote.php/dav/files/alice/dir/{name}")
    return headers["etag"], headers["last-modified"]


IF_RANGE = {
    "etag matches": (lambda etag, date: etag, True),
    "etag differs": (lambda etag, date: '"0123456789abcdef"', False),
    "weak etag": (lambda etag, date: "W/" + etag, False),
    "date matches": (lambda etag, date: date, True),
    "older date": (lambda etag, date: "Sun, 06 Nov 1994 08:49:37 GMT", False),
}


@pytest.mark.parametrize("name", ["enc.bin", "plain.bin"])
@pytest.mark.parametrize("case", IF_RANGE, ids=list(IF_RANGE))
def test_if_range_same_answer_as_wsgidav(apps, resolved, name, case):
    value, partial = IF_RANGE[case]
    etag, date = _validators(apps, name)
    resolved.clear()
    got, want, direct = _both(apps, resolved, "GET", f"/remote.php/dav/files/alice/dir/{name}",
                              HTTP_RANGE="bytes=100-199", HTTP_IF_RANGE=value(etag, date))
    assert got == want and direct
    assert got[0] == ("206 Partial Content" if partial else "200 OK")
    assert got[2] == (DATA[100:200] if partial else DATA)


def test_if_range_without_range_is_a_plain_get(apps, resolved):
    got, want, direct = _both(apps, resolved, "GET", "/remote.php/dav/files/alice/dir/enc.bin",
                              HTTP_IF_RANGE='"nomatch"')
    assert got == want and direct and got[0] == "200 OK" and got[2] == DATA


def test_range_of_a_cut_file_is_refused_like_wsgidav(apps, resolved, tmp_path):
    """The final chunk is authenticated before any part is served, also for bytes=0-."""
    fast, reference, inst = apps
    principal = inst.login.login("alice", "alicepass1")
    with context.acting_as(*principal.identities):
        inst.vault.write_bytes("alice/dir/cut.bin", DATA)
    blob = os.path.join(inst.config.data_dir, "files", "alice", "dir", "cut.bin")
    with open(blob, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))  # tamper with the last chunk's tag
    for form in ("bytes=0-9", "bytes=300000-300009"):
        got = _request(fast, "GET", "/remote.php/dav/files/alice/dir/cut.bin", HTTP_RANGE=form)
        assert got[0][0] == "5" and DATA[:10] not in got[2]
        assert got == _request(reference, "GET", "/remote.php/dav/files/alice/dir/cut.bin",
                               HTTP_RANGE=form)
