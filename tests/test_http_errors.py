"""Bad input gets a clear 4xx (never a 500, never a traceback), and failed writes change
nothing: quota, client disconnects, throttling, maintenance mode."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.live import wait_until

PROPFIND_HDRS = {"Depth": "0", "Content-Type": "application/xml"}


def assert_clean(r: requests.Response, *statuses: int) -> None:
    """Status is one of ``statuses`` (or any 4xx when none given); body has no traceback."""
    text = r.text
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    if statuses:
        assert r.status_code in statuses, f"{r.status_code}: {text[:500]}"
    else:
        assert 400 <= r.status_code < 500, f"{r.status_code}: {text[:500]}"


def raw_request(url: str, head: bytes, body: bytes = b"", *, read_reply: bool = True,
                timeout: float = 10) -> bytes:
    """Send ``head`` (request line + headers, CRLF-terminated) and ``body`` over a fresh
    connection, half-close nothing, and return whatever the server answered."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(head + body)
        if not read_reply:
            return b""
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- malformed and hostile XML --------------------------------------------------------


def test_propfind_malformed_xml_is_400(server):
    r = server.session("alice").request(
        "PROPFIND", server.url("alice"), headers=PROPFIND_HDRS,
        data=b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag>')
    assert_clean(r, 400)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<d:propfind xmlns:d="DAV:"><d:prop><d:getetag>&xxe;</d:getetag></d:prop></d:propfind>',
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY % x SYSTEM "file:///etc/passwd"> %x;]>'
    b'<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>',
], ids=["general-entity", "parameter-entity"])
def test_propfind_xxe_is_refused(server, body):
    r = server.session("alice").request("PROPFIND", server.url("alice"),
                                        headers=PROPFIND_HDRS, data=body)
    assert_clean(r)
    assert "root:" not in r.text


def test_proppatch_xxe_does_not_store_file_contents(server):
    s = server.session("alice")
    assert s.put(server.url("alice", "xxe.txt"), data=b"x").status_code in (201, 204)
    body = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<d:propertyupdate xmlns:d="DAV:" xmlns:z="urn:z"><d:set><d:prop>'
            b'<z:leak>&xxe;</z:leak></d:prop></d:set></d:propertyupdate>')
    r = s.request("PROPPATCH", server.url("alice", "xxe.txt"), data=body,
                  headers={"Content-Type": "application/xml"})
    assert_clean(r)
    r = s.request("PROPFIND", server.url("alice", "xxe.txt"), headers=PROPFIND_HDRS,
                  data=b'<d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>')
    assert r.status_code == 207
    assert "root:" not in r.text


# --- path traversal -------------------------------------------------------------------

TRAVERSALS = [
    "/remote.php/dav/files/alice/../bob/secret.txt",
    "/remote.php/dav/files/alice/%2e%2e/bob/secret.txt",
    "/remote.php/dav/files/alice/..%2fbob%2fsecret.txt",
    "/remote.php/dav/files/alice/%2e%2e%2fbob%2fsecret.txt",
    "/remote.php/dav/files/alice/sub/../../bob/secret.txt",
    "/remote.php/dav/files/alice/..%5cbob%5csecret.txt",
    "/remote.php/webdav/../dav/files/bob/secret.txt",
    "/remote.php/webdav/%2e%2e/%2e%2e/remote.php/dav/files/bob/secret.txt",
    "/remote.php/dav/files/bob/secret.txt",
]


@pytest.fixture(scope="module")
def bob_secret(server):
    content = b"BOB-ONLY-" + os.urandom(8).hex().encode()
    r = server.session("bob").put(server.url("bob", "secret.txt"), data=content)
    assert r.status_code in (201, 204)
    return content


