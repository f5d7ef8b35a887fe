"""Mount options and their edges: filesystem_check_changes, enable_sharing, files without
a key, encrypt-all / decrypt-all / encryption:scan over mounts (killed and resumed too).
Against real moto S3 and WsgiDAV processes, through a running davserver."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from davserver.crypto import header as hdr
from tests.live import LiveServer
from tests.test_mounts import Store, create_mount, propfind_names


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("mount-options")).create().start()
    yield s
    s.stop()


def _put(sess, url: str, data: bytes) -> None:
    r = sess.put(url, data=data)
    assert r.status_code in (201, 204), (r.status_code, r.text)


@pytest.mark.parametrize("mode", ["never", "always"])
@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_filesystem_check_changes(srv, kind, mode, request):
    """never: listings come from the server's record, so what other tools add or remove
    shows only after files_external:scan; always: at once."""
    store = Store(kind, request)
    store.put_raw("before.txt", b"there before the mount")
    mid = create_mount(srv, store, "/Check", "--user", "alice")
    srv.run_cli("files_external:option", str(mid), "filesystem_check_changes", mode)
    alice = srv.session("alice")
    folder = srv.url("alice", "Check/")
    try:
        # A folder never seen is read from the store once, whatever the mode.
        assert "before.txt" in propfind_names(alice, folder)
        _put(alice, srv.url("alice", "Check/mine.txt"), b"through the server")
        assert alice.request("MKCOL", srv.url("alice", "Check/sub")).status_code == 201
        _put(alice, srv.url("alice", "Check/sub/in.txt"), b"in sub")
        r = alice.request("MOVE", srv.url("alice", "Check/sub"),
                          headers={"Destination": srv.url("alice", "Check/sub2")})
        assert r.status_code in (201, 204), r.text
        assert propfind_names(alice, folder) - {"Check"} == {"before.txt", "mine.txt", "sub2"}
        assert propfind_names(alice, srv.url("alice", "Check/sub2/")) - {"sub2"} == {"in.txt"}
        assert alice.get(srv.url("alice", "Check/sub2/in.txt")).content == b"in sub"

        store.put_raw("by-hand.txt", b"added by another tool")
        store.delete_raw("before.txt")
        names = propfind_names(alice, folder)
        by_hand = alice.get(srv.url("alice", "Check/by-hand.txt"))
        if mode == "always":
            assert "by-hand.txt" in names and "before.txt" not in names
            assert by_hand.content == b"added by another tool"
        else:
            assert "by-hand.txt" not in names and "before.txt" in names
            assert by_hand.status_code == 404
            assert alice.get(srv.url("alice", "Check/before.txt")).status_code == 404
            res = srv.run_cli("files_external:scan", str(mid), "--output", "json")
            assert json.loads(res.stdout)["counts"]["plaintext"] == 1  # by-hand.txt
            names = propfind_names(alice, folder)
            assert "by-hand.txt" in names and "before.txt" not in names
            assert alice.get(srv.url("alice", "Check/by-hand.txt")).content \
                == b"added by another tool"
        assert alice.delete(srv.url("alice", "Check/mine.txt")).status_code == 204
        assert "mine.txt" not in propfind_names(alice, folder)
    finally:
        srv.run_cli("files_external:delete", str(mid))


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_keyless_file_answers_as_in_a_home(srv, kind, request):
    """An encrypted file whose key this server does not hold: the same status and message
    in a mount as in a home folder, naming the file ID, never a traceback."""
    store = Store(kind, request)
    mid = create_mount(srv, store, "/Keyless", "--user", "alice")
    alice = srv.session("alice")
    try:
        _put(alice, srv.url("alice", "Keyless/enc.bin"), b"secret")
        blob = store.raw("enc.bin")
        file_id = hdr.parse(blob[:hdr.HEADER_BYTES]).file_id.hex()
        assert alice.delete(srv.url("alice", "Keyless/enc.bin")).status_code == 204
        store.put_raw("foreign.bin", blob)
        Path(srv.data_dir, "files", "alice", f"foreign-{kind}.bin").write_bytes(blob)

        in_mount = alice.get(srv.url("alice", "Keyless/foreign.bin"))
        in_home = alice.get(srv.url("alice", f"foreign-{kind}.bin"))
        reason = re.compile(r"<p>(.*?)</p>", re.S)
        assert in_mount.status_code == in_home.status_code == 500
        assert reason.findall(in_mount.text) == reason.findall(in_home.text)
        assert file_id in reason.findall(in_mount.text)[0] and "no key" in in_mount.text
        assert "Traceback" not in in_mount.text
        # The folders holding it still list (the file with its ID as ETag).
        assert "foreign.bin" in propfind_names(alice, srv.url("alice", "Keyless/"))
        assert f"foreign-{kind}.bin" in propfind_names(alice, srv.url("alice"))
    finally:
        Path(srv.data_dir, "files", "alice", f"foreign-{kind}.bin").unlink(missing_ok=True)
        srv.run_cli("files_external:delete", str(mid))


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_enable_sharing(srv, kind, request):
    """enable_sharing false (the default): sharing anything inside the mount is refused
    by the CLI and by OCS (403, Nextcloud's words) and nothing is created; true: the
    share is made and the recipient reads and lists the mount's file through it."""
    from tests.test_sharing import names, ocs

    store = Store(kind, request)
    mid = create_mount(srv, store, "/ShareMe", "--user", "alice")
    alice, bob = srv.session("alice"), srv.session("bob")
    try:
        assert alice.request("MKCOL", srv.url("alice", "ShareMe/docs")).status_code == 201
        _put(alice, srv.url("alice", "ShareMe/docs/d.txt"), b"on the mount")
        before = srv.run_cli("share:list", "--output", "json").stdout

        bad = srv.run_cli("share:add", "alice", "ShareMe/docs", "--user", "bob", check=False)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("davserver: failed to "), lines
        assert lines[0].endswith(": You are not allowed to share docs"), lines
        r = ocs(srv, "alice", "POST", "/shares", data={
            "path": "/ShareMe/docs/d.txt", "shareType": 0, "shareWith": "bob"})
        assert r.status_code == 403, r.text
        assert r.json()["ocs"]["meta"]["message"] == "You are not allowed to share d.txt"
        assert srv.run_cli("share:list", "--output", "json").stdout == before
        assert bob.get(srv.url("bob", "docs/d.txt")).status_code == 404

        srv.run_cli("files_external:option", str(mid), "enable_sharing", "true")
        r = ocs(srv, "alice", "POST", "/shares", data={
            "path": "/ShareMe/docs", "shareType": 0, "shareWith": "bob", "permissions": 1})
        assert r.status_code == 200, r.text
        made = r.json()["ocs"]["data"]
        assert made["path"] == "/ShareMe/docs" and made["item_type"] == "folder"
        assert "docs" in names(bob, srv.url("bob"))
        assert names(bob, srv.url("bob", "docs/")) == {"d.txt"}
        assert bob.get(srv.url("bob", "docs/d.txt")).content == b"on the mount"
        assert bob.put(srv.url("bob", "docs/d.txt"), data=b"x").status_code == 403
        listed = ocs(srv, "alice", "GET", "/shares", params={"path": "/ShareMe/docs"})
        assert [s["id"] for s in listed.json()["ocs"]["data"]] == [made["id"]]
        assert ocs(srv, "alice", "DELETE", f"/shares/{made['id']}").status_code == 200
        assert bob.get(srv.url("bob", "docs/d.txt")).status_code == 404

        # Deleting the mount removes the shares made on it: no dangling mount points.
        r = ocs(srv, "alice", "POST", "/shares", data={
            "path": "/ShareMe/docs", "shareType": 0, "shareWith": "bob", "permissions": 1})
        assert r.status_code == 200, r.text
        sid = r.json()["ocs"]["data"]["id"]
    finally:
        srv.run_cli("files_external:delete", str(mid))
    left = json.loads(srv.run_cli("share:list", "--output", "json").stdout)
    assert all(str(s["id"]) != str(sid) for s in left)
    r = ocs(srv, "bob", "GET", "/shares", params={"shared_with_me": "true"})
    assert r.status_code == 200 and r.json()["ocs"]["data"] == [], r.text
    assert "docs" not in names(bob, srv.url("bob"))


@pytest.mark.parametrize("kind", ["s3", "dav"])
def test_encrypt_all_decrypt_all_and_scan_cover_mounts(srv, kind, request):
    """encrypt-all converts plaintext files other tools put on a mount whose encrypt
    option is on (one listed from the record too) and leaves a plaintext mount alone;
    a re-run converts nothing more; encryption:scan reports a keyless mount file by file
    ID; decrypt-all decrypts mount files as well."""
    enc, plain = Store(kind, request), Store(kind, request)
    m_enc = create_mount(srv, enc, "/ConvEnc", "--user", "alice")
    srv.run_cli("files_external:option", str(m_enc), "filesystem_check_changes", "never")
    m_plain = create_mount(srv, plain, "/ConvPlain", "--user", "alice")
    srv.run_cli("files_external:option", str(m_plain), "encrypt", "false")
    alice = srv.session("alice")
    try:
        assert "ConvEnc" in propfind_names(alice, srv.url("alice"))
        assert propfind_names(alice, srv.url("alice", "ConvEnc/")) == {"ConvEnc"}
        enc.put_raw("by-hand.txt", b"plaintext placed by another tool")
        if kind == "dav":
            (enc.dir / "deep").mkdir()
        enc.put_raw("deep/er.txt", b"deeper plaintext")
        plain.put_raw("keep.txt", b"stays plaintext")

        before = json.loads(srv.run_cli("encryption:status", "--output", "json").stdout)
        by_mount = {s["mountId"]: s for s in before["storages"]}
        assert by_mount[m_enc]["plaintextFiles"] == 2 and by_mount[m_enc]["encryptedFiles"] == 0
        assert by_mount[m_plain]["plaintextFiles"] == 1
        assert before["plaintextFiles"] == sum(s["plaintextFiles"] for s in before["storages"])
        out = json.loads(srv.run_cli("encryption:encrypt-all", "--yes", "--output",
                                     "json").stdout)
        assert out["failed"] == [] and out["converted"] >= 2
        after = json.loads(srv.run_cli("encryption:status", "--output", "json").stdout)
        by_mount = {s["mountId"]: s for s in after["storages"]}
        assert by_mount[m_enc]["encryptedFiles"] == 2 and by_mount[m_enc]["plaintextFiles"] == 0
        assert by_mount[m_plain] == {**by_mount[m_plain], "encryptedFiles": 0,
                                     "plaintextFiles": 1}
        assert "/ConvEnc: 2 encrypted, 0 plaintext" in srv.run_cli("encryption:status").stdout
        raw = enc.raw("by-hand.txt")
        assert hdr.is_encrypted(raw[:64]) and b"placed by another tool" not in raw
        assert hdr.is_encrypted(enc.raw("deep/er.txt")[:64])
        assert plain.raw("keep.txt") == b"stays plaintext"
        assert alice.get(srv.url("alice", "ConvEnc/by-hand.txt")).content \
            == b"plaintext placed by another tool"
        again = json.loads(srv.run_cli("encryption:encrypt-all", "--yes", "--output",
                                       "json").stdout)
        assert again["converted"] == 0 and again["failed"] == []

        # A file encrypted elsewhere (its key is not here): scan names it.
        _put(alice, srv.url("alice", "ConvEnc/gone.bin"), b"key goes")
        blob = enc.raw("gone.bin")
        file_id = hdr.parse(blob[:hdr.HEADER_BYTES]).file_id.hex()
        assert alice.delete(srv.url("alice", "ConvEnc/gone.bin")).status_code == 204
        enc.put_raw("foreign.bin", blob)
        res = srv.run_cli("encryption:scan", "--output", "json", check=False)
        assert res.returncode == 3, res.stderr
        problems = json.loads(res.stdout)["problems"]
        assert [(p["path"], p["state"], p["file_id"]) for p in problems] == [
            (f"~mount{m_enc}/foreign.bin", "no-key", file_id)]
        enc.delete_raw("foreign.bin")

        out = json.loads(srv.run_cli("encryption:decrypt-all", "--yes", "--output",
                                     "json").stdout)
        assert out["failed"] == [], out
        assert enc.raw("by-hand.txt") == b"plaintext placed by another tool"
        assert enc.raw("deep/er.txt") == b"deeper plaintext"
        assert plain.raw("keep.txt") == b"stays plaintext"
        assert alice.get(srv.url("alice", "ConvEnc/by-hand.txt")).content \
            == b"plaintext placed by another tool"
    finally:
        srv.run_cli("encryption:enable")
        srv.run_cli("files_external:delete", str(m_enc))
        srv.run_cli("files_external:delete", str(m_plain))


def test_crash_between_commit_and_record_is_listed_after_recovery(inst, tmp_path):
    """filesystem_check_changes never: a commit the crash cut off after the blob landed
    (so before the record heard of it) is finished by the mount's recovery and listed."""
    store = tmp_path / "store"
    store.mkdir()
    m = inst.mounts.create("/N", "local", "null::null", {"datadir": str(store)})
    inst.mounts.set_option(m.id, "filesystem_check_changes", "never")
    mv = inst.dav_vault
    assert mv.list_dir(m.root) == []  # the root is now listed from the record
    spath = f"{m.root}/f.txt"
    up = mv.begin_write(spath)
    up.write(b"committed before the crash")
    up._stream.finish()
    inst.db.add_pending(up.file_id, spath, plain=False, durable=False)
    inst.keys.wrap_new(up.file_id, up._data_key, up._recipients)
    up._blob.inner.commit()  # the store has it; the record does not
    assert [n.name for n in mv.list_dir(m.root)] == []
    mv.recover_mounts()
    assert [n.name for n in mv.list_dir(m.root)] == ["f.txt"]
    assert mv.read_all(spath) == b"committed before the crash"


@pytest.mark.parametrize("point", ["before", "after"])
def test_encrypt_all_on_a_mount_killed_and_resumed(request, tmp_path, point):
    """encrypt-all SIGKILLed around the store's commit of a mount file: the re-run
    finishes the job and every file on the mount ends up encrypted once, readable as it
    was (resumable as for homes: each file's form is its own checkpoint)."""
    from tests.test_admin_crash import run_until_hook

    s = LiveServer(tmp_path / "killed").create()
    store = Store("s3", request)
    mid = create_mount(s, store, "/Kill", "--user", "alice")
    files = {f"f{i}.txt": f"plaintext number {i} ".encode() * 500 for i in range(12)}
    for name, data in files.items():
        store.put_raw(name, data)
    run_until_hook(s, "davserver.storage.s3._S3Writer.commit", point,
                   "encryption:encrypt-all", "--yes")
    forms = [hdr.is_encrypted(store.raw(n)[:64]) for n in files]
    # Files are converted in parallel: others may have landed before the kill did.
    if point == "before":
        assert forms.count(True) == 0, forms
    else:
        assert 1 <= forms.count(True) < len(files), forms
    out = json.loads(s.run_cli("encryption:encrypt-all", "--yes", "--output", "json").stdout)
    assert out["failed"] == [] and out["converted"] == len(files) - forms.count(True), out
    assert all(hdr.is_encrypted(store.raw(n)[:64]) for n in files)
    again = json.loads(s.run_cli("encryption:encrypt-all", "--yes", "--output", "json").stdout)
    assert again["converted"] == 0
    s.start()
    try:
        alice = s.session("alice")
        for name, data in files.items():
            assert alice.get(s.url("alice", f"Kill/{name}")).content == data
        scan = s.run_cli("files_external:scan", str(mid), "--output", "json")
        assert json.loads(scan.stdout)["counts"]["ok"] == len(files)
    finally:
        s.stop()


@pytest.mark.parametrize("mode", ["never", "always"])
def test_never_lists_without_asking_the_store(srv, mode, tmp_path):
    """The proof that a listing costs no request to the store with never: the store (a
    WsgiDAV process of this test's own) is stopped, and the folder still lists from the
    record; with always the same PROPFIND answers 503."""
    from tests.webdav_server import PASSWORD, USER, RemoteDav

    remote = RemoteDav(tmp_path / "remote").start()
    try:
        base, _, root = remote.url.rpartition("/")
        out = srv.run_cli("files_external:create", "/Down-" + mode, "dav", "password::password",
                          "-c", f"host={base}", "-c", f"root={root}", "-c", "secure=false",
                          "-c", f"user={USER}", "-c", f"password={PASSWORD}",
                          "--user", "alice").stdout
        mid = out.split()[-1]
        srv.run_cli("files_external:option", mid, "filesystem_check_changes", mode)
        alice = srv.session("alice")
        folder = srv.url("alice", f"Down-{mode}/")
        _put(alice, srv.url("alice", f"Down-{mode}/kept.txt"), b"indexed")
        assert alice.request("MKCOL", srv.url("alice", f"Down-{mode}/dir")).status_code == 201
        expected = {f"Down-{mode}", "kept.txt", "dir"}
        assert propfind_names(alice, folder) == expected
    finally:
        remote.stop()
    try:
        r = alice.request("PROPFIND", folder, headers={"Depth": "1"})
        if mode == "never":
            assert r.status_code == 207, (r.status_code, r.text)
            assert propfind_names(alice, folder) == expected
        else:
            assert r.status_code == 503 and r.headers.get("Retry-After"), r.status_code
    finally:
        srv.run_cli("files_external:delete", mid)
