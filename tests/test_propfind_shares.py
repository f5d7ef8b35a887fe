"""The direct PROPFIND answers what WsgiDAV's answers where shares are involved: an owner's
folder with shared children (user and group shares), a recipient's folder holding mount
points (name clashes, share_folder "/" and "/Shared"), inside read-only and read-write
mounts, with the sharing and Nextcloud properties; in master-key and user-key modes, on
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import contextlib
import io
from urllib.parse import unquote

import pytest

from davserver.dav import app as dav_app
from davserver.dav import propfind
from davserver.vault import context
from davserver.vault import shares as sh
from tests import instances
from tests.instances import WEAK_KDF_TOML, make_instance
from tests.test_propfind import _canonical

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL

PW = {u: f"{u}pass1" for u in ("alice", "bob", "carol")}
AUTH = {u: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in PW.items()}

#: The properties the Nextcloud desktop client (nextcloudcmd) asks for in its discovery.
NC_BODY = (
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
    b'xmlns:nc="http://nextcloud.org/ns"><d:prop><d:resourcetype/><d:getlastmodified/>'
    b"<d:getcontentlength/><d:getetag/><oc:size/><oc:id/><oc:fileid/><oc:downloadURL/>"
    b"<oc:dDC/><oc:permissions/><oc:checksums/><nc:is-encrypted/><nc:has-preview/>"
    b"<oc:share-types/><oc:data-fingerprint/><nc:lock/><nc:lock-owner/>"
    b"<nc:is-mount-root/></d:prop></d:propfind>")
BODIES = {
    "empty": b"",
    "allprop": b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:allprop/></d:propfind>',
    "nextcloud": NC_BODY,
    "named": (
        b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        b"<d:prop><oc:owner-display-name/><d:displayname/><oc:share-types/><oc:owner-id/>"
        b'<d:quota-used-bytes/><d:quota-available-bytes/><t:tag xmlns:t="urn:t"/>'
        b"<oc:permissions/><d:getcontenttype/></d:prop></d:propfind>"),
}


@contextlib.contextmanager
def _as(inst, ids, user):
    if ids:
        with context.acting_as(*ids[user]):
            yield
    else:
        yield


@pytest.fixture(scope="module", params=[("master", "/"), ("user", "/"),
                                        ("master", "/Shared"), ("user", "/Shared")],
                ids=lambda p: f"{p[0]}-key,share_folder={p[1]}")
def world(request, tmp_path_factory, metadata_backend):
    mode, folder = request.param
    url = dsn = ""
    if metadata_backend == "postgresql":
        from tests.pg_metadata import new_schema

        dsn = request.getfixturevalue("pg_cluster").dsn
        url = new_schema(dsn)
    tmp = tmp_path_factory.mktemp("propfind-shares")
    conf = tmp / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(WEAK_KDF_TOML + 'hpke_suite = "x25519"\n'
                    + f'[sharing]\nshare_folder = "{folder}"\n'
                    + (f'[database]\nurl = "{url}"\n' if url else ""))
    instances.DATABASE_URL = url
    try:
        inst = make_instance(tmp, user_mode=mode == "user")
    finally:
        instances.DATABASE_URL = ""
    for u, p in PW.items():
        inst.users.add(u, p)
    inst.users.set_quota("alice", 50_000_000)
    # The share key change counter lives in the data dir (on PostgreSQL it once went to a
    # "postgresql:/..." folder in the working directory).
    assert inst.sharewraps.keys._changes.path.startswith(str(tmp / "data")), \
        inst.sharewraps.keys._changes.path
    ids = {u: inst.unlock(u, p) for u, p in PW.items()} if mode == "user" else None
    inst.groups.add("staff")
    inst.groups.add_user("staff", "bob")
    inst.groups.add_user("staff", "carol")
    v = inst.vault
    sf = folder.strip("/")
    with _as(inst, ids, "bob"):
        if sf:
            v.make_dir(f"bob/{sf}")
        v.make_dir(f"bob/{sf}/ro".replace("//", "/"))  # the share's name is taken: "ro (2)"
        v.write_bytes("bob/own.txt", b"bob's")
    with _as(inst, ids, "alice"):
        for d in ("proj", "proj/sub", "ro", "ro/in", "rw", "rw/d", "plain"):
            v.make_dir(f"alice/{d}")
        for f, data in (("proj/a.txt", b"a" * 10), ("proj/sub/b.txt", b"b" * 20),
                        ("ro/r.txt", b"r"), ("ro/in/deep.md", b"deep"), ("rw/w.txt", b"w"),
                        ("rw/d/x.bin", b"x" * 100), ("note.txt", b"note"),
                        ("plain/p.txt", b"p")):
            v.write_bytes(f"alice/{f}", data)
        s = inst.shares
        s.create("alice", "proj", sh.USER, "bob", permissions=sh.READ | sh.UPDATE)
        s.create("alice", "proj", sh.GROUP, "staff", permissions=sh.READ | sh.CREATE)
        s.create("alice", "ro", sh.USER, "bob", permissions=sh.READ)
        s.create("alice", "ro/r.txt", sh.GROUP, "staff", permissions=sh.READ)
        s.create("alice", "rw", sh.USER, "bob", permissions=sh.ALL)
        s.create("alice", "note.txt", sh.USER, "bob", permissions=sh.READ | sh.UPDATE)
    inst.db.set_prop("alice/rw/w.txt", "{urn:t}tag", b'<ns0:tag xmlns:ns0="urn:t">w</ns0:tag>')
    inst.db.set_prop("alice/ro", "{urn:t}tag", b'<ns0:tag xmlns:ns0="urn:t">ro</ns0:tag>')
    mounts = {m.path for m in inst.shares.mounts("bob")}
    pre = f"{sf}/" if sf else ""
    assert mounts >= {f"{pre}proj", f"{pre}ro (2)", f"{pre}rw", f"{pre}note.txt"}, mounts
    app = dav_app.build_app(inst)
    yield app, pre
    inst.close()
    if url:
        from tests.pg_metadata import drop_schema

        drop_schema(dsn, url)


def _request(app, user: str, path: str, depth: str, body: bytes) -> tuple[str, bytes]:
    env = {"REQUEST_METHOD": "PROPFIND", "PATH_INFO": path, "HTTP_DEPTH": depth,
           "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
           "HTTP_AUTHORIZATION": AUTH[user], "wsgi.url_scheme": "http", "SERVER_NAME": "x",
           "SERVER_PORT": "1", "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1",
           "HTTP_HOST": "x", "wsgi.errors": io.StringIO()}
    status = []
    out = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    return status[0], out


def _cases(pre: str) -> list[tuple[str, str]]:
    bob = "/remote.php/dav/files/bob/"
    out = [("alice", "/remote.php/dav/files/alice/"), ("alice", "/remote.php/webdav/proj"),
           ("alice", "/remote.php/dav/files/alice/ro"),
           ("alice", "/remote.php/dav/files/alice/ro/r.txt"),
           ("alice", "/remote.php/dav/files/alice/note.txt"),
           ("bob", bob), ("bob", "/remote.php/webdav/"),
           ("bob", f"{bob}{pre}ro (2)"), ("bob", f"{bob}{pre}ro (2)/in"),
           ("bob", f"{bob}{pre}ro (2)/r.txt"), ("bob", f"/remote.php/webdav/{pre}rw"),
           ("bob", f"{bob}{pre}rw/d"), ("bob", f"{bob}{pre}rw/w.txt"),
           ("bob", f"{bob}{pre}proj"), ("bob", f"{bob}{pre}note.txt"),
           ("carol", "/remote.php/dav/files/carol/"), ("carol", f"/remote.php/webdav/{pre}proj")]
    if pre:
        out += [("bob", f"{bob}{pre}"), ("carol", f"/remote.php/webdav/{pre}")]
    return out


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("depth", ["0", "1"])
def test_fast_path_matches_wsgidav_with_shares(world, monkeypatch, body, depth):
    app, pre = world
    real = propfind.FastPropfind._propfind
    taken = []

    def spy(self, environ, start_response):
        out = real(self, environ, start_response)
        taken.append(environ["SCRIPT_NAME"] + environ["PATH_INFO"])
        return out

    def refuse(self, environ, start_response):
        raise propfind._Fallback

    for user, path in _cases(pre):
        monkeypatch.setattr(propfind.FastPropfind, "_propfind", spy)
        status_fast, fast = _request(app, user, path, depth, BODIES[body])
        assert taken and taken[-1].rstrip("/") == path.rstrip("/"), (
            f"fast path not taken for {user} {path}")
        monkeypatch.setattr(propfind.FastPropfind, "_propfind", refuse)
        status_ref, ref = _request(app, user, path, depth, BODIES[body])
        assert b"<d:multistatus" not in ref
        assert status_fast == status_ref == "207 Multi-Status", (user, path, fast[:300])
        cf, cr = _canonical(fast), _canonical(ref)
        assert len(cf) == (1 if depth == "0" else len(cf)) and cf, (user, path)
        assert cf == cr, (user, path)


def test_sharing_values_are_the_expected_ones(world):
    """Guards the comparison above against both paths going wrong the same way."""
    app, pre = world
    body = BODIES["named"]
    oc = "{http://owncloud.org/ns}"

    def props(user, path, depth="1"):
        status, out = _request(app, user, path, depth, body)
        assert status == "207 Multi-Status"
        return {unquote(href).rstrip("/").rsplit("/", 1)[-1]:
                {k: (v[1], v[2]) for k, v in p.items()} for href, p in _canonical(out).items()}

    alice = props("alice", "/remote.php/dav/files/alice/")
    assert alice["proj"][f"{oc}share-types"][1] == tuple(
        f'<ns0:share-type xmlns:ns0="http://owncloud.org/ns">{t}</ns0:share-type>'.encode()
        for t in (0, 1))
    assert alice["plain"][f"{oc}share-types"][1] == ()
    assert alice["proj"][f"{oc}permissions"][0] == "RGDNVCK"
    bob = props("bob", f"/remote.php/dav/files/bob/{pre}")
    assert bob["proj"][f"{oc}permissions"][0] == "SMGDNVCK"  # update (user) + create (group)
    assert bob["ro (2)"][f"{oc}permissions"][0] == "SMGDNV"
    assert bob["ro (2)"][f"{oc}owner-display-name"][0] == "alice"
    assert bob["ro"][f"{oc}owner-id"][0] == "bob"
    inside = props("bob", f"/remote.php/dav/files/bob/{pre}ro (2)")
    assert inside["r.txt"][f"{oc}permissions"][0] == "SG"
    assert len(inside["r.txt"][f"{oc}share-types"][1]) == 1  # the group share of r.txt
    rw = props("bob", f"/remote.php/dav/files/bob/{pre}rw")
    assert rw["w.txt"][f"{oc}permissions"][0] == "SRGNVW"
    assert rw["d"][f"{oc}permissions"][0] == "SRGDNVCK"