def _raw_get(server, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: {basic('alice', server.users['alice'])}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    reply = raw_request(server.base + "/", head, body)
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1."), reply[:200]
    return int(status_line.split()[1]), reply


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_never_reaches_other_home(server, bob_secret, path):
    # Raw socket: no client-side normalisation of "..".
    status, reply = _raw_get(server, path)
    assert status < 500, reply[:1000]
    assert bob_secret not in reply
    assert b"Traceback" not in reply
    status, reply = _raw_get(server, path, "PUT", b"alice-was-here")
    assert status < 500, reply[:1000]
    assert b"Traceback" not in reply
    # bob's file is untouched and nothing alice sent landed in bob's home
    r = server.session("bob").get(server.url("bob", "secret.txt"))
    assert r.content == bob_secret
    bob_dir = os.path.join(server.data_dir, "files", "bob")
    for name in os.listdir(bob_dir):
        assert name == "secret.txt", f"unexpected file in bob's home: {name}"


def test_error_pages_do_not_name_software_versions(server):
    """WsgiDAV's HTML error pages named its version (a hint for probes); the Server header
    names no version either."""
    url = server.url("alice", "no-such-folder/x.txt")
    for method in ("PROPPATCH", "MOVE", "GET"):
        r = requests.request(method, url, auth=server.auth("alice"), timeout=30,
                             headers={"Destination": server.url("alice", "y.txt")})
        assert_clean(r, 404, 409)
        assert "WsgiDAV/" not in r.text and not any(c.isdigit() for c in
                                                     r.headers.get("Server", "")), r.text


@pytest.mark.parametrize("path", ["%ff.txt", "missing.txt", ""])
def test_head_answers_have_no_body_so_keep_alive_survives(server, path):
    """A HEAD answer with a body (our own 400/503 lines did) is read by the client as the
    start of the next answer on the same connection."""
    import http.client

    u = urlsplit(server.url("alice", ""))
    auth = "Basic " + base64.b64encode(":".join(server.auth("alice")).encode()).decode()
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request("HEAD", u.path + path, headers={"Authorization": auth})
        first = c.getresponse()
        first.read()
        assert first.status in (200, 400, 404)
        c.request("GET", u.path + path.replace("%ff", "ok"), headers={"Authorization": auth})
        second = c.getresponse()
        second.read()
        assert second.status in (200, 404)
    finally:
        c.close()


def test_other_users_home_is_404(server, bob_secret):
    s = server.session("alice")
    assert s.get(server.url("bob", "secret.txt")).status_code == 404
    r = s.request("PROPFIND", server.url("bob"), headers={"Depth": "1"})
    assert r.status_code == 404
    assert "secret.txt" not in r.text
    r = s.request("PROPFIND", f"{server.base}/remote.php/dav/files/", headers={"Depth": "1"})
    assert r.status_code == 207
    assert "/bob" not in r.text


# --- authentication -------------------------------------------------------------------


def test_unknown_user_and_wrong_password_are_401(server):
    r = requests.get(server.url("alice"), auth=("nosuchuser", "whatever-123"))
    assert_clean(r, 401)
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic")
    r = requests.get(server.url("alice"), auth=("alice", "wrong-password"))
    assert_clean(r, 401)
    r = requests.get(server.url("alice"))
    assert_clean(r, 401)
    assert server.session("alice").request("PROPFIND", server.url("alice"),
                                           headers={"Depth": "0"}).status_code == 207


def test_repeated_wrong_passwords_are_throttled(server_factory):
    srv = server_factory(users={"alice": None},
                         config={"auth": {"throttle_max_failures": 5,
                                          "throttle_window_seconds": 300}})
    statuses = []
    for _ in range(6):
        r = requests.get(srv.url("alice"), auth=("alice", "not-the-password"))
        assert_clean(r, 401, 429)
        statuses.append(r.status_code)
    assert statuses[:5] == [401] * 5, statuses
    r = requests.get(srv.url("alice"), auth=srv.auth("alice"))
    assert r.status_code == 429, (r.status_code, r.text[:300])
    retry = r.headers.get("Retry-After", "")
    assert retry.isdigit() and int(retry) > 0, r.headers


# --- quota ----------------------------------------------------------------------------

MiB = 1024 * 1024


@pytest.fixture
def quota_server(server_factory):
    srv = server_factory(users={"carol": "1MB"})
    old = b"OLD-CONTENT-" + os.urandom(100 * 1024)
    r = srv.session("carol").put(srv.url("carol", "f.bin"), data=old)
    assert r.status_code == 201, r.text
    return srv, old


def _put_raw(url: str, auth: tuple[str, str], body: bytes, *, chunked: bool) -> int:
    """PUT and return the status, tolerating a server that answers before the body is
    complete and closes (the documented behaviour for a request it refuses up front)."""
    u = urlsplit(url)
    head = (f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n"
            f"Authorization: {basic(*auth)}\r\n")
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        step = 64 * 1024
        payload = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n"
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        head += f"Content-Length: {len(body)}\r\n\r\n"
        payload = body
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head.encode())
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while b"\r\n" not in reply:
                b = s.recv(65536)
                if not b:
                    break
                reply += b
        except ConnectionResetError:
            pass
    assert reply.startswith(b"HTTP/1."), f"no HTTP reply: {reply[:200]!r}"
    return int(reply.split(b"\r\n", 1)[0].split()[1])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_over_quota_put_is_507_and_keeps_old_version(quota_server, chunked):
    srv, old = quota_server
    status = _put_raw(srv.url("carol", "f.bin"), srv.auth("carol"), os.urandom(2 * MiB),
                      chunked=chunked)
    assert status == 507, f"{status}\n{srv.log_tail(20)}"
    r = srv.session("carol").get(srv.url("carol", "f.bin"))
    assert r.status_code == 200
    assert r.content == old
    assert wait_until(lambda: not srv.tmp_files()), srv.tmp_files()
    # and a new file over quota leaves nothing behind either
    status = _put_raw(srv.url("carol", "new.bin"), srv.auth("carol"), os.urandom(2 * MiB),
                      chunked=chunked)
    assert status == 507
    assert srv.session("carol").get(srv.url("carol", "new.bin")).status_code == 404
    assert wait_until(lambda: not srv.tmp_files()), srv.tmp_files()


