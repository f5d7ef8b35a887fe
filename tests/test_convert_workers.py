"""encrypt-all / decrypt-all with many files in flight: each file once, failures isolated."""

from __future__ import annotations

import os

import pytest

from davserver.storage import local
from davserver.vault import convert, convert_batch
from tests.instances import make_instance

FILES = {f"alice/d{i % 3}/f{i}.bin": os.urandom(i * 997 % 300_000) for i in range(40)}


@pytest.fixture
def inst(tmp_path):
    i = make_instance(tmp_path)
    i.users.add("alice", "alicepass1")
    for d in ("d0", "d1", "d2"):
        i.vault.make_dir(f"alice/{d}")
    yield i
    i.close()


def _place_plain(inst) -> None:
    root = os.path.join(inst.config.data_dir, "files")
    for path, data in FILES.items():
        with open(os.path.join(root, path), "wb") as f:
            f.write(data)


@pytest.mark.parametrize("workers", [1, 8])
def test_every_file_converted_once_both_ways(inst, workers):
    _place_plain(inst)
    seen = []
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=True, workers=workers,
                              progress=lambda n, b: seen.append(n))
    assert (rep.converted, rep.skipped, rep.failed) == (len(FILES), 0, [])
    assert rep.bytes == sum(len(d) for d in FILES.values()) and len(seen) == len(FILES)
    for path, data in FILES.items():
        assert inst.vault.stat(path).encrypted and inst.vault.read_all(path) == data
    again = convert.convert_all(inst.vault, ["alice"], encrypt=True, workers=workers)
    assert (again.converted, again.skipped) == (0, len(FILES))
    back = convert.convert_all(inst.vault, ["alice"], encrypt=False, workers=workers)
    assert (back.converted, back.failed) == (len(FILES), [])
    for path, data in FILES.items():
        assert not inst.vault.stat(path).encrypted and inst.vault.read_all(path) == data


def test_a_failing_file_is_reported_and_the_others_converted(inst):
    for path, data in FILES.items():
        inst.vault.write_bytes(path, data)
    broken = "alice/d1/f4.bin"
    inst.keys.delete(inst.db.get_file(broken).file_id)
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=False, workers=8)
    assert [p for p, _e in rep.failed] == [broken] and rep.converted == len(FILES) - 1
    for path, data in FILES.items():
        if path != broken:
            assert not inst.vault.stat(path).encrypted and inst.vault.read_all(path) == data
    assert inst.vault.stat(broken).encrypted


def test_an_error_that_is_not_per_file_stops_the_job(inst, monkeypatch):
    """One file at a time (the path of files above convert_batch.SMALL_BYTES)."""
    _place_plain(inst)
    monkeypatch.setattr(convert_batch, "SMALL_BYTES", -1)
    real = convert._rewrite
    calls = []

    def disk_full_on_third(vault, path, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(vault, path, **kw)

    monkeypatch.setattr(convert, "_rewrite", disk_full_on_third)
    with pytest.raises(OSError):
        convert.convert_all(inst.vault, ["alice"], encrypt=True, workers=4)
    assert len(calls) <= 3 + 3  # at most the other workers' files finished after it
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=True, workers=4)
    assert rep.failed == [] and rep.converted + rep.skipped == len(FILES)
    for path, data in FILES.items():
        assert inst.vault.read_all(path) == data


def test_a_full_disk_stops_the_batches_and_no_file_is_half_done(inst, monkeypatch):
    """In batches: the batch that hits the full disk leaves all its files as they were,
    the later batches do not start, and a re-run converts the rest."""
    _place_plain(inst)
    monkeypatch.setattr(convert_batch, "BATCH_FILES", 5)
    real = local.LocalStorage.commit_many
    calls = []

    def disk_full_on_third(self, writers, **kw):
        calls.append(len(writers))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, writers, **kw)

    monkeypatch.setattr(local.LocalStorage, "commit_many", disk_full_on_third)
    with pytest.raises(OSError):
        convert.convert_all(inst.vault, ["alice"], encrypt=True, batch_workers=2)
    # The other worker may finish the batches it took before the failure is seen (a race
    # of threads): the job still stops before all batches ran.
    assert 3 <= len(calls) < -(-len(FILES) // 5)
    assert inst.db.list_pending() == []  # the failed batch rolled back in-process
    enc = [p for p in FILES if inst.vault.stat(p).encrypted]
    assert len(enc) == 5 * (len(calls) - 1)
    assert len(os.listdir(os.path.join(inst.keys.root, "files"))) > 0
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=True)
    assert rep.failed == [] and (rep.converted, rep.skipped) == (len(FILES) - len(enc),
                                                                 len(enc))
    for path, data in FILES.items():
        assert inst.vault.stat(path).encrypted and inst.vault.read_all(path) == data
