"""Every tamper on stored data is detected and refused, never served as wrong plaintext."""

from __future__ import annotations

import os
import shutil

import pytest

from davserver.crypto import header as hdr
from davserver.errors import DavServerError, IntegrityError, VersionMismatch
from davserver.vault.files import storage_path

CS = 1 << hdr.DEFAULT_CHUNK_SHIFT
STRIDE = CS + 16


def disk(inst, rel: str) -> str:
    return os.path.join(inst.config.files_dir, "alice", rel)


def put(inst, rel: str, data: bytes) -> None:
    inst.vault.write_bytes(storage_path("alice", rel), data)


AS_OF_STAT = False


@pytest.fixture(autouse=True, params=["open", "stat then open"])
def _read_way(request, monkeypatch):
    """Every tamper is also read the way the direct GET reads: a stat, then an open that
    trusts the stat's index row when the stored header names the same file ID."""
    monkeypatch.setattr(f"{__name__}.AS_OF_STAT", request.param == "stat then open")


def read(inst, rel: str) -> bytes:
    spath = storage_path("alice", rel)
    if not AS_OF_STAT:
        return inst.vault.read_all(spath)
    f = inst.vault.open_read(spath, as_of=inst.vault.stat(spath))
    try:
        return f.read()
    finally:
        f.close()


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def payload(n_chunks: int, seed: int = 1) -> bytes:
    return os.urandom(CS * (n_chunks - 1) + 1000) if seed else b""


def test_untampered_roundtrip(inst):
    data = payload(3)
    put(inst, "a.bin", data)
    assert read(inst, "a.bin") == data


def test_flipped_payload_byte(inst):
    put(inst, "a.bin", payload(3))
    p = disk(inst, "a.bin")
    with open(p, "rb") as f:
        f.seek(hdr.HEADER_BYTES + STRIDE + 5)
        b = f.read(1)
    patch(p, hdr.HEADER_BYTES + STRIDE + 5, bytes([b[0] ^ 1]))
    with pytest.raises(IntegrityError):
        read(inst, "a.bin")


def test_chunks_reordered(inst):
    put(inst, "a.bin", payload(3))
    p = disk(inst, "a.bin")
    raw = open(p, "rb").read()
    c0 = raw[hdr.HEADER_BYTES:hdr.HEADER_BYTES + STRIDE]
    c1 = raw[hdr.HEADER_BYTES + STRIDE:hdr.HEADER_BYTES + 2 * STRIDE]
    patch(p, hdr.HEADER_BYTES, c1 + c0)
    with pytest.raises(IntegrityError):
        read(inst, "a.bin")


def test_chunk_moved_from_other_file(inst):
    put(inst, "a.bin", payload(3))
    put(inst, "b.bin", payload(3))
    donor = open(disk(inst, "b.bin"), "rb").read()[hdr.HEADER_BYTES:hdr.HEADER_BYTES + STRIDE]
    patch(disk(inst, "a.bin"), hdr.HEADER_BYTES, donor)
    with pytest.raises(IntegrityError):
        read(inst, "a.bin")


def test_truncated_at_chunk_boundary(inst):
    put(inst, "a.bin", payload(3))
    p = disk(inst, "a.bin")
    os.truncate(p, hdr.HEADER_BYTES + 2 * STRIDE)
    with pytest.raises(DavServerError):
        read(inst, "a.bin")


def test_truncation_detected_even_without_index(inst):
    """Offline view: without the DB size, the final flag still exposes the truncation."""
    put(inst, "a.bin", payload(3))
    p = disk(inst, "a.bin")
    os.truncate(p, hdr.HEADER_BYTES + 2 * STRIDE)
    inst.db.delete_files(storage_path("alice", "a.bin"))
    with pytest.raises(IntegrityError):
        read(inst, "a.bin")


def test_appended_data(inst):
    put(inst, "a.bin", payload(2))
    with open(disk(inst, "a.bin"), "ab") as f:
        f.write(os.urandom(100))
    with pytest.raises(DavServerError):
        read(inst, "a.bin")


def test_file_swapped_with_another_of_same_user(inst):
    put(inst, "a.txt", b"contents of a")
    put(inst, "b.txt", b"contents of b")
    shutil.copyfile(disk(inst, "b.txt"), disk(inst, "a.txt"))
    with pytest.raises(VersionMismatch):
        read(inst, "a.txt")
    assert read(inst, "b.txt") == b"contents of b"


def test_rolled_back_to_older_version(inst):
    put(inst, "a.txt", b"version one")
    old = open(disk(inst, "a.txt"), "rb").read()
    put(inst, "a.txt", b"version two")
    with open(disk(inst, "a.txt"), "wb") as f:
        f.write(old)
    with pytest.raises(DavServerError):
        read(inst, "a.txt")