# --- interrupted upload ---------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked", "chunked-mid-chunk"])
def test_client_disconnect_mid_put_keeps_old_version(server, framing):
    s = server.session("alice")
    url = server.url("alice", f"interrupted-{framing}.bin")
    old = b"PREVIOUS-" + os.urandom(5000)
    assert s.put(url, data=old).status_code in (201, 204)
    etag = s.head(url).headers.get("ETag")
    new_url = server.url("alice", f"interrupted-new-{framing}.bin")
    if framing == "content-length":
        framing_hdr, body = "Content-Length: 1000000", os.urandom(1000)
    else:  # whole chunks then silence, or a chunk cut short
        framing_hdr = "Transfer-Encoding: chunked"
        body = b"3e8\r\n" + os.urandom(1000) + b"\r\n"
        if framing == "chunked-mid-chunk":
            body += b"3e8\r\n" + os.urandom(10)
    for target in (url, new_url):
        u = urlsplit(target)
        head = (f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                f"Authorization: {basic(*server.auth('alice'))}\r\n"
                f"{framing_hdr}\r\n\r\n").encode()
        with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
            sock.sendall(head + body)
            # the server has begun the upload (its temp blob exists) before we go away
            assert wait_until(lambda: server.tmp_files(), timeout=10), server.log_tail(10)
        # the server notices the closed connection and throws the partial upload away
        assert wait_until(lambda: not server.tmp_files(), timeout=10), server.tmp_files()
    r = s.get(url)
    assert r.status_code == 200
    assert r.content == old, f"got {len(r.content)} bytes instead of the previous version"
    assert s.head(url).headers.get("ETag") == etag
    # a file that did not exist before must not appear (no stored prefix)
    assert s.get(new_url).status_code == 404


# --- maintenance mode -----------------------------------------------------------------


def test_maintenance_mode_503(server):
    s = server.session("alice")
    url = server.url("alice", "maint.txt")
    assert s.put(url, data=b"before").status_code in (201, 204)
    server.run_cli("maintenance:mode", "--on")
    try:
        assert wait_until(lambda: s.get(url).status_code == 503, timeout=5)
        for method, kw in (("GET", {}), ("PUT", {"data": b"during"}),
                           ("PROPFIND", {"headers": {"Depth": "0"}}), ("DELETE", {}),
                           ("MKCOL", {})):
            r = s.request(method, url if method != "MKCOL" else url + "-dir", **kw)
            assert r.status_code == 503, (method, r.status_code)
            assert r.headers.get("Retry-After", "").isdigit(), (method, r.headers)
            assert "Traceback" not in r.text
        r = requests.get(server.url("alice"))  # even without credentials
        assert r.status_code == 503
        status = requests.get(f"{server.base}/status.php").json()
        assert status["maintenance"] is True
    finally:
        server.run_cli("maintenance:mode", "--off")
    assert wait_until(lambda: s.get(url).status_code == 200, timeout=5)
    assert s.get(url).content == b"before"
    assert s.put(url, data=b"after").status_code == 204
    assert s.get(url).content == b"after"
    # waiting for the 1 s cache in Guard: status.php must follow too
    assert wait_until(lambda: requests.get(f"{server.base}/status.php").json()[
        "maintenance"] is False, timeout=3)

