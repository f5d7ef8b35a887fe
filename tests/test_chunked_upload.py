"""Nextcloud chunked upload v2 (dav.ncupload): chunks encrypted at rest, assembled into
one atomic write; every misuse a clear 4xx with nothing half-visible."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET

import pytest
import requests

UP = "/remote.php/dav/uploads"


class Client:
    def __init__(self, server, user: str = "alice") -> None:
        self.server = server
        self.user = user
        self.s = server.session(user)

    def up(self, upload_id: str, name: str = "") -> str:
        return f"{self.server.base}{UP}/{self.user}/{upload_id}" + (f"/{name}" if name else "")

    def dest(self, path: str) -> str:
        return self.server.url(self.user, path)

    def start(self, upload_id: str, dest: str) -> None:
        r = self.s.request("MKCOL", self.up(upload_id), headers={"Destination": self.dest(dest)})
        assert r.status_code == 201, r.text

    def chunk(self, upload_id: str, n: int, data: bytes, total: int | None = None):
        headers = {"OC-Total-Length": str(total)} if total is not None else {}
        return self.s.put(self.up(upload_id, f"{n:05d}"), data=data, headers=headers)

    def finish(self, upload_id: str, dest: str, total: int | None, **headers):
        if total is not None:
            headers["OC-Total-Length"] = str(total)
        return self.s.request("MOVE", self.up(upload_id, ".file"),
                              headers={"Destination": self.dest(dest), **headers})

    def get(self, path: str):
        return self.s.get(self.dest(path))

    def listing(self, upload_id: str) -> dict[str, int]:
        r = self.s.request("PROPFIND", self.up(upload_id), headers={"Depth": "1"})
        assert r.status_code == 207, r.text
        out = {}
        for resp in ET.fromstring(r.content).findall("{DAV:}response"):
            size = resp.findtext(".//{DAV:}getcontentlength")
            if size is not None:
                out[resp.findtext("{DAV:}href").rsplit("/", 1)[-1]] = int(size)
        return out


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.live import LiveServer
    s = LiveServer(tmp_path_factory.mktemp("chunked"), {"alice": None, "bob": None,
                                                         "quinn": "300KB"})
    try:
        yield s.create().start()
    finally:
        s.stop()


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_out_of_order_chunks_assemble_and_are_ciphertext_at_rest(srv):
    c = Client(srv)
    data = os.urandom(250_000)
    marker = b"PLAINTEXT-MARKER-" * 100
    data = marker + data
    parts = _parts(data, 64_000)
    c.start("u1", "big.bin")
    for n in reversed(range(len(parts))):  # the last chunk first
        assert c.chunk("u1", n + 1, parts[n], len(data)).status_code == 201
    assert c.listing("u1") == {f"{n + 1:05d}": len(p) for n, p in enumerate(parts)}
    # The last chunk (sent first) is written in place, the others are stored whole; the
    # bytes of the former that fill no whole stream chunk are kept (sealed) in the index.
    stored = [p for p in (srv.root / "data" / "files" / ".uploads").rglob("*") if p.is_file()]
    assert sorted(p.name for p in stored) == [".data", "00001", "00002", "00003"]
    for p in stored + list((srv.root / "data").glob("davserver.db*")):
        raw = p.read_bytes()
        assert b"PLAINTEXT-MARKER" not in raw and data[100_000:100_064] not in raw
        assert data[-64:] not in raw, p
    assert c.get("big.bin").status_code == 404  # nothing visible before the MOVE
    r = c.finish("u1", "big.bin", len(data), **{"X-OC-Mtime": "1600000000"})
    assert r.status_code == 201, r.text
    assert r.headers["X-OC-MTime"] == "accepted" and r.headers["OC-FileId"]
    got = c.get("big.bin")
    assert got.content == data and got.headers["ETag"] == r.headers["ETag"]
    assert got.headers["Last-Modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert c.s.request("PROPFIND", c.up("u1")).status_code == 404  # chunks gone
    assert not [p for p in (srv.root / "data" / "files" / ".uploads").rglob("*")
                if p.is_file()]
    # Uploads are not part of the files tree.
    listing = c.s.request("PROPFIND", srv.url("alice", ""), headers={"Depth": "1"})
    assert listing.status_code == 207 and ".uploads" not in listing.text
    # A second upload over it: 204, same file ID, new ETag.
    c.start("u2", "big.bin")
    assert c.chunk("u2", 1, b"small now").status_code == 201
    r2 = c.finish("u2", "big.bin", 9)
    assert r2.status_code == 204 and r2.headers["OC-FileId"] == r.headers["OC-FileId"]
    assert r2.headers["ETag"] != r.headers["ETag"] and c.get("big.bin").content == b"small now"


@pytest.mark.parametrize("case", ["missing chunk", "wrong total", "bad total"])
def test_incomplete_upload_is_refused(srv, case):
    c = Client(srv)
    data = os.urandom(30_000)
    parts = _parts(data, 10_000)
    uid = "inc-" + case.replace(" ", "-")
    c.start(uid, f"{uid}.bin")
    for n, p in enumerate(parts):
        if case == "missing chunk" and n == 1:
            continue
        c.chunk(uid, n + 1, p)
    total = {"missing chunk": len(data), "wrong total": len(data) + 1,
             "bad total": "lots"}[case]
    r = c.s.request("MOVE", c.up(uid, ".file"), headers={
        "Destination": c.dest(f"{uid}.bin"), "OC-Total-Length": str(total)})
    assert r.status_code == 400 and "nothing was stored" in r.text
    assert c.get(f"{uid}.bin").status_code == 404
    # The upload is still there to be completed.
    if case == "missing chunk":
        c.chunk(uid, 2, parts[1])
        assert c.finish(uid, f"{uid}.bin", len(data)).status_code == 201
        assert c.get(f"{uid}.bin").content == data


def test_quota_exceeded_mid_upload(srv):
    c = Client(srv, "quinn")
    c.start("q", "q.bin")
    assert c.chunk("q", 1, os.urandom(200_000)).status_code == 201
    r = c.chunk("q", 2, os.urandom(200_000))
    assert r.status_code == 507
    assert c.listing("q") == {"00001": 200_000}  # the refused chunk left nothing
    r = c.chunk("q", 3, b"x", total=1_000_000)  # announced size too big: refused at once
    assert r.status_code == 507
    assert c.get("q.bin").status_code == 404
    assert c.s.delete(c.up("q")).status_code == 204  # abort frees the space
    c.start("q2", "q.bin")
    assert c.chunk("q2", 1, os.urandom(250_000)).status_code == 201
    assert c.finish("q2", "q.bin", 250_000).status_code == 201


def test_two_uploads_to_one_destination(srv):
    c = Client(srv)
    first = c.s.put(c.dest("shared.txt"), data=b"v1")
    etag = first.headers["ETag"]
    for uid, body in (("a", b"from a"), ("b", b"from b")):
        c.start(uid, "shared.txt")
        c.chunk(uid, 1, body)
    ra = c.finish("a", "shared.txt", 6, **{"If-Match": etag})
    assert ra.status_code == 204
    rb = c.finish("b", "shared.txt", 6, **{"If-Match": etag})
    assert rb.status_code == 412 and "nothing was stored" in rb.text
    assert c.get("shared.txt").content == b"from a"


def test_locked_destination_needs_its_token(srv):
    c = Client(srv)
    c.s.put(c.dest("locked.txt"), data=b"v1")
    lock = c.s.request("LOCK", c.dest("locked.txt"), headers={"Timeout": "Second-60"}, data=(
        '<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
        "</d:lockscope><d:locktype><d:write/></d:locktype></d:lockinfo>"))
    assert lock.status_code == 200, lock.text
    token = lock.headers["Lock-Token"].strip("<>")
    c.start("lk", "locked.txt")
    c.chunk("lk", 1, b"v2")
    assert c.finish("lk", "locked.txt", 2).status_code == 423
    assert c.get("locked.txt").content == b"v1"
    r = c.finish("lk", "locked.txt", 2, If=f"(<{token}>)")
    assert r.status_code == 204, r.text
    assert c.get("locked.txt").content == b"v2"
    c.s.request("UNLOCK", c.dest("locked.txt"), headers={"Lock-Token": f"<{token}>"})


def test_abort_and_misuse(srv):
    c = Client(srv)
    c.start("ab", "ab.bin")
    c.chunk("ab", 1, b"data")
    assert c.s.request("MKCOL", c.up("ab")).status_code == 405  # exists already
    assert c.s.delete(c.up("ab")).status_code == 204
    assert c.s.request("PROPFIND", c.up("ab")).status_code == 404
    assert c.finish("ab", "ab.bin", 4).status_code == 404
    assert c.chunk("ab", 1, b"late").status_code == 404
    c.start("mis", "x.bin")
    assert c.s.put(c.up("mis", "notanumber"), data=b"x").status_code == 400
    r = c.s.request("MOVE", c.up("mis", ".file"), headers={"Destination": "/elsewhere"})
    assert r.status_code == 400
    r = c.s.request("MOVE", c.up("mis", ".file"),
                    headers={"Destination": srv.url("bob", "x.bin")})
    assert r.status_code == 403
    r = c.finish("mis", "no/such/folder/x.bin", 0)
    assert r.status_code == 409
    # Another user's uploads do not exist for alice.
    bob = Client(srv, "bob")
    bob.start("mine", "b.bin")
    assert c.s.request("PROPFIND", f"{srv.base}{UP}/bob/mine").status_code == 404
    assert c.s.put(f"{srv.base}{UP}/bob/mine/00001", data=b"x").status_code == 404
    assert requests.request("MKCOL", c.up("anon")).status_code == 401


def _moving(server) -> bool:
    """Has a MOVE begun sealing an upload written in place (vault.chunkstage)?"""
    import sqlite3
    with sqlite3.connect(os.path.join(server.data_dir, "davserver.db")) as db:
        return bool(db.execute("SELECT count(*) FROM chunk_stages WHERE moved = 1").fetchone()[0])


@pytest.mark.parametrize("order", ["in order", "out of order"])
def test_server_killed_during_assembly_leaves_old_or_new(tmp_path, order):
    """In order, the chunks are written in place and the MOVE only seals and renames: the
    server is killed once it began sealing. Out of order, the MOVE streams every chunk
    into a new write: killed while that streams."""
    import threading

    from tests.live import LiveServer, wait_until
    s = LiveServer(tmp_path / "srv", {"alice": None}).create().start()
    try:
        c = Client(s)
        old = b"old version"
        c.s.put(c.dest("crash.bin"), data=old)
        new = os.urandom(60 * 1_000_000)
        parts = list(enumerate(_parts(new, 20_000_000)))
        c.start("crash", "crash.bin")
        for n, part in (parts if order == "in order" else reversed(parts)):
            assert c.chunk("crash", n + 1, part).status_code == 201
        answers = []
        t = threading.Thread(target=lambda: answers.append(_try(
            lambda: c.finish("crash", "crash.bin", len(new)))))
        t.start()
        busy = (lambda: _moving(s)) if order == "in order" else (lambda: s.tmp_files())
        assert wait_until(busy, timeout=20, interval=0.001)
        s.kill()
        t.join(30)
        s.start()
        got = Client(s).get("crash.bin").content
        assert got in (old, new)
        if got == old:  # not committed: the chunks are still there to try again
            assert isinstance(answers[0], requests.RequestException), "answered, not stored"
            assert Client(s).listing("crash") == {f"{n + 1:05d}": len(p) for n, p in parts}
            assert Client(s).finish("crash", "crash.bin", len(new)).status_code == 204
            assert Client(s).get("crash.bin").content == new
        assert s.tmp_files() == []
    finally:
        s.stop()


def _try(fn):
    try:
        return fn()
    except requests.RequestException as e:
        return e


def test_stale_uploads_are_cleaned(inst):
    from davserver.dav.ncupload import ChunkedUploads, clean_stale

    for d in (".uploads", ".uploads/alice", ".uploads/alice/old"):
        inst.vault.storage.make_dir(d)
    up = inst.vault.begin_write(".uploads/alice/old/00001", owner="alice")
    up.write(b"stale chunk")
    up.commit()
    from davserver.vault.chunkstage import ChunkStage, stage_key_id
    inst.vault.storage.make_dir(".uploads/alice/staged")  # one written in place
    stage = ChunkStage(inst.vault, inst.recipients, inst.identities,
                       run_dir=inst.config.run_dir)
    stage.create(".uploads/alice/staged", "alice")
    staged_id = stage.state(".uploads/alice/staged")[0]
    assert clean_stale(inst, 3600) == 0  # fresh: kept
    assert inst.vault.stat(".uploads/alice/old/00001") is not None
    # A chunk written in place later than the folder changed keeps the upload alive.
    later = time.time() + 7200
    data = os.path.join(inst.vault.storage.root, ".uploads", "alice", "staged", ".data")
    os.utime(data, (later, later))
    assert clean_stale(inst, 3600, now=later) == 1
    assert stage.state(".uploads/alice/staged") is not None
    os.utime(data, (time.time(), time.time()))
    assert clean_stale(inst, 3600, now=time.time() + 7200) == 1
    assert inst.vault.storage.stat(".uploads/alice/old") is None
    assert inst.db.get_file(".uploads/alice/old/00001") is None
    assert inst.vault.storage.stat(".uploads/alice/staged") is None
    assert stage.state(".uploads/alice/staged") is None
    assert not inst.keys.exists(stage_key_id(staged_id))
    inst.config.extra["nextcloud"] = {"upload_max_age_hours": 2}
    assert ChunkedUploads(inst).max_age == 7200


def test_deleting_a_user_removes_their_uploads(inst):
    inst.users.add("carol", "carolpass1")
    for d in (".uploads", ".uploads/carol", ".uploads/carol/u"):
        inst.vault.storage.make_dir(d)
    up = inst.vault.begin_write(".uploads/carol/u/00001", owner="carol")
    up.write(b"chunk")
    up.commit()
    from davserver.vault.chunkstage import ChunkStage, stage_key_id
    inst.vault.storage.make_dir(".uploads/carol/staged")
    stage = ChunkStage(inst.vault, inst.recipients, inst.identities,
                       run_dir=inst.config.run_dir)
    stage.create(".uploads/carol/staged", "carol")
    staged_id = stage.state(".uploads/carol/staged")[0]
    assert inst.keys.exists(stage_key_id(staged_id))
    inst.app_passwords.create("carol", "phone", None)
    inst.users.delete("carol")
    assert inst.vault.storage.stat(".uploads/carol") is None
    assert inst.db.get_file(".uploads/carol/u/00001") is None
    assert not inst.keys.exists(stage_key_id(staged_id))
    assert not inst.db.query("SELECT 1 FROM chunk_stages WHERE folder LIKE '.uploads/carol/%'")
    assert inst.app_passwords.list("carol") == []


@pytest.mark.parametrize("perms,status", [("read", 403), ("read,create", 201),
                                          ("read,update", 403)])
def test_member_chunked_upload_into_a_share_follows_its_permissions(srv, perms, status):
    """bob's chunked upload into a folder alice shared with him: stored in her folder
    when the share grants create, else 403 with nothing stored."""
    folder = f"shared-{perms.replace(',', '-')}"
    alice, bob = Client(srv, "alice"), Client(srv, "bob")
    assert alice.s.request("MKCOL", alice.dest(folder)).status_code == 201
    srv.session("bob").request("PROPFIND", srv.url("bob"), headers={"Depth": "0"})
    srv.run_cli("share:add", "alice", folder, "--user", "bob", "--permissions", perms)
    data = os.urandom(200_000)
    uid = f"m{abs(hash(perms)) % 10**8}"
    bob.start(uid, f"{folder}/new.bin")
    assert bob.chunk(uid, 1, data).status_code == 201
    r = bob.finish(uid, f"{folder}/new.bin", len(data))
    assert r.status_code == status, r.text
    stored = alice.get(f"{folder}/new.bin")
    if status == 201:
        assert stored.content == data
        assert bob.get(f"{folder}/new.bin").content == data
    else:
        assert "permission" in r.text and stored.status_code == 404