def test_modified_header(inst):
    put(inst, "a.txt", b"some text")
    patch(disk(inst, "a.txt"), 40, b"\x00\x01")  # inside the MAC
    with pytest.raises(DavServerError):
        read(inst, "a.txt")
    put(inst, "b.txt", b"some text")
    patch(disk(inst, "b.txt"), 9, b"\x01")  # reserved byte
    with pytest.raises(DavServerError):
        read(inst, "b.txt")


def test_replaced_by_plaintext(inst):
    put(inst, "a.txt", b"secret")
    with open(disk(inst, "a.txt"), "wb") as f:
        f.write(b"forged plaintext")
    with pytest.raises(VersionMismatch):
        read(inst, "a.txt")


def test_move_behind_servers_back_keeps_key(inst):
    put(inst, "a.txt", b"movable")
    os.makedirs(disk(inst, "sub"))
    os.rename(disk(inst, "a.txt"), disk(inst, "sub/moved.txt"))
    assert read(inst, "sub/moved.txt") == b"movable"
    rec = inst.db.get_file(storage_path("alice", "sub/moved.txt"))
    assert rec is not None and rec.encrypted
    assert inst.db.get_file(storage_path("alice", "a.txt")) is None


def test_copy_behind_servers_back_is_refused(inst):
    put(inst, "a.txt", b"original")
    shutil.copyfile(disk(inst, "a.txt"), disk(inst, "copy.txt"))
    with pytest.raises(VersionMismatch):
        read(inst, "copy.txt")
    assert read(inst, "a.txt") == b"original"


def test_rewrite_uses_fresh_key_and_file_id(inst):
    put(inst, "a.txt", b"same content")
    first = inst.db.get_file(storage_path("alice", "a.txt")).file_id
    put(inst, "a.txt", b"same content")
    second = inst.db.get_file(storage_path("alice", "a.txt")).file_id
    assert first != second
    assert not inst.keys.exists(first)
    assert inst.keys.exists(second)


def _commit_up_to_rename(inst):
    """Replace a.txt ("old") with "new", doing the commit steps before the rename by hand
    (announce, then write the key), as a process that dies next would leave them."""
    put(inst, "a.txt", b"old")
    path = storage_path("alice", "a.txt")
    up = inst.vault.begin_write(path)
    up.write(b"new")
    up._stream.finish()
    inst.db.add_pending(up.file_id, path)
    inst.keys.wrap_new(up.file_id, up._data_key, up._recipients)
    return up


def test_interrupted_commit_recovers(inst):
    """Crash after the rename but before the index update: the new version wins."""
    up = _commit_up_to_rename(inst)
    up._blob.commit()  # ... and the process dies here
    assert read(inst, "a.txt") == b"new"
    assert inst.db.list_pending() == []


def test_interrupted_commit_before_rename_rolls_back(inst):
    up = _commit_up_to_rename(inst)
    # ... the process dies before the rename; the temp blob is left behind
    assert os.listdir(inst.config.tmp_dir)
    result = inst.vault.recover()
    assert result["rolled_back"] == 1 and result["temps"] == 1
    assert not inst.keys.exists(up.file_id)
    assert os.listdir(inst.config.tmp_dir) == []
    assert read(inst, "a.txt") == b"old"


@pytest.mark.parametrize("durable", [True, False])
def test_pending_row_is_synced_before_the_commit_goes_on(tmp_path, durable):
    """With fsync on, the pending row is its own synced transaction: the DB otherwise
    runs with synchronous=NORMAL, and a rename that reached the disk without its pending
    row would leave a file refused as rolled back after a power loss."""
    import sqlite3

    from davserver.meta.db import MetaDB

    db = MetaDB(str(tmp_path / "meta.db"), durable_markers=durable)
    statements = []
    db._conn().set_trace_callback(statements.append)
    db.add_pending(b"\x01" * 16, "alice/a.txt")
    with pytest.raises(sqlite3.IntegrityError):
        db.add_pending(b"\x01" * 16, "alice/a.txt")  # the same marker twice
    db._conn().set_trace_callback(None)
    kinds = [s.split()[0] + (" " + s.split()[1] if s.startswith("PRAGMA") else "")
             for s in statements]
    if durable:
        assert kinds == ["PRAGMA synchronous=FULL", "INSERT", "PRAGMA synchronous=NORMAL"] * 2
    else:
        assert kinds == ["INSERT", "INSERT"]
    assert db.query("PRAGMA synchronous") == [(1,)]  # NORMAL again, even after the error
    assert db.pending_for("alice/a.txt") == [b"\x01" * 16]
