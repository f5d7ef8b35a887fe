"""The direct PROPFIND answers exactly what WsgiDAV's generic one answers."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET

import pytest

from davserver.dav import app as dav_app
from davserver.dav import propfind
from tests.instances import make_instance

AUTH = {u: "Basic " + base64.b64encode(f"{u}:{u}pass1".encode()).decode()
        for u in ("alice", "carol")}


@pytest.fixture(scope="module")
def wsgi(tmp_path_factory):
    inst = make_instance(tmp_path_factory.mktemp("propfind"))
    inst.users.add("alice", "alicepass1")
    inst.users.set_quota("alice", 10_000_000)
    inst.users.add("carol", "carolpass1")  # no quota: quota-available-bytes is absent
    inst.vault.make_dir("carol/d")
    inst.vault.write_bytes("carol/d/x.bin", b"123")
    v = inst.vault
    v.make_dir("alice/dir")
    v.make_dir("alice/dir/sub")
    for name, data in (("a.txt", b"hello"), ("b.tar.gz", b"x" * 300000), ("empty", b""),
                       ("Grüße & <tags>.md", b"unicode"), ("sp ace.pdf", b"%PDF")):
        v.write_bytes(f"alice/dir/{name}", data)
    inst.db.set_prop("alice/dir/a.txt", "{urn:test}color",
                     b'<ns0:color xmlns:ns0="urn:test">blue</ns0:color>')
    inst.db.set_prop("alice/dir", "{urn:test}note",
                     b'<ns0:note xmlns:ns0="urn:test">folder &amp; note</ns0:note>')
    yield dav_app.build_app(inst)
    inst.close()


def _request(app, path: str, depth: str, body: bytes) -> tuple[str, bytes]:
    env = {"REQUEST_METHOD": "PROPFIND", "PATH_INFO": path, "HTTP_DEPTH": depth,
           "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
           "HTTP_AUTHORIZATION": AUTH["carol" if "carol" in path else "alice"],
           "wsgi.url_scheme": "http", "SERVER_NAME": "x",
           "SERVER_PORT": "1", "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "x",
           "wsgi.errors": io.StringIO()}
    status = []
    out = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    return status[0], out


def _canonical(xml: bytes) -> dict:
    """href -> {prop name: (status, text, child tags)} — prefixes and layout ignored."""
    root = ET.fromstring(xml)
    out = {}
    for resp in root.findall("{DAV:}response"):
        href = resp.findtext("{DAV:}href")
        props = {}
        for ps in resp.findall("{DAV:}propstat"):
            status = ps.findtext("{DAV:}status")
            for p in ps.find("{DAV:}prop"):
                props[p.tag] = (status, (p.text or "").strip(),
                                tuple(ET.tostring(c) for c in p))
        out[href] = props
    return out


BODIES = [
    b"",
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>',
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getlastmodified/>'
    b'<d:getcontentlength/><d:resourcetype/><d:getetag/><d:quota-used-bytes/>'
    b'<d:quota-available-bytes/><t:color xmlns:t="urn:test"/><t:none xmlns:t="urn:test"/>'
    b"<d:getcontenttype/><d:displayname/><d:supportedlock/><d:lockdiscovery/>"
    b"</d:prop></d:propfind>",
]


@pytest.mark.parametrize("body", BODIES, ids=["empty", "allprop", "named"])
@pytest.mark.parametrize("path", ["/remote.php/dav/files/alice/dir/",
                                  "/remote.php/webdav/dir", "/remote.php/webdav/",
                                  "/remote.php/webdav/dir/a.txt",
                                  "/remote.php/dav/files/carol/d"])
@pytest.mark.parametrize("depth", ["0", "1"])
def test_fast_path_matches_wsgidav(wsgi, monkeypatch, body, path, depth):
    calls = []
    real = propfind.FastPropfind._propfind

    def spy(self, environ, start_response):
        calls.append(path)
        return real(self, environ, start_response)

    monkeypatch.setattr(propfind.FastPropfind, "_propfind", spy)
    status_fast, fast = _request(wsgi, path, depth, body)
    assert calls and fast.count(b"<d:multistatus") == 1, "fast path was not taken"

    def refuse(self, environ, start_response):
        raise propfind._Fallback

    monkeypatch.setattr(propfind.FastPropfind, "_propfind", refuse)
    status_ref, ref = _request(wsgi, path, depth, body)
    assert b"<d:multistatus" not in ref
    assert status_fast == status_ref == "207 Multi-Status"
    assert _canonical(fast) == _canonical(ref)
