"""External storage mounts (files_external:*) against a real moto S3 server process and a
real WsgiDAV process, used over real HTTP through a running davserver."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from davserver.crypto import header as hdr
from tests.live import LiveServer
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from tests.webdav_server import PASSWORD, USER


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("mounts")).create().start()
    yield s
    s.stop()


class Store:
    """One fresh remote folder or bucket: its mount config and a raw view of it."""

    def __init__(self, kind: str, request) -> None:
        self.kind = kind
        if kind == "s3":
            self.moto = request.getfixturevalue("moto")
            self.bucket = self.moto.new_bucket()
            host, port = self.moto.endpoint.split("//")[1].rsplit(":", 1)
            self.backend, self.auth = "amazons3", "amazons3::accesskey"
            self.config = {"bucket": self.bucket, "hostname": host, "port": port,
                           "region": REGION, "use_ssl": "false", "use_path_style": "true",
                           "key": ACCESS_KEY, "secret": SECRET_KEY}
        else:
            dav = request.getfixturevalue("remote_dav")
            sub = f"m-{uuid.uuid4().hex[:10]}"
            self.dir = Path(dav.root) / sub
            self.dir.mkdir()
            base, _, root = dav.url.rpartition("/")
            self.backend, self.auth = "dav", "password::password"
            self.config = {"host": base, "root": f"{root}/{sub}", "secure": "false",
                           "user": USER, "password": PASSWORD}

    def raw(self, name: str) -> bytes:
        if self.kind == "s3":
            return self.moto.client().get_object(Bucket=self.bucket, Key=name)["Body"].read()
        return (self.dir / name).read_bytes()

    def put_raw(self, name: str, data: bytes) -> None:
        if self.kind == "s3":
            self.moto.client().put_object(Bucket=self.bucket, Key=name, Body=data)
        else:
            (self.dir / name).write_bytes(data)

    def delete_raw(self, name: str) -> None:
        if self.kind == "s3":
            self.moto.client().delete_object(Bucket=self.bucket, Key=name)
        else:
            (self.dir / name).unlink()


def create_mount(srv: LiveServer, store: Store, point: str, *extra: str) -> int:
    args = ["files_external:create", point, store.backend, store.auth, *extra]
    for k, v in store.config.items():
        args += ["-c", f"{k}={v}"]
    out = srv.run_cli(*args).stdout
    assert out.startswith("Storage created with id "), out
    return int(out.split()[-1])


def propfind_names(sess, url: str) -> set[str]:
    r = sess.request("PROPFIND", url, headers={"Depth": "1"})
    assert r.status_code == 207, r.text
    import re

    return {h.rstrip("/").rsplit("/", 1)[-1] for h in re.findall(r"<d:href>([^<]+)</d:href>",
                                                                 r.text, re.I)}


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_cli_round_trip(srv, kind, request):
    store = Store(kind, request)
    mid = create_mount(srv, store, "/Ext-cli", "--user", "alice")
    secret = "secret" if kind == "s3" else "password"
    listed = srv.run_cli("files_external:list").stdout
    assert "/Ext-cli" in listed and store.config[secret] not in listed and "***" in listed
    doc = json.loads(srv.run_cli("files_external:list", "--output", "json").stdout)
    mine = next(m for m in doc if m["mount_id"] == mid)
    assert mine["configuration"][secret] == "***"
    assert mine["applicable_users"] == ["alice"]
    shown = json.loads(srv.run_cli("files_external:list", "--output", "json",
                                   "--show-password").stdout)
    assert next(m for m in shown if m["mount_id"] == mid)["configuration"][secret] \
        == store.config[secret]
    # The sealed definition holds no credential in the clear.
    db = Path(srv.data_dir, "davserver.db").read_bytes()
    assert store.config[secret].encode() not in db

    assert "status: ok" in srv.run_cli("files_external:verify", str(mid)).stdout
    srv.run_cli("files_external:option", str(mid), "readonly", "true")
    srv.run_cli("files_external:applicable", str(mid), "--add-user", "bob",
                "--remove-user", "alice", "--add-group", "admin")
    doc = json.loads(srv.run_cli("files_external:list", "--output", "json").stdout)
    mine = next(m for m in doc if m["mount_id"] == mid)
    assert mine["options"]["readonly"] == "true"
    assert mine["applicable_users"] == ["bob"] and mine["applicable_groups"] == ["admin"]

    wrong = "bucket" if kind == "s3" else "password"
    srv.run_cli("files_external:config", str(mid), wrong, "wrong-" + uuid.uuid4().hex[:6])
    bad = srv.run_cli("files_external:verify", str(mid), check=False)
    assert bad.returncode != 0
    assert bad.stderr.startswith("davserver: failed to verify the external storage: ")
    assert ("bucket does not exist" if kind == "s3" else "credentials are wrong") in bad.stderr
    assert store.config[secret] not in bad.stderr and "Traceback" not in bad.stderr

    bad = srv.run_cli("files_external:option", str(mid), "nonsense", "1", check=False)
    assert bad.returncode != 0 and "unknown option" in bad.stderr
    srv.run_cli("files_external:delete", str(mid))
    doc = json.loads(srv.run_cli("files_external:list", "--output", "json").stdout)
    assert all(m["mount_id"] != mid for m in doc)
    bad = srv.run_cli("files_external:verify", str(mid), check=False)
    assert bad.returncode != 0 and "not found" in bad.stderr


def test_local_mount_and_bad_create(srv, tmp_path):
    bad = srv.run_cli("files_external:create", "/X", "ftp", "password::password",
                      check=False)
    assert bad.returncode != 0 and "unknown backend" in bad.stderr
    bad = srv.run_cli("files_external:create", "/X", "local", "null::null", "-c", "nope=1",
                      check=False)
    assert bad.returncode != 0 and "unknown config key" in bad.stderr
    missing = tmp_path / "missing"
    out = srv.run_cli("files_external:create", "/Gone", "local", "null::null", "-c",
                      f"datadir={missing}").stdout
    bad = srv.run_cli("files_external:verify", out.split()[-1], check=False)
    assert bad.returncode != 0 and "does not exist" in bad.stderr and not missing.exists()
    srv.run_cli("files_external:delete", out.split()[-1])
    out = srv.run_cli("files_external:create", "/Local", "local", "null::null", "-c",
                      f"datadir={tmp_path}", "--user", "alice").stdout
    mid = out.split()[-1]
    try:
        sess = srv.session("alice")
        r = sess.put(srv.url("alice", "Local/a.txt"), data=b"local mount")
        assert r.status_code in (201, 204), (r.status_code, r.text[:500])
        assert sess.get(srv.url("alice", "Local/a.txt")).content == b"local mount"
        assert hdr.is_encrypted((tmp_path / "a.txt").read_bytes()[:64])
    finally:
        srv.run_cli("files_external:delete", mid)


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext"])
@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_read_write_through_mount(srv, kind, encrypt, request):
    store = Store(kind, request)
    point = f"Ext-{kind}-{encrypt}"
    mid = create_mount(srv, store, "/" + point, "--user", "alice")
    if not encrypt:
        srv.run_cli("files_external:option", str(mid), "encrypt", "false")
    try:
        alice, bob = srv.session("alice"), srv.session("bob")
        assert point in propfind_names(alice, srv.url("alice"))
        assert point not in propfind_names(bob, srv.url("bob"))
        assert bob.request("PROPFIND", srv.url("bob", point),
                           headers={"Depth": "0"}).status_code == 404

        body = os.urandom(300_000) + b"plain marker text"
        assert alice.request("MKCOL", srv.url("alice", f"{point}/sub")).status_code == 201
        assert alice.put(srv.url("alice", f"{point}/sub/f.bin"), data=body).status_code \
            in (201, 204)
        assert alice.get(srv.url("alice", f"{point}/sub/f.bin")).content == body
        raw = store.raw("sub/f.bin")
        if encrypt:
            assert hdr.is_encrypted(raw[:64]) and b"plain marker text" not in raw
        else:
            assert raw == body

        # MOVE and COPY inside the mount, and between the mount and the home.
        r = alice.request("MOVE", srv.url("alice", f"{point}/sub/f.bin"),
                          headers={"Destination": srv.url("alice", f"{point}/g.bin")})
        assert r.status_code in (201, 204), r.text
        r = alice.request("COPY", srv.url("alice", f"{point}/g.bin"),
                          headers={"Destination": srv.url("alice", f"home-{point}.bin")})
        assert r.status_code in (201, 204), r.text
        assert alice.get(srv.url("alice", f"home-{point}.bin")).content == body
        prop = ('<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:x="urn:t">'
                '<d:set><d:prop><x:tag>kept</x:tag></d:prop></d:set></d:propertyupdate>')
        assert alice.request("PROPPATCH", srv.url("alice", f"home-{point}.bin"),
                             data=prop).status_code == 207
        r = alice.request("MOVE", srv.url("alice", f"home-{point}.bin"),
                          headers={"Destination": srv.url("alice", f"{point}/back.bin")})
        assert r.status_code in (201, 204), r.text
        r = alice.request("PROPFIND", srv.url("alice", f"{point}/back.bin"),
                          headers={"Depth": "0"},
                          data='<d:propfind xmlns:d="DAV:" xmlns:x="urn:t"><d:prop><x:tag/>'
                               '</d:prop></d:propfind>')
        assert r.status_code == 207 and "kept" in r.text, r.text
        assert alice.get(srv.url("alice", f"home-{point}.bin")).status_code == 404
        assert alice.get(srv.url("alice", f"{point}/back.bin")).content == body
        assert hdr.is_encrypted(store.raw("back.bin")[:64]) == encrypt
        r = alice.request("MOVE", srv.url("alice", f"{point}/sub"),
                          headers={"Destination": srv.url("alice", f"dir-{point}")})
        assert r.status_code in (201, 204), r.text
        assert alice.delete(srv.url("alice", f"{point}/g.bin")).status_code == 204
        assert {"back.bin"} == propfind_names(alice, srv.url("alice", point + "/")) - {point}
    finally:
        srv.run_cli("files_external:delete", str(mid))
    assert point not in propfind_names(srv.session("alice"), srv.url("alice"))


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_readonly_mount(srv, kind, request):
    store = Store(kind, request)
    store.put_raw("given.txt", b"read me")
    mid = create_mount(srv, store, "/RO")
    srv.run_cli("files_external:option", str(mid), "readonly", "true")
    try:
        bob = srv.session("bob")  # no applicable users: everyone sees it
        assert bob.get(srv.url("bob", "RO/given.txt")).content == b"read me"
        for method, path, kw in (("PUT", "RO/new.txt", {"data": b"x"}),
                                 ("DELETE", "RO/given.txt", {}),
                                 ("MKCOL", "RO/d", {})):
            r = bob.request(method, srv.url("bob", path), **kw)
            assert r.status_code == 403, (method, r.status_code, r.text)
            assert "read-only" in r.text
        assert store.raw("given.txt") == b"read me"
    finally:
        srv.run_cli("files_external:delete", str(mid))


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_changes_behind_the_servers_back(srv, kind, request):
    store = Store(kind, request)
    mid = create_mount(srv, store, "/Behind", "--user", "alice")
    srv.run_cli("files_external:option", str(mid), "filesystem_check_changes", "always")
    try:
        alice = srv.session("alice")
        store.put_raw("by-hand.txt", b"added by another tool")
        assert "by-hand.txt" in propfind_names(alice, srv.url("alice", "Behind/"))
        assert alice.get(srv.url("alice", "Behind/by-hand.txt")).content \
            == b"added by another tool"
        store.put_raw("by-hand.txt", b"changed by another tool")
        assert alice.get(srv.url("alice", "Behind/by-hand.txt")).content \
            == b"changed by another tool"
        store.delete_raw("by-hand.txt")
        assert "by-hand.txt" not in propfind_names(alice, srv.url("alice", "Behind/"))

        # An encrypted file whose key this server does not have (from another instance).
        assert alice.put(srv.url("alice", "Behind/enc.bin"), data=b"secret").status_code \
            in (201, 204)
        blob = store.raw("enc.bin")
        file_id = hdr.parse(blob[:hdr.HEADER_BYTES]).file_id.hex()
        assert alice.delete(srv.url("alice", "Behind/enc.bin")).status_code == 204  # key gone
        store.put_raw("foreign.bin", blob)
        r = alice.get(srv.url("alice", "Behind/foreign.bin"))
        assert r.status_code >= 500 and file_id in r.text, (r.status_code, r.text)
        store.put_raw("plain.txt", b"plaintext by hand")
        res = srv.run_cli("files_external:scan", str(mid), "--output", "json", check=False)
        assert res.returncode == 3, res.stderr
        scan = json.loads(res.stdout)
        assert scan["counts"]["no-key"] == 1 and scan["counts"]["plaintext"] == 1
        assert [(f["path"], f["file_id"]) for f in scan["problems"]] == [
            (f"~mount{mid}/foreign.bin", file_id)]
    finally:
        srv.run_cli("files_external:delete", str(mid))


def test_home_storage_encryption_switch(srv, request):
    """Off: new home files are plaintext while a mount stays encrypted; on again: both
    encrypted."""
    store = Store("dav", request)
    mid = create_mount(srv, store, "/HomeSwitch", "--user", "alice")
    alice = srv.session("alice")
    home_file = Path(srv.data_dir, "files", "alice", "switch.txt")
    try:
        assert "off" in srv.run_cli("encryption:home-storage", "off").stdout
        assert alice.put(srv.url("alice", "switch.txt"), data=b"home bytes").status_code \
            in (201, 204)
        assert alice.put(srv.url("alice", "HomeSwitch/m.txt"), data=b"mount bytes") \
            .status_code in (201, 204)
        assert home_file.read_bytes() == b"home bytes"
        assert hdr.is_encrypted(store.raw("m.txt")[:64])
        assert alice.get(srv.url("alice", "switch.txt")).content == b"home bytes"
    finally:
        assert "on" in srv.run_cli("encryption:home-storage", "on").stdout
    assert alice.put(srv.url("alice", "switch.txt"), data=b"home bytes 2").status_code \
        in (201, 204)
    assert hdr.is_encrypted(home_file.read_bytes()[:64])
    assert alice.get(srv.url("alice", "switch.txt")).content == b"home bytes 2"
    srv.run_cli("files_external:delete", str(mid))


def test_backup_includes_mount_definitions(srv, request, tmp_path):
    from davserver.meta.db import MetaDB
    from davserver.vault import backup
    from davserver.vault.mounts import MountService
    from davserver.vault.secret import read_secret

    store = Store("s3", request)
    mid = create_mount(srv, store, "/Backed", "--user", "bob")
    try:
        srv.run_cli("backup:create", str(tmp_path / "b.tar"))
        members = backup.read(str(tmp_path / "b.tar"))
        (tmp_path / "db").write_bytes(members["davserver.db"])
        (tmp_path / "secret").write_bytes(members["secret"])
        db = MetaDB(str(tmp_path / "db"))
        restored = MountService(db, lambda: read_secret(str(tmp_path / "secret"))).get(mid)
        db.close()
        assert restored.mount_point == "/Backed" and restored.users == ["bob"]
        assert restored.config == store.config
    finally:
        srv.run_cli("files_external:delete", str(mid))


def test_litmus_on_webdav_mount(srv, request, tmp_path):
    import re
    import subprocess

    from tests.live import require_tool
    from tests.test_litmus import SUITES, SUMMARY

    litmus = require_tool("litmus")
    store = Store("dav", request)
    mid = create_mount(srv, store, "/LitmusMount", "--user", "alice")
    try:
        env = dict(os.environ, TESTS=" ".join(SUITES))
        res = subprocess.run([litmus, srv.url("alice", "LitmusMount/"), "alice",
                              srv.users["alice"]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        out = res.stdout + res.stderr
        summaries = {m.group(1): m for m in SUMMARY.finditer(out)}
        fails = [ln for ln in out.splitlines() if re.search(r"\bFAIL\b", ln)]
        assert set(summaries) == set(SUITES), out[-3000:]
        assert all(m.group(4) == "0" for m in summaries.values()), "\n".join(fails)
    finally:
        srv.run_cli("files_external:delete", str(mid))


def test_crash_inside_a_mount_is_finished_by_the_mount(inst, tmp_path):
    """A commit to a mount interrupted after the blob landed: the home vault's recovery
    must not roll it back (it would delete the key of a committed file); the mount's
    recovery finishes it."""
    store = tmp_path / "store"
    store.mkdir()
    m = inst.mounts.create("/L", "local", "null::null", {"datadir": str(store)})
    mv = inst.dav_vault
    spath = mv.resolve("alice", "L/f.txt")
    assert spath == f"{m.root}/f.txt"
    up = mv.begin_write(spath)
    up.write(b"committed before the crash")
    up._stream.finish()
    inst.db.add_pending(up.file_id, spath, plain=False, durable=False)
    inst.keys.wrap_new(up.file_id, up._data_key, up._recipients)
    up._blob.commit()  # ... and the process dies before the index update

    inst.vault.recover()
    assert inst.keys.exists(up.file_id)
    mv.recover_mounts()
    assert inst.db.list_pending() == []
    assert mv.read_all(spath) == b"committed before the crash"
    assert hdr.is_encrypted((store / "f.txt").read_bytes()[:64])


def test_store_down_answers_503(srv):
    from tests.live import free_port

    out = srv.run_cli("files_external:create", "/Down", "dav", "password::password",
                      "-c", f"host=http://127.0.0.1:{free_port()}", "-c", "root=dav",
                      "-c", "user=u", "-c", "password=p", "--user", "alice").stdout
    mid = out.split()[-1]
    try:
        alice = srv.session("alice")
        assert "Down" in propfind_names(alice, srv.url("alice"))  # the home still lists
        r = alice.request("PROPFIND", srv.url("alice", "Down/"), headers={"Depth": "1"})
        assert r.status_code == 503 and r.headers.get("Retry-After"), (r.status_code, r.text)
        r = alice.put(srv.url("alice", "Down/x.txt"), data=b"x")
        assert r.status_code == 503, (r.status_code, r.text)
        bad = srv.run_cli("files_external:verify", mid, check=False)
        assert bad.returncode != 0 and "endpoint is wrong or down" in bad.stderr
    finally:
        srv.run_cli("files_external:delete", mid)


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
def test_chunked_upload_into_mount(srv, request, readonly):
    """The desktop client's chunked upload (v2) lands in the mount, not in the home
    folder the mount hides; the PUT response headers describe the mount's file."""
    from tests.test_chunked_upload import Client

    store = Store("s3", request)
    mid = create_mount(srv, store, "/Chunked", "--user", "alice")
    if readonly:
        srv.run_cli("files_external:option", str(mid), "readonly", "true")
    try:
        c = Client(srv)
        data = os.urandom(200_000)
        uid = f"up{uuid.uuid4().hex[:10]}"
        c.start(uid, "Chunked/big.bin")
        for i, part in enumerate((data[:120_000], data[120_000:]), 1):
            assert c.chunk(uid, i, part, total=len(data)).status_code in (201, 204)
        r = c.finish(uid, "Chunked/big.bin", len(data))
        if readonly:
            assert r.status_code == 403 and "read-only" in r.text, (r.status_code, r.text)
            assert c.get("Chunked/big.bin").status_code == 404
            return
        assert r.status_code == 201, r.text
        assert r.headers.get("OC-FileId") and r.headers.get("ETag")
        assert c.get("Chunked/big.bin").content == data
        assert hdr.is_encrypted(store.raw("big.bin")[:64])
        assert not Path(srv.data_dir, "files", "alice", "Chunked").exists()
        # A single PUT gets the Nextcloud headers for the mount's file too.
        r = c.s.put(c.dest("Chunked/one.txt"), data=b"one")
        assert r.status_code in (201, 204) and r.headers.get("OC-FileId"), r.headers
    finally:
        srv.run_cli("files_external:delete", str(mid))
