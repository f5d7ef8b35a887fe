"""Reading ahead on a helper thread sends exactly what one thread would, and cleans up."""

from __future__ import annotations

import io
import os
import threading

import pytest

from davserver.crypto import header as hdr
from davserver.dav import overlap
from davserver.errors import IntegrityError
from davserver.vault.files import storage_path

CS = 1 << hdr.DEFAULT_CHUNK_SHIFT
BS = 100_000  # not a multiple of the chunk size: blocks straddle chunks
DATA = os.urandom(7 * CS + 1234)


@pytest.fixture
def stored(inst):
    path = storage_path("alice", "big.bin")
    inst.vault.write_bytes(path, DATA)
    return inst, path


def _open(inst, path):
    return inst.vault.open_read(path)


def _helpers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead"]


def _drain(body) -> list[bytes]:
    try:
        return list(body)
    finally:
        body.close()


def test_same_blocks_as_one_thread(stored):
    inst, path = stored
    ahead = _drain(overlap.ReadAhead(_open(inst, path), BS))
    plain = _drain(overlap.Blocks(_open(inst, path), BS))
    assert [len(b) for b in ahead] == [len(b) for b in plain]
    assert b"".join(ahead) == b"".join(plain) == DATA
    assert not _helpers()


def test_tampered_chunk_fails_at_the_same_block(stored):
    inst, path = stored
    disk = os.path.join(inst.config.files_dir, path)
    with open(disk, "r+b") as f:
        f.seek(hdr.HEADER_BYTES + 4 * (CS + 16) + 7)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 1]))

    def blocks_before_error(body) -> int:
        got = 0
        try:
            with pytest.raises(IntegrityError):
                for _ in body:
                    got += 1
        finally:
            body.close()
        return got

    n_ahead = blocks_before_error(overlap.ReadAhead(_open(inst, path), BS))
    n_plain = blocks_before_error(overlap.Blocks(_open(inst, path), BS))
    assert n_ahead == n_plain == (4 * CS) // BS
    assert not _helpers()


@pytest.mark.parametrize("after", [0, 1, 3])
def test_close_mid_stream_stops_the_helper_and_closes_the_file(stored, after):
    """What the server does when the client goes away after ``after`` blocks."""
    inst, path = stored
    f = _open(inst, path)
    released = []
    body = overlap.ReadAhead(f, BS, on_close=lambda: released.append(1))
    it = iter(body)
    for _ in range(after):
        assert next(it)
    if after:
        assert _helpers()
    body.close()
    assert not _helpers()
    assert f.closed
    assert released == [1]


def test_one_helper_per_process(stored, monkeypatch):
    inst, path = stored
    monkeypatch.setattr(overlap, "READ_AHEAD_MIN", len(DATA))
    small = overlap.response_body(_open(inst, path), BS, len(DATA) - 1)
    first = overlap.response_body(_open(inst, path), BS, len(DATA))
    second = overlap.response_body(_open(inst, path), BS, len(DATA))
    assert isinstance(small, overlap.Blocks)
    assert isinstance(first, overlap.ReadAhead)
    assert isinstance(second, overlap.Blocks)  # the first still holds the helper
    assert b"".join(_drain(second)) == DATA
    assert b"".join(_drain(first)) == DATA
    _drain(small)
    third = overlap.response_body(_open(inst, path), BS, len(DATA))
    assert isinstance(third, overlap.ReadAhead)  # released by the first's close
    assert b"".join(_drain(third)) == DATA


def test_a_body_is_iterated_once(stored):
    inst, path = stored
    body = overlap.ReadAhead(_open(inst, path), BS)
    assert b"".join(body) == DATA
    with pytest.raises(RuntimeError):
        next(iter(body))
    body.close()


def test_a_forked_worker_does_not_inherit_a_held_slot(stored, monkeypatch):
    """prefork replaces a dead worker by forking the first process, maybe mid-download."""
    inst, path = stored
    monkeypatch.setattr(overlap, "READ_AHEAD_MIN", 1)
    held = overlap.response_body(_open(inst, path), BS, len(DATA))
    assert isinstance(held, overlap.ReadAhead)
    assert isinstance(overlap.response_body(_open(inst, path), BS, 10), overlap.Blocks)
    pid = os.fork()
    if pid == 0:  # the child: its own slot is free
        body = overlap.response_body(io.BytesIO(b"x" * 10), BS, 10)
        os._exit(0 if isinstance(body, overlap.ReadAhead) else 1)
    _, status = os.waitpid(pid, 0)
    held.close()
    assert os.waitstatus_to_exitcode(status) == 0
