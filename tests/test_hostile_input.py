"""Hostile input over HTTP, one parametrised case per item of docs/SECURITY.md's list.

Every case talks to a real server process over a raw socket (no client-side cleaning of
paths or headers) with a timeout, so a hang fails the test. Each must be answered with a
clear status and a message body, never a 500 or a traceback, and the server must answer
a normal request afterwards. test_http_errors.py holds the older cases (simple
traversals, quota, disconnects mid-PUT); this module adds the rest.
"""

from __future__ import annotations

import os
import re
import socket
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests

from tests.browser import WEAK_KDF, ldap_config
from tests.conftest_ldap import unique
from tests.live import LiveServer, wait_until
from tests.test_http_errors import basic

TIMEOUT = 15.0
DAV = "/remote.php/dav/files"
#: The server's socket timeout: short, so the slowloris cases end quickly. Every other
#: request here is sent in one piece, so it does not matter to them.
SOCKET_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module: alice and bob, and carol with a 1 MB quota."""
    srv = LiveServer(tmp_path_factory.mktemp("hostile"),
                     users={"alice": None, "bob": None, "carol": "1MB"},
                     config={"server": {"socket_timeout": SOCKET_TIMEOUT},
                             "encryption": WEAK_KDF,
                             "auth": {"throttle_max_failures": 1000}})
    try:
        yield srv.create().start()
    finally:
        srv.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_reply(raw: bytes) -> Reply:
    assert raw.startswith(b"HTTP/1."), f"no HTTP reply: {raw[:300]!r}"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    elif "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return Reply(status, headers, body, raw)


def exchange(srv: LiveServer, data: bytes, *, shut_write: bool = False,
             timeout: float = TIMEOUT, source: str = "") -> bytes:
    """Send ``data`` on a fresh connection (from the loopback address ``source``, if
    given) and read until the server closes it. A server that neither answers nor closes
    within ``timeout`` fails the test (a hang)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        try:
            s.sendall(data)
            if shut_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking everything: read the answer
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"server hung: no close within {timeout} s; got "
                                     f"{b''.join(chunks)[:300]!r}") from None
            if not b:
                break
            chunks.append(b)
            if time.monotonic() > deadline:
                raise AssertionError("server kept sending past the timeout")
        return b"".join(chunks)


