"""Chunked uploads written in place (vault.chunkstage): chunks sent in order are encrypted
at their final offsets, and the MOVE commits that ciphertext without a second pass. The
result is the normal file format (read back by the server and by offline ``recover``),
whatever the chunk sizes; chunks sent again, or after a failed MOVE, fall back to the
streaming assembly and never reuse a nonce."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_chunked_upload import Client

CS = 1 << 18
#: Chunk sizes, each list one file: edges in every position, chunks smaller than one
#: stream chunk, a file ending on a stream-chunk boundary, an empty file.
LAYOUTS = {
    "unaligned": [100_000, 300_000, 70_000, 2 * CS, 5],
    "aligned": [CS, 2 * CS],
    "inside one stream chunk": [1000, 1000, 1000],
    "ends on a boundary": [CS - 10, 10 + CS],
    "one byte": [1],
    "empty": [0],
}


def test_segments_sealed_in_any_order_are_the_stream_format():
    """SegmentSealer gives the very bytes StreamWriter does (docs/FORMAT.md)."""
    import random

    from davserver.crypto import stream
    from davserver.crypto.segments import SegmentSealer
    key, fid = os.urandom(32), os.urandom(16)
    for size in (0, 1, CS, 3 * CS + 5):
        plain = os.urandom(size)
        s = SegmentSealer(key, fid)
        n = stream.chunk_count(size, CS)
        out = bytearray(stream.ciphertext_size(size))
        for i in random.sample(range(n), n):
            sealed = s.seal(i, plain[i * CS:(i + 1) * CS], i == n - 1)
            out[s.offset(i):s.offset(i) + len(sealed)] = sealed
        out[:64] = s.header_bytes()
        assert bytes(out) == stream.encrypt_bytes(plain, key, fid), size
        assert s.open(n - 1, bytes(out[s.offset(n - 1):]), True) == plain[(n - 1) * CS:]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.live import LiveServer
    s = LiveServer(tmp_path_factory.mktemp("inplace"), {"alice": None})
    try:
        yield s.create().start()
    finally:
        s.stop()


def staged_file_id(srv, upload_id: str) -> bytes:
    raw = (Path(srv.data_dir) / "files" / ".uploads" / "alice" / upload_id / ".data").read_bytes()
    assert raw[:6] == b"DAVSSE"
    return raw[16:32]


def stored_file_id(srv, rel: str) -> bytes:
    return (Path(srv.data_dir) / "files" / "alice" / rel).read_bytes()[16:32]


def upload(c: Client, uid: str, data: bytes, sizes: list[int], **move_headers):
    at, parts = 0, []
    for size in sizes:
        parts.append(data[at:at + size])
        at += size
    for n in range(len(parts)):
        assert c.chunk(uid, n + 1, parts[n], len(data)).status_code == 201
    assert c.listing(uid) == {f"{n + 1:05d}": len(p) for n, p in enumerate(parts)}
    return c.finish(uid, f"{uid}.bin", len(data), **move_headers)


def test_layouts_are_written_in_place_and_read_back_offline(srv, tmp_path):
    c = Client(srv)
    expected = {}
    for name, sizes in LAYOUTS.items():
        uid = name.replace(" ", "-")
        data = os.urandom(sum(sizes))
        c.start(uid, f"{uid}.bin")
        staged = staged_file_id(srv, uid)
        r = upload(c, uid, data, sizes)
        assert r.status_code == 201, (name, r.text)
        got = c.get(f"{uid}.bin")
        assert got.content == data, name
        assert stored_file_id(srv, f"{uid}.bin") == staged, name  # no re-encryption
        expected[f"alice/{uid}.bin"] = data
    # In place: the stored file is the upload's own ciphertext, not a re-encryption.
    c.start("proof", "unused")
    staged = staged_file_id(srv, "proof")
    data = os.urandom(700_000)
    for n, part in enumerate((data[:400_000], data[400_000:])):
        assert c.chunk("proof", n + 1, part).status_code == 201
    assert c.finish("proof", "proof.bin", len(data)).status_code == 201
    assert stored_file_id(srv, "proof.bin") == staged
    assert c.get("proof.bin").content == data
    expected["alice/proof.bin"] = data
    # Nothing left: no upload folder, no rows, no kept key.
    assert not [p for p in (Path(srv.data_dir) / "files" / ".uploads").rglob("*")
                if p.is_file()]
    with sqlite3.connect(os.path.join(srv.data_dir, "davserver.db")) as db:
        assert db.execute("SELECT count(*) FROM chunk_stages").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM chunk_stage_parts").fetchone()[0] == 0
    # Offline recover (no server, no DB) reads every one of them.
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "davserver", "recover", "--data",
                          srv.data_dir, "--keys", os.path.join(srv.data_dir, "keys"),
                          "--secret-file", str(srv.etc / "secret"), "--out", str(out),
                          "--user", "alice"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "0 could not be decrypted" in res.stdout, res.stdout
    for rel, want in expected.items():
        assert (out / rel).read_bytes() == want, rel


@pytest.mark.parametrize("case", ["sent again", "out of order", "deleted and sent again"])
def test_chunks_not_in_order_are_assembled_by_streaming(srv, case):
    c = Client(srv)
    uid = "again-" + case.replace(" ", "-")
    data = os.urandom(900_000)
    parts = [data[:300_000], data[300_000:600_000], data[600_000:]]
    c.start(uid, f"{uid}.bin")
    staged = staged_file_id(srv, uid)
    if case == "out of order":
        for n in (0, 2, 1):
            assert c.chunk(uid, n + 1, parts[n]).status_code == 201
    else:
        for n, part in enumerate(parts):
            assert c.chunk(uid, n + 1, os.urandom(len(part)) if n == 1 else part
                           ).status_code == 201
        if case == "deleted and sent again":
            assert c.s.delete(c.up(uid, "00002")).status_code == 204
            assert c.listing(uid) == {"00001": 300_000, "00003": 300_000}
            assert c.chunk(uid, 2, parts[1]).status_code == 201
        else:
            assert c.chunk(uid, 2, parts[1]).status_code == 204  # replaced
    assert c.listing(uid) == {f"{n + 1:05d}": len(p) for n, p in enumerate(parts)}
    assert c.finish(uid, f"{uid}.bin", len(data)).status_code == 201
    assert c.get(f"{uid}.bin").content == data
    assert stored_file_id(srv, f"{uid}.bin") != staged  # a fresh key: no nonce reused


def test_checksum_at_move_and_a_failed_move_tried_again(srv):
    c = Client(srv)
    data = os.urandom(600_000)
    sha1 = hashlib.sha1(data).hexdigest()
    c.start("ck", "ck.bin")
    assert c.chunk("ck", 1, data[:500_000]).status_code == 201
    r = c.finish("ck", "ck.bin", 500_000, **{"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == 400 and "nothing was stored" in r.text
    assert c.get("ck.bin").status_code == 404
    # A chunk after a MOVE began sealing is stored whole; the upload still completes.
    assert c.chunk("ck", 2, data[500_000:]).status_code == 201
    r = c.finish("ck", "ck.bin", len(data), **{"OC-Checksum": f"SHA1:{'0' * 40}"})
    assert r.status_code == 400
    r = c.finish("ck", "ck.bin", len(data), **{"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == 201, r.text
    assert c.get("ck.bin").content == data
    c.start("ck2", "ck2.bin")
    assert c.chunk("ck2", 1, data).status_code == 201
    r = c.finish("ck2", "ck2.bin", len(data), **{"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == 201 and c.get("ck2.bin").content == data
    assert c.s.request("PROPFIND", c.dest("ck2.bin"), headers={"Depth": "0"}, data=(
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:checksums/></d:prop></d:propfind>")).text.count(sha1) == 1


@pytest.mark.parametrize("right", [True, False])
def test_sha1_of_a_desktop_upload_is_kept_as_the_chunks_arrive(srv, right):
    """Desktop clients say where each chunk goes (OC-Chunk-Offset) and send the file's
    SHA1 with the MOVE: it is computed while the chunks arrive. A chunk deleted and sent
    again with other bytes must not leave the old bytes' hash behind."""
    c = Client(srv)
    uid = f"desk-{right}"
    data = os.urandom(800_000)
    parts = [data[:300_000], data[300_000:500_000], data[500_000:]]
    c.start(uid, f"{uid}.bin")

    def put(n: int, body: bytes, offset: int) -> int:
        return c.s.put(c.up(uid, f"{n + 1:05d}"), data=body, headers={
            "OC-Chunk-Offset": str(offset), "OC-Total-Length": str(len(data))}).status_code

    assert put(0, parts[0], 0) == 201
    assert put(1, os.urandom(len(parts[1])), 300_000) == 201  # wrong bytes at first
    assert put(2, parts[2], 500_000) == 201
    assert c.s.delete(c.up(uid, "00002")).status_code == 204
    assert put(1, parts[1], 300_000) == 201
    sha1 = hashlib.sha1(data if right else data[1:]).hexdigest()
    r = c.finish(uid, f"{uid}.bin", len(data), **{"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == (201 if right else 400), r.text
    assert (c.get(f"{uid}.bin").content == data) if right else \
        c.get(f"{uid}.bin").status_code == 404

    # In order throughout: the hash made on the way in decides.
    uid2 = f"desk2-{right}"
    c.start(uid2, f"{uid2}.bin")
    for n, (body, offset) in enumerate(((parts[0], 0), (parts[1], 300_000),
                                        (parts[2], 500_000))):
        assert c.s.put(c.up(uid2, f"{n + 1:05d}"), data=body, headers={
            "OC-Chunk-Offset": str(offset)}).status_code == 201
    r = c.finish(uid2, f"{uid2}.bin", len(data), **{"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == (201 if right else 400), r.text
    if right:
        assert c.get(f"{uid2}.bin").content == data
        assert f"{uid2}.bin in place, SHA1 checked as the chunks arrived" in srv.log_text()
        assert f"{uid}.bin in place, SHA1 checked as" not in srv.log_text()


@pytest.mark.parametrize("order", ["in order", "out of order"])
def test_s3_home_assembles_by_streaming(tmp_path, moto, order):
    """Not local storage: chunks are vault objects (ciphertext in the bucket) and the MOVE
    streams them into one write."""
    from tests.live import LiveServer
    from tests.test_storage_live import s3_config
    bucket = moto.new_bucket()
    s = LiveServer(tmp_path / "srv", {"alice": None}, config=s3_config(moto, bucket))
    s.create().start()
    try:
        c = Client(s)
        data = os.urandom(700_000)
        parts = [data[:300_000], data[300_000:]]
        c.start("s3", "s3.bin")
        for n in (range(2) if order == "in order" else (1, 0)):
            assert c.chunk("s3", n + 1, parts[n]).status_code == 201
        keys = [o["Key"] for o in moto.client().list_objects_v2(
            Bucket=bucket).get("Contents", [])]
        assert len(keys) == 2, keys
        for key in keys:
            body = moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()
            assert body[:6] == b"DAVSSE" and data[:64] not in body
        assert c.finish("s3", "s3.bin", len(data)).status_code == 201
        assert c.get("s3.bin").content == data
        assert "s3.bin by streaming" in s.log_text()
    finally:
        s.stop()


def test_a_listed_chunk_is_flushed_and_one_unflushed_before_a_reboot_is_sent_again(srv):
    """Placed chunks are flushed once, by the MOVE, unless a listing comes first (a client
    resuming skips what is listed). A chunk whose row names another boot was in a page
    cache that is gone: not listed, so the client sends it again."""
    c = Client(srv)
    data = os.urandom(900_000)
    parts = [data[:300_000], data[300_000:600_000], data[600_000:]]
    c.start("boot", "boot.bin")
    for n, part in enumerate(parts[:2]):
        assert c.chunk("boot", n + 1, part).status_code == 201
    db_path = os.path.join(srv.data_dir, "davserver.db")

    def boots() -> list[str]:
        with sqlite3.connect(db_path) as db:
            return [r[0] for r in db.execute(
                "SELECT boot FROM chunk_stage_parts WHERE folder LIKE '%/boot' ORDER BY chunk")]

    this_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert boots() == [this_boot, this_boot]  # written, not flushed
    assert c.listing("boot") == {"00001": 300_000, "00002": 300_000}
    assert boots() == ["", ""]  # the listing flushed them
    assert c.chunk("boot", 3, parts[2]).status_code == 201
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE chunk_stage_parts SET boot = 'an-earlier-boot' WHERE boot != ''")
    assert c.listing("boot") == {"00001": 300_000, "00002": 300_000}
    assert c.finish("boot", "boot.bin", len(data)).status_code == 400  # one is missing
    assert c.chunk("boot", 3, parts[2]).status_code == 201
    assert c.finish("boot", "boot.bin", len(data)).status_code == 201
    assert c.get("boot.bin").content == data


def test_a_chunk_whose_offset_the_client_counts_otherwise_is_kept_whole(srv):
    c = Client(srv)
    data = os.urandom(500_000)
    c.start("off", "off.bin")
    assert c.s.put(c.up("off", "00001"), data=data[:200_000],
                   headers={"OC-Chunk-Offset": "0"}).status_code == 201
    assert c.s.put(c.up("off", "00002"), data=data[200_000:],
                   headers={"OC-Chunk-Offset": "123"}).status_code == 201
    assert c.finish("off", "off.bin", len(data)).status_code == 201
    assert c.get("off.bin").content == data
    assert "into alice/off.bin by streaming" in srv.log_text()


def test_user_key_mode_upload_into_a_shared_folder_is_wrapped_like_a_put(tmp_path):
    """alice uploads in chunks into her folder shared with bob: written in place, the
    file's key is wrapped as for her PUT there (her key and the share's), and bob reads
    it; bob's own chunked upload into the share lands in alice's folder."""
    from tests.live import LiveServer
    from tests.test_sharing_keys import file_wraps
    s = LiveServer(tmp_path / "srv", {"alice": None, "bob": None}, config={
        "encryption": {"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1}})
    s.create()
    s.run_cli("encryption:disable-master-key", "--yes")
    s.start()
    try:
        alice = Client(s, "alice")
        assert alice.s.request("MKCOL", s.url("alice", "proj")).status_code == 201
        s.session("bob").request("PROPFIND", s.url("bob"), headers={"Depth": "0"})
        s.run_cli("share:add", "alice", "proj", "--user", "bob", "--permissions", "all")
        data = os.urandom(700_000)
        alice.start("sh", "proj/big.bin")
        staged = (Path(s.data_dir) / "files" / ".uploads" / "alice" / "sh" / ".data"
                  ).read_bytes()[16:32]
        for n, part in enumerate((data[:400_000], data[400_000:])):
            assert alice.chunk("sh", n + 1, part).status_code == 201
        r = alice.finish("sh", "proj/big.bin", len(data))
        assert r.status_code == 201, r.text
        assert (Path(s.data_dir) / "files" / "alice" / "proj" / "big.bin"
                ).read_bytes()[16:32] == staged
        assert alice.get("proj/big.bin").content == data
        assert s.session("bob").get(s.url("bob", "proj/big.bin")).content == data
        assert alice.s.put(s.url("alice", "proj/put.bin"), data=b"x").status_code == 201
        assert file_wraps(s, "alice/proj/big.bin") == file_wraps(s, "alice/proj/put.bin")
        assert "share" in {w.split(":")[0] for w in file_wraps(s, "alice/proj/big.bin")}
        bob = Client(s, "bob")
        bob.start("b1", "proj/bob.bin")
        assert bob.chunk("b1", 1, data[:300_000]).status_code == 201
        r = bob.finish("b1", "proj/bob.bin", 300_000)
        assert r.status_code == 201, r.text
        assert alice.get("proj/bob.bin").content == data[:300_000]
        assert "share" in {w.split(":")[0] for w in file_wraps(s, "alice/proj/bob.bin")}
    finally:
        s.stop()
