"""encrypt-all / decrypt-all of small files in batches (vault.convert_batch): a batch
interrupted among its renames leaves every file wholly old or wholly new and readable,
recover() settles the rest, and a re-run converts each remaining file once; in master-key
and user-key mode, keys in a directory or in the database, on SQLite and PostgreSQL
metadata."""

from __future__ import annotations

import os

import pytest

from davserver.crypto import header as hdr
from davserver.instance import Instance
from davserver.storage import local
from davserver.vault import context, convert, convert_batch
from tests.instances import make_instance

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL

FILES = {f"alice/d{i % 3}/f{i}.bin": os.urandom(i * 331 % 20_000) for i in range(36)}
#: Batches of this many files, so the job has several and a kill lands inside one.
BATCH = 8
#: The kill comes after this many renames of the batch path (inside the second batch;
#: the batch's renames run side by side, so some others of that batch may finish too).
KILL_AFTER = BATCH + 3


class Killed(BaseException):
    """Stands for SIGKILL: not an error the job handles."""


@pytest.fixture(params=[("master", "dir"), ("user", "dir"), ("master", "db"), ("user", "db")],
                ids=lambda p: "-".join(p))
def setup(request, tmp_path, metadata_url, monkeypatch):
    """An instance per key mode and key store (a directory, or the metadata database,
    where a batch's keys are durable at commit instead of by the batch's syncfs)."""
    mode, store = request.param
    inst = make_instance(tmp_path, user_mode=mode == "user", fsync=True,
                         key_storage_root="db:" if store == "db" else "")
    assert (inst.keys.docs.sync_root is None) == (store == "db")
    inst.users.add("alice", "alicepass1")
    ids = inst.unlock("alice", "alicepass1")
    for d in ("d0", "d1", "d2"):
        inst.vault.make_dir(f"alice/{d}")
    root = os.path.join(inst.config.data_dir, "files")
    for path, data in FILES.items():
        with open(os.path.join(root, path), "wb") as f:
            f.write(data)
    monkeypatch.setattr(convert_batch, "BATCH_FILES", BATCH)
    with context.acting_as(*ids):
        yield inst, tmp_path
    inst.close()


def _stored_encrypted(inst, path: str) -> bool:
    with open(os.path.join(inst.config.data_dir, "files", path), "rb") as f:
        return hdr.is_encrypted(f.read(hdr.HEADER_BYTES))


def _key_files(inst) -> int:
    return sum(1 for _id in inst.keys.iter_file_ids())


def test_small_files_go_through_batches(setup, monkeypatch):
    inst, _tmp = setup
    calls = []
    real = convert_batch.convert_batch
    monkeypatch.setattr(convert_batch, "convert_batch",
                        lambda v, files, **kw: calls.append(len(files)) or real(v, files, **kw))
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=True)
    assert (rep.converted, rep.failed) == (len(FILES), [])
    assert rep.bytes == sum(len(d) for d in FILES.values())
    assert sum(calls) == len(FILES) and max(calls) == BATCH
    assert _key_files(inst) == len(FILES)
    for path, data in FILES.items():
        assert _stored_encrypted(inst, path) and inst.vault.read_all(path) == data
    back = convert.convert_all(inst.vault, ["alice"], encrypt=False)
    assert (back.converted, back.failed) == (len(FILES), [])
    assert _key_files(inst) == 0
    for path, data in FILES.items():
        assert not _stored_encrypted(inst, path) and inst.vault.read_all(path) == data


@pytest.mark.parametrize("how", ["interrupted", "killed"])
@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypt", "decrypt"])
def test_batch_stopped_among_its_renames(setup, monkeypatch, encrypt, how):
    """``interrupted``: an exception (Ctrl-C) unwinds the batch; ``killed``: nothing is
    rolled back in the process (its clean-up is disabled), as after SIGKILL."""
    inst, _tmp = setup
    if not encrypt:
        convert.convert_all(inst.vault, ["alice"], encrypt=True)
    renames = []
    real_publish = local._FileWriter.publish

    def publish(self):
        real_publish(self)
        renames.append(self)
        if len(renames) == KILL_AFTER:
            raise Killed()

    monkeypatch.setattr(local._FileWriter, "publish", publish)
    if how == "killed":
        monkeypatch.setattr(convert_batch, "_undo", lambda vault, items: None)
        monkeypatch.setattr(local._FileWriter, "abort", lambda self: None)
    with pytest.raises(Killed):
        convert.convert_all(inst.vault, ["alice"], encrypt=encrypt, batch_workers=1)
    monkeypatch.undo()
    monkeypatch.setattr(convert_batch, "BATCH_FILES", BATCH)

    # Mid-state, before any recovery: each file wholly in one form, and as many in the
    # new form as renames happened.
    forms = {p: _stored_encrypted(inst, p) for p in FILES}
    assert sum(1 for enc in forms.values() if enc == encrypt) == len(renames) >= KILL_AFTER
    # A fresh process (the server's start or the re-run) recovers; every file reads back.
    ids = context.current()
    inst.close()
    again = Instance(inst.config)
    try:
        again.vault.recover()
        assert again.db.list_pending() == []
        for path, data in FILES.items():
            assert again.vault.read_all(path) == data
            assert _stored_encrypted(again, path) == forms[path]
        assert _key_files(again) == sum(forms.values())  # no key leaked, none lost
        with context.acting_as(*ids):
            rep = convert.convert_all(again.vault, ["alice"], encrypt=encrypt)
        assert rep.failed == [] and rep.converted == len(FILES) - len(renames)
        assert rep.skipped == len(renames)
        for path, data in FILES.items():
            assert _stored_encrypted(again, path) == encrypt
            assert again.vault.read_all(path) == data
        assert _key_files(again) == (len(FILES) if encrypt else 0)
    finally:
        again.close()


def test_a_file_committed_meanwhile_fails_alone(setup, monkeypatch):
    """A commit by someone else between the read and the batch's commit (a long upload
    admitted before maintenance mode) is not reverted: that file fails, the rest convert."""
    inst, _tmp = setup
    victim = "alice/d1/f4.bin"
    real = convert_batch._prepare

    def prepare(vault, path, size, encrypt):
        got = real(vault, path, size, encrypt)
        if path == victim:
            vault.write_bytes(victim, b"fresh upload")
        return got

    monkeypatch.setattr(convert_batch, "_prepare", prepare)
    rep = convert.convert_all(inst.vault, ["alice"], encrypt=True)
    assert [p for p, _e in rep.failed] == [victim] and rep.converted == len(FILES) - 1
    assert inst.vault.read_all(victim) == b"fresh upload"
    for path, data in FILES.items():
        if path != victim:
            assert _stored_encrypted(inst, path) and inst.vault.read_all(path) == data