def request(srv: LiveServer, method: str, path: str, *, user: str | None = "alice",
            headers: dict[str, str] | list[tuple[str, str]] | None = None,
            body: bytes = b"", raw_head: bytes = b"", **kw) -> Reply:
    """One request with Connection: close; ``path`` goes on the wire exactly as given."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if user:
        head += f"Authorization: {basic(user, srv.users[user])}\r\n"
    if "content-length" not in names and "transfer-encoding" not in names:
        head += f"Content-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in items)
    return parse_reply(exchange(srv, head.encode("latin-1") + raw_head + b"\r\n" + body,
                                **kw))


def assert_refused(r: Reply, *statuses: int) -> None:
    """A clear refusal: one of ``statuses`` (any 4xx if none), a body saying why, no
    traceback."""
    text = r.text()
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    if statuses:
        assert r.status in statuses, f"{r.status}: {text[:500]}"
    else:
        assert 400 <= r.status < 500, f"{r.status}: {text[:500]}"
    assert r.body.strip(), f"{r.status} without a message body"


def assert_alive(srv: LiveServer, log_from: int = 0) -> None:
    """A normal request is answered, and the log has no traceback since ``log_from``."""
    r = requests.request("PROPFIND", srv.url("alice"), auth=srv.auth("alice"),
                         headers={"Depth": "0"}, timeout=TIMEOUT)
    assert r.status_code == 207, (r.status_code, r.text[:300])
    new = srv.log_text()[log_from:]
    assert "Traceback" not in new, new[-4000:]


def home(user: str, name: str = "") -> str:
    return f"{DAV}/{user}/{name}"


@pytest.fixture(scope="module")
def files(server: LiveServer) -> dict[str, bytes]:
    """Known files in alice's and bob's homes, checked again after each case."""
    content = {("alice", "a.txt"): b"ALICE-" + os.urandom(8).hex().encode(),
               ("bob", "b.txt"): b"BOB-ONLY-" + os.urandom(8).hex().encode(),
               ("alice", "range.bin"): bytes(range(256)) * 4}
    for (user, name), data in content.items():
        r = server.session(user).put(server.url(user, name), data=data, timeout=TIMEOUT)
        assert r.status_code in (201, 204), r.text
    return content


@pytest.fixture
def checked(server, files):
    """The server after the case: still answering, nothing stored changed, no temp files."""
    log_from = len(server.log_text())
    yield server
    assert_alive(server, log_from)
    for (user, name), data in files.items():
        r = server.session(user).get(server.url(user, name), timeout=TIMEOUT)
        assert r.status_code == 200 and r.content == data, (user, name, r.status_code)
    assert wait_until(lambda: not server.tmp_files(), timeout=10), server.tmp_files()


# --- XML bodies -----------------------------------------------------------------------

XXE_GENERAL = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
               b'%s')
XXE_PARAM = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY %% x SYSTEM "file:///etc/passwd">'
             b' %%x;]>%s')
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "ha!ha!ha!ha!ha!ha!ha!ha!ha!ha!">'
          + b"".join(b'<!ENTITY %c "%s">' % (ord("a") + i + 1, b"&%c;" % (ord("a") + i) * 10)
                     for i in range(9))
          + b']>%s')
PROPFIND_BODY = (b'<d:propfind xmlns:d="DAV:"><d:prop><d:getetag>%s</d:getetag></d:prop>'
                 b'</d:propfind>')
PROPPATCH_BODY = (b'<d:propertyupdate xmlns:d="DAV:" xmlns:z="urn:z"><d:set><d:prop>'
                  b'<z:note>%s</z:note></d:prop></d:set></d:propertyupdate>')
LOCK_BODY = (b'<d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/></d:lockscope>'
             b'<d:locktype><d:write/></d:locktype><d:owner>%s</d:owner></d:lockinfo>')
BODIES = {"PROPFIND": (PROPFIND_BODY, ""), "PROPPATCH": (PROPPATCH_BODY, "a.txt"),
          "LOCK": (LOCK_BODY, "a.txt")}


def _xml(kind: str, method: str) -> bytes:
    template = BODIES[method][0]
    if kind == "xxe-external":
        return XXE_GENERAL % (template % b"&xxe;")
    if kind == "xxe-parameter":
        return XXE_PARAM % (template % b"")
    if kind == "billion-laughs":
        return LAUGHS % (template % b"&j;")
    if kind == "deep-nesting":
        return template % (b"<z:n xmlns:z='urn:z'>" * 100_000 + b"</z:n>" * 100_000)
    if kind == "nested-100":  # small, but deeper than anything a client sends
        return template % (b"<z:n xmlns:z='urn:z'>" * 100 + b"</z:n>" * 100)
    if kind == "huge-attribute":
        return template % (b"<z:n xmlns:z='urn:z' a='" + b"A" * (8 << 20) + b"'/>")
    if kind == "invalid-utf8":
        return template % b"\xc3\x28\xff\xfe"
    if kind == "wrong-namespace":
        return template.replace(b'xmlns:d="DAV:"', b'xmlns:d="urn:not-dav"') % b""
    raise AssertionError(kind)


XML_KINDS = ["xxe-external", "xxe-parameter", "billion-laughs", "deep-nesting", "nested-100",
             "huge-attribute", "invalid-utf8", "wrong-namespace"]


#: 413 for bodies over xmlbody.MAX_BYTES; every other case is 400 with its reason
XML_STATUS = {"deep-nesting": (413,), "huge-attribute": (413,)}


@pytest.mark.parametrize("method", list(BODIES))
@pytest.mark.parametrize("kind", XML_KINDS)
def test_hostile_xml(checked, files, kind, method):
    srv = checked
    body = _xml(kind, method)
    r = request(srv, method, home("alice", BODIES[method][1]), body=body,
                headers={"Content-Type": "application/xml", "Depth": "0"})
    assert_refused(r, *XML_STATUS.get(kind, (400,)))
    assert b"root:" not in r.raw
    if method == "LOCK":  # nothing was locked: a plain PUT still works
        r = srv.session("alice").put(srv.url("alice", "a.txt"), data=b"x", timeout=TIMEOUT)
        assert r.status_code == 204, r.text
        srv.session("alice").put(srv.url("alice", "a.txt"), data=files[("alice", "a.txt")],
                                 timeout=TIMEOUT)
    if method == "PROPPATCH":  # nothing was stored as a dead property
        r = srv.session("alice").request(
            "PROPFIND", srv.url("alice", "a.txt"), headers={"Depth": "0"}, timeout=TIMEOUT,
            data=b'<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>')
        assert r.status_code == 207 and "urn:z" not in r.text, r.text[:500]


# --- paths ----------------------------------------------------------------------------

LONG = "n" * 4096
#: What each case is answered: 400 when the path cannot name a file at all, otherwise
#: what a path that names nothing gets (404, or 409 for a write whose parent does not
#: exist): another user's home is answered exactly like a missing one.
PATH_STATUS = {"dotdot": 404, "encoded-dotdot-slash": 404, "double-encoded": 404,
               "overlong-utf8": 400, "overlong-utf8-put": 400, "invalid-utf8-put": 400,
               "nul-get": 400, "nul-put": 400, "backslash": 404, "raw-backslash": 404,
               "name-4KiB-put": 400, "name-4KiB-mkcol": 400, "name-4KiB-get": 400,
               "path-4KiB-put": 409, "other-home-get": 404, "other-home-propfind": 404,
               "other-home-put": 409, "other-home-delete": 404, "other-home-mkcol": 409,
               "other-home-lock": 409}
PATHS = {
    # case id: (method, path) -- every one must be refused and reach nothing of bob's
    "dotdot": ("GET", home("alice", "../bob/b.txt")),
    "encoded-dotdot-slash": ("GET", home("alice", "%2e%2e%2fbob%2fb.txt")),
    "double-encoded": ("GET", home("alice", "%252e%252e%252fbob%252fb.txt")),
    "overlong-utf8": ("GET", home("alice", "%c0%ae%c0%ae%c0%afbob%c0%afb.txt")),
    "overlong-utf8-put": ("PUT", home("alice", "%c0%ae%c0%ae.txt")),
    "invalid-utf8-put": ("PUT", home("alice", "%ff%fe.txt")),
    "nul-get": ("GET", home("alice", "a.txt%00.jpg")),
    "nul-put": ("PUT", home("alice", "x%00y.txt")),
    "backslash": ("GET", home("alice", "..%5c..%5cbob%5cb.txt")),
    "raw-backslash": ("GET", home("alice", "..\\bob\\b.txt")),
    "name-4KiB-put": ("PUT", home("alice", LONG)),
    "name-4KiB-mkcol": ("MKCOL", home("alice", LONG)),
    "name-4KiB-get": ("GET", home("alice", LONG)),
    "path-4KiB-put": ("PUT", home("alice", "/".join(["d" * 200] * 20) + "/f")),
    "other-home-get": ("GET", home("bob", "b.txt")),
    "other-home-propfind": ("PROPFIND", home("bob")),
    "other-home-put": ("PUT", home("bob", "b.txt")),
    "other-home-delete": ("DELETE", home("bob", "b.txt")),
    "other-home-mkcol": ("MKCOL", home("bob", "newdir")),
    "other-home-lock": ("LOCK", home("bob", "b.txt")),
}


@pytest.mark.parametrize("case", list(PATHS))
def test_hostile_path(checked, files, case):
    srv = checked
    method, path = PATHS[case]
    body = b"HOSTILE-WRITE" if method == "PUT" else b""
    if method == "LOCK":
        body = LOCK_BODY % b"x"
    r = request(srv, method, path, body=body, headers={"Depth": "0"})
    assert_refused(r, PATH_STATUS[case])
    assert files[("bob", "b.txt")] not in r.raw
    bob = os.listdir(os.path.join(srv.data_dir, "files", "bob"))
    assert bob == ["b.txt"], bob
    alice = os.listdir(os.path.join(srv.data_dir, "files", "alice"))
    assert not [n for n in alice if "HOSTILE" in n or "\x00" in n or len(n) > 255], alice


def test_bob_cannot_read_alice_and_learns_nothing(checked, files):
    """Another home answers exactly like a home that does not exist."""
    srv = checked
    for method in ("GET", "PROPFIND", "HEAD", "DELETE", "MOVE", "COPY", "PUT", "MKCOL",
                   "PROPPATCH", "LOCK"):
        hdrs = {"Depth": "0", "Destination": srv.url("bob", "stolen.txt")}
        body = {"PUT": b"overwrite", "PROPPATCH": PROPPATCH_BODY % b"x",
                "LOCK": LOCK_BODY % b"x"}.get(method, b"")
        there = request(srv, method, home("alice", "a.txt"), user="bob", headers=hdrs,
                        body=body)
        absent = request(srv, method, home("nosuchuser", "a.txt"), user="bob", headers=hdrs,
                         body=body)
        assert there.status == absent.status, (method, there.status, absent.status)
        assert there.status in (403, 404, 409), (method, there.status)
        if method != "HEAD":
            assert_refused(there)
        assert files[("alice", "a.txt")] not in there.raw
        assert _masked(there.body, "alice") == _masked(absent.body, "nosuchuser"), method


def _masked(body: bytes, user: str) -> bytes:
    """An error page with the asked-for user name and the time stamp left out."""
    return re.sub(rb"\d{4}-\d\d-\d\d [\d:.]+", b"", body.replace(user.encode(), b"U"))


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_destination_in_other_home_is_refused(checked, files, method):
    srv = checked
    r = request(srv, method, home("alice", "a.txt"),
                headers={"Destination": srv.url("bob", "from-alice.txt")})
    assert_refused(r, 403, 404, 502)
    assert os.listdir(os.path.join(srv.data_dir, "files", "bob")) == ["b.txt"]


@pytest.mark.parametrize("first", ["NFC", "NFD"])
def test_unicode_normalisation_twins(checked, first):
    """Names are stored byte for byte as sent: the NFC and NFD spellings of one name
    are two names (as on the Linux file system underneath), each reads back what was
    written under it, and a listing shows each as stored."""
    srv = checked
    other = "NFD" if first == "NFC" else "NFC"
    base = f"twin-{first}-caf\u00e9.txt"
    a, b = unicodedata.normalize(first, base), unicodedata.normalize(other, base)
    assert a != b
    s = srv.session("alice")
    assert s.put(srv.url("alice", quote(a)), data=b"first", timeout=TIMEOUT).status_code == 201
    assert s.get(srv.url("alice", quote(b)), timeout=TIMEOUT).status_code == 404
    assert s.put(srv.url("alice", quote(b)), data=b"second", timeout=TIMEOUT).status_code == 201
    assert s.get(srv.url("alice", quote(a)), timeout=TIMEOUT).content == b"first"
    assert s.get(srv.url("alice", quote(b)), timeout=TIMEOUT).content == b"second"
    listing = s.request("PROPFIND", srv.url("alice"), headers={"Depth": "1"},
                        timeout=TIMEOUT).text
    assert quote(a) in listing and quote(b) in listing
    for name in (a, b):
        assert s.delete(srv.url("alice", quote(name)), timeout=TIMEOUT).status_code == 204


# --- headers --------------------------------------------------------------------------

HEADERS: dict[str, tuple[str, str, list[tuple[str, str]], bytes, bytes]] = {
    # case id: (method, path, headers, extra raw header bytes, body)
    "huge-header": ("GET", home("alice", "a.txt"), [("X-Big", "a" * (1 << 20))], b"", b""),
    "many-headers": ("GET", home("alice", "a.txt"),
                     [(f"X-H{i}", "v") for i in range(20_000)], b"", b""),
    "cl-and-te": ("PUT", home("alice", "a.txt"),
                  [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], b"",
                  b"5\r\nSMUGG\r\n0\r\n\r\n"),
    "two-content-lengths": ("PUT", home("alice", "a.txt"),
                            [("Content-Length", "5"), ("Content-Length", "7")], b"",
                            b"SMUGGLE"),
    "negative-content-length": ("PUT", home("alice", "a.txt"), [("Content-Length", "-5")],
                                b"", b""),
    "junk-content-length": ("PUT", home("alice", "a.txt"), [("Content-Length", "5x")],
                            b"", b"xxxxx"),
    "unknown-transfer-encoding": ("PUT", home("alice", "a.txt"),
                                  [("Transfer-Encoding", "gzip, chunked")], b"",
                                  b"0\r\n\r\n"),
    "header-without-colon": ("GET", home("alice", "a.txt"), [], b"NoColonHere\r\n", b""),
    "destination-garbage": ("COPY", home("alice", "a.txt"),
                            [("Destination", "::not a url::")], b"", b""),
    "destination-other-host": ("COPY", home("alice", "a.txt"),
                               [("Destination", "http://evil.example/remote.php/dav/files/"
                                 "alice/c.txt")], b"", b""),
    "destination-outside-dav": ("COPY", home("alice", "a.txt"),
                                [("Destination", "/etc/passwd")], b"", b""),
    "destination-dotdot": ("MOVE", home("alice", "a.txt"),
                           [("Destination", f"{DAV}/alice/../bob/c.txt")], b"", b""),
    "destination-self": ("MOVE", home("alice", "a.txt"),
                         [("Destination", home("alice", "a.txt"))], b"", b""),
    "destination-invalid-utf8": ("COPY", home("alice", "a.txt"),
                                 [("Destination", home("alice", "%c0%ae%ff.txt"))], b"", b""),
    "destination-nul": ("COPY", home("alice", "a.txt"),
                        [("Destination", home("alice", "c%00.txt"))], b"", b""),
    "destination-4KiB-name": ("COPY", home("alice", "a.txt"),
                              [("Destination", home("alice", LONG))], b"", b""),
    "overwrite-invalid": ("COPY", home("alice", "a.txt"),
                          [("Destination", home("alice", "c.txt")), ("Overwrite", "maybe")],
                          b"", b""),
    "depth-invalid": ("PROPFIND", home("alice"), [("Depth", "2")], b"", b""),
    "depth-negative": ("PROPFIND", home("alice"), [("Depth", "-1")], b"", b""),
    "depth-copy-invalid": ("COPY", home("alice", "a.txt"),
                           [("Destination", home("alice", "c.txt")), ("Depth", "1")],
                           b"", b""),
    "if-garbage": ("PUT", home("alice", "a.txt"), [("If", "((((<<>>")], b"", b"IF"),
    "if-unknown-token": ("PUT", home("alice", "a.txt"),
                         [("If", "(<opaquelocktoken:nope>)")], b"", b"IF"),
    "if-tag-without-list": ("PUT", home("alice", "a.txt"), [("If", "<http://x/a.txt>")],
                            b"", b"IF"),
    "if-empty-list": ("PUT", home("alice", "a.txt"), [("If", "()")], b"", b"IF"),
}


HEADER_STATUS = {
    "huge-header": 413, "many-headers": 413, "cl-and-te": 400, "two-content-lengths": 400,
    "negative-content-length": 400, "junk-content-length": 400,
    "unknown-transfer-encoding": 501, "header-without-colon": 400,
    # RFC 4918 9.8.5: 502 for a destination this server cannot write to
    "destination-garbage": 502, "destination-other-host": 502,
    "destination-outside-dav": 502, "destination-dotdot": 409, "destination-self": 403,
    "destination-invalid-utf8": 400, "destination-nul": 400, "destination-4KiB-name": 400,
    "overwrite-invalid": 400, "depth-invalid": 400, "depth-negative": 400,
    "depth-copy-invalid": 400, "if-garbage": 400, "if-unknown-token": 412,
    "if-tag-without-list": 400, "if-empty-list": 400,
}


@pytest.mark.parametrize("case", list(HEADERS))
def test_hostile_headers(checked, case):
    srv = checked
    method, path, headers, raw, body = HEADERS[case]
    r = request(srv, method, path, headers=headers, raw_head=raw, body=body)
    assert_refused(r, HEADER_STATUS[case])


#: Timeout on LOCK is a request the server may ignore (RFC 4918 10.7): whatever is
#: asked, the lock granted expires, and no later than WsgiDAV's maximum.
MAX_LOCK_SECONDS = 4 * 7 * 24 * 3600


@pytest.mark.parametrize("timeout", ["Second-abc", "Second-" + "9" * 400, "Infinite",
                                     "Second--5", "Infinite, Second-" + "9" * 40, ""],
                         ids=["garbage", "overflow", "infinite", "negative",
                              "infinite-list", "empty"])
def test_lock_timeout_is_bounded(checked, timeout):
    srv = checked
    r = request(srv, "LOCK", home("alice", "a.txt"), headers={"Timeout": timeout},
                body=LOCK_BODY % b"t")
    assert r.status == 200, (r.status, r.text()[:300])
    token = r.headers["lock-token"]
    try:
        granted = re.search(r"timeout>([^<]*)<", r.text())
        assert granted, r.text()
        m = re.fullmatch(r"Second-(\d+)", granted.group(1))
        assert m and 0 < int(m.group(1)) <= MAX_LOCK_SECONDS, granted.group(1)
    finally:
        r = request(srv, "UNLOCK", home("alice", "a.txt"), headers={"Lock-Token": token})
        assert r.status == 204, r.status


@pytest.mark.parametrize("value", [
    "(<urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2>)",
    '(<urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2> ["I am an ETag"]) (["I am another"])',
    "(Not <urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2> <urn:uuid:58f202ac-22cf>)",
    '</resource1> (<urn:uuid:181d4fae> [W/"A weak ETag"]) (["strong ETag"])',
    "<http://www.example.com/specs/> (<urn:uuid:181d4fae>) </x y> (Not <DAV:no-lock>)",
    '(<opaquelocktoken:abc>) (Not <DAV:no-lock> ["etag"])',
], ids=["token", "token-and-etags", "not", "tagged-weak", "two-tagged", "litmus-style"])
def test_well_formed_if_headers_are_accepted(value):
    """The If check must not refuse what RFC 4918 allows (its section 10.4 examples)."""
    from davserver.dav.requestcheck import if_header_ok

    assert if_header_ok(value)


#: Request lines cheroot or WsgiDAV refuse on their own; kept here so a change of either
#: cannot turn one into a 500.
REQUEST_LINES = {
    "http-0.9": ("GET {dav}/alice/\r\n", 400),
    "http-2.0": ("GET {dav}/alice/ HTTP/2.0", 505),
    "absolute-uri": ("GET http://127.0.0.1:{port}{dav}/alice/ HTTP/1.1", 400),
    "fragment": ("GET {dav}/alice/#x HTTP/1.1", 400),
    "relative-target": ("GET remote.php/dav HTTP/1.1", 400),
    "unknown-method": ("FOO {dav}/alice/ HTTP/1.1", 405),
    "5000-byte-method": ("A" * 5000 + " {dav}/alice/ HTTP/1.1", 405),
    "64KiB-target": ("GET {dav}/alice/" + "a/" * 40000 + " HTTP/1.1", 414),
}


@pytest.mark.parametrize("protocol,status", [("HTTP/1.1", 400), ("HTTP/1.0", 200)])
def test_host_header_required_by_http_1_1(checked, protocol, status):
    """RFC 9112 3.2: HTTP/1.1 without Host is refused; HTTP/1.0 had no such rule."""
    srv = checked
    head = (f"GET {DAV}/alice/a.txt {protocol}\r\nConnection: close\r\n"
            f"Authorization: {basic(*srv.auth('alice'))}\r\n\r\n")
    r = parse_reply(exchange(srv, head.encode()))
    assert r.status == status, r
    if status == 400:
        assert b"Host" in r.body


@pytest.mark.parametrize("case", list(REQUEST_LINES))
def test_malformed_request_line(checked, case):
    srv = checked
    line, status = REQUEST_LINES[case]
    line = line.format(dav=DAV, port=srv.port)
    head = line if line.endswith("\r\n") else (
        f"{line}\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: {basic(*srv.auth('alice'))}\r\n")
    r = parse_reply(exchange(srv, head.encode() + b"\r\n"))
    assert_refused(r, status)


RANGES = {
    # Range header: acceptable answers. Ignoring a Range (200 + whole file) is allowed
    # by RFC 9110; a partial answer must then be right.
    "multi-range": "bytes=0-1,5-6",
    "suffix-overflow": "bytes=-" + "9" * 40,
    "start-overflow": "bytes=" + "9" * 40 + "-",
    "negative": "bytes=-5-10",
    "reversed": "bytes=10-5",
    "not-bytes": "lines=0-1",
    "garbage": "bytes=abc",
    "empty": "bytes=",
    "many-ranges": "bytes=" + ",".join(f"{i}-{i}" for i in range(5000)),
}


@pytest.mark.parametrize("case", list(RANGES))
def test_invalid_range(checked, files, case):
    srv = checked
    whole = files[("alice", "range.bin")]
    r = request(srv, "GET", home("alice", "range.bin"), headers={"Range": RANGES[case]})
    assert b"Traceback" not in r.raw
    if r.status == 200:
        assert r.body == whole
    elif r.status == 206:
        crange = r.headers.get("content-range", "")
        assert crange.startswith("bytes "), r.headers
        span, _, total = crange[6:].partition("/")
        start, _, end = span.partition("-")
        assert int(total) == len(whole)
        assert r.body == whole[int(start):int(end) + 1]
    else:
        assert_refused(r, 400, 416)


# --- bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_truncated_body_keeps_old_version(checked, files, framing):
    """The client announces more than it sends and half-closes: the direct path
    (Content-Length) and WsgiDAV's (chunked) both store nothing; the `checked` fixture
    then finds the previous version intact and no temp file left."""
    srv = checked
    if framing == "content-length":
        framing, body = "Content-Length: 100000", os.urandom(1000)
    else:
        framing, body = "Transfer-Encoding: chunked", b"186a0\r\n" + os.urandom(1000)
    raw = exchange(srv, (f"PUT {home('alice', 'a.txt')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {basic(*srv.auth('alice'))}\r\n"
                         f"{framing}\r\n\r\n").encode() + body, shut_write=True)
    if raw:  # an answer is optional (the client is gone), a 500 is not
        assert_refused(parse_reply(raw), 400)


def test_body_longer_than_declared_is_not_a_second_request(checked, files):
    """Bytes past Content-Length are the next request on the connection, parsed as such
    (not run as alice): here a request without credentials, answered 401."""
    srv = checked
    smuggled = f"GET {home('bob', 'b.txt')} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = exchange(srv, (f"PUT {home('alice', 'longer.txt')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {basic(*srv.auth('alice'))}\r\n"
                         "Content-Length: 10\r\n\r\n0123456789" + smuggled).encode())
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 201"), raw[:300]
    assert files[("bob", "b.txt")] not in raw
    assert b"HTTP/1.1 401" in rest, raw[:600]
    r = srv.session("alice").get(srv.url("alice", "longer.txt"), timeout=TIMEOUT)
    assert r.content == b"0123456789"


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_body_larger_than_quota_is_507_early(checked, framing):
    """A declared size over quota is refused before the body is read; a chunked one as
    soon as it passes the quota. The old version stays, no temp file remains."""
    srv = checked
    s = srv.session("carol")
    old = b"OLD" * 1000
    assert s.put(srv.url("carol", "q.bin"), data=old, timeout=TIMEOUT).status_code in (201, 204)
    if framing == "declared":
        head = "Content-Length: 10000000000\r\n"
        body = b"x" * 65536
    else:
        head = "Transfer-Encoding: chunked\r\n"
        body = b"".join(b"10000\r\n" + b"x" * 65536 + b"\r\n" for _ in range(40)) + b"0\r\n\r\n"
    raw = exchange(srv, (f"PUT {home('carol', 'q.bin')} HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {basic(*srv.auth('carol'))}\r\n"
                         f"Connection: close\r\n{head}\r\n").encode() + body)
    assert_refused(parse_reply(raw), 507)
    assert s.get(srv.url("carol", "q.bin"), timeout=TIMEOUT).content == old
    assert wait_until(lambda: not srv.tmp_files(), timeout=10), srv.tmp_files()


SLOW = {
    "headers-never-end": b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ",
    "request-line-only": b"GET / HTTP/1.1\r\n",
    "body-never-comes": b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                        b"Content-Length: 1000\r\n\r\nabc",
    "chunked-body-never-comes": b"PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n3e8\r\nabc",
}


@pytest.mark.parametrize("case", list(SLOW))
def test_slowloris_is_dropped(checked, case):
    """More idle connections than worker threads: each is dropped after the socket
    timeout, and a normal request is answered meanwhile and afterwards."""
    srv = checked
    data = SLOW[case]
    if b"%s" in data:
        data = data % (home("alice", "slow.txt").encode(),
                       basic(*srv.auth("alice")).encode())
    socks = []
    for _ in range(12):  # more than one worker process has threads (8)
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT)
        s.sendall(data)
        socks.append(s)
    try:
        assert_alive(srv)
        for s in socks:
            try:
                rest = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    rest += b
            except ConnectionResetError:
                rest = b""
            except TimeoutError:
                raise AssertionError("a silent connection was kept open") from None
            if rest:
                r = parse_reply(rest)
                assert_refused(r, 400, 408)
    finally:
        for s in socks:
            s.close()
    assert_alive(srv)
    assert srv.session("alice").get(srv.url("alice", "slow.txt"),
                                    timeout=TIMEOUT).status_code == 404


# --- authentication -------------------------------------------------------------------

THROTTLE = 3  # failures per user
ADDR_THROTTLE = 5  # failures per address (its own setting)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, slapd):
    """Local users and directory (slapd) users, throttled after THROTTLE failures. Each
    test logs in from its own loopback addresses (127.0.0.0/8 all reach the server), so
    per-address counts do not leak from one test into the next."""
    config = ldap_config(slapd, throttle=THROTTLE)
    config["auth"]["throttle_max_failures_per_address"] = ADDR_THROTTLE
    srv = LiveServer(tmp_path_factory.mktemp("hostile-auth"),
                     users={name: None for name in ("alice", "bob", "dave", "erin", "frank")},
                     config=config)
    try:
        yield srv.create().start()
    finally:
        srv.stop()


def login(srv: LiveServer, user: str, password: str, source: str,
          extra: str = "") -> Reply:
    head = (f"PROPFIND {DAV}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nDepth: 0\r\n"
            f"Authorization: {basic(user, password)}\r\n{extra}Content-Length: 0\r\n\r\n")
    return parse_reply(exchange(srv, head.encode("latin-1"), source=source))


def assert_throttled(r: Reply) -> None:
    assert_refused(r, 429)
    retry = r.headers.get("retry-after", "")
    assert retry.isdigit() and 0 < int(retry) <= 300, r.headers


def test_brute_force_on_one_user_from_many_addresses_is_throttled(auth_server):
    """Per user: failures from different addresses add up; then even the right
    password is refused (429 + Retry-After) until the window passes, from anywhere."""
    srv = auth_server
    for i in range(THROTTLE):
        assert_refused(login(srv, "alice", f"guess-{i}", f"127.0.1.{i + 1}"), 401)
    assert_throttled(login(srv, "alice", srv.users["alice"], "127.0.1.99"))
    assert_throttled(login(srv, "alice", "guess-x", "127.0.1.98"))
    # other users are not affected
    assert login(srv, "bob", srv.users["bob"], "127.0.1.97").status == 207


def test_brute_force_from_one_address_over_many_users_is_throttled(auth_server):
    """Per address: guessing a different user each time is throttled too, after
    throttle_max_failures_per_address, and only for that address; a spoofed
    X-Forwarded-For does not count as another address."""
    srv = auth_server
    src = "127.0.2.1"
    for i in range(ADDR_THROTTLE):
        r = login(srv, f"nobody{i}", "guess", src, f"X-Forwarded-For: 10.9.9.{i}\r\n")
        assert_refused(r, 401)  # past THROTTLE too: the address has its own limit
    assert_throttled(login(srv, "dave", srv.users["dave"], src,
                           "X-Forwarded-For: 10.9.9.200\r\n"))
    assert login(srv, "dave", srv.users["dave"], "127.0.2.2").status == 207


ODD_CREDENTIALS = {
    # users no other test logs in as, each failing fewer than THROTTLE times here
    "empty-password": ("erin", ""),
    "10KiB-password": ("frank", "x" * 10240),
    "empty-user": ("", "whatever"),
    "both-empty": ("", ""),
    "10KiB-user": ("b" * 10240, "whatever"),
    "colon-in-user": ("erin:extra", "x"),  # user erin, password "extra:x"
    "nul-user-empty-password": ("frank\x00", ""),
}


@pytest.mark.parametrize("case", list(ODD_CREDENTIALS))
def test_odd_credentials_are_plain_401(auth_server, case):
    srv = auth_server
    user, password = ODD_CREDENTIALS[case]
    r = login(srv, user, password, f"127.0.3.{list(ODD_CREDENTIALS).index(case) + 1}")
    assert_refused(r, 401)
    assert r.headers.get("www-authenticate", "").lower().startswith("basic")


def test_malformed_authorization_header_is_400(auth_server):
    srv = auth_server
    for value in ("Basic !!!not-base64!!!", "Basic " + "QQ" * 5000 + "=",
                  "Basic //79", "Basic"):
        head = (f"GET {DAV}/bob/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Authorization: {value}\r\n\r\n").encode()
        r = parse_reply(exchange(srv, head, source="127.0.4.1"))
        assert_refused(r, 400, 401)


#: LDAP filter metacharacters in a login name: each must neither match another entry
#: (a wildcard or an injected clause) nor make the directory query fail.
INJECTIONS = {
    "star": lambda uid: ["*", uid[:5] + "*", "*" + uid[5:]],
    "open-paren": lambda uid: [f"{uid}(", f"(uid={uid}", f"{uid})(|(uid=*"],
    "close-paren": lambda uid: [f"{uid})", f"*)(uid={uid}", f"{uid})(objectClass=*"],
    "backslash": lambda uid: [f"{uid}\\", f"{uid}\\2a", uid[:5] + "\\2a"],
    "nul": lambda uid: [f"{uid}\x00", f"{uid}\x00junk", "\x00"],
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_ldap_filter_injection_in_user_name(auth_server, slapd, case):
    srv = auth_server
    uid = unique("inj")
    pw = f"pw-{os.urandom(6).hex()}"
    slapd.add_user(uid, pw, cn=f"User {uid}", mail=f"{uid}@example.org")
    n = list(INJECTIONS).index(case) + 1
    for j, name in enumerate(INJECTIONS[case](uid)):
        # one address per attempt: these failures must not add up to a 429
        assert_refused(login(srv, name, pw, f"127.0.{5 + j}.{n}"), 401)
    assert login(srv, uid, pw, f"127.0.9.{n}").status == 207


@pytest.mark.parametrize("password", ["", " ", "x" * 10240], ids=["empty", "space", "10KiB"])
def test_directory_user_with_empty_or_huge_password(auth_server, slapd, password):
    """An empty password must not become an anonymous (successful) LDAP bind."""
    srv = auth_server
    uid = unique("pw")
    slapd.add_user(uid, f"pw-{os.urandom(6).hex()}", cn=f"User {uid}",
                   mail=f"{uid}@example.org")
    r = login(srv, uid, password, f"127.0.10.{len(password) % 250 + 1}")
    assert_refused(r, 401)
