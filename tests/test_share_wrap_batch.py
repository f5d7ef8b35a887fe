"""Sharing a folder in user-key mode appends the share key's wraps to the files' key files
in flushed batches (vault.keystore, durable.append_many). A process killed in the middle
leaves every file readable by its owner and the share's key work pending, finished by the
next holder who logs in; torn appended lines are skipped; offline recover reads such key
files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from davserver import durable
from davserver.errors import FormatError, KeyNotFound
from davserver.vault import context, offline
from davserver.vault.keystore import Wrap, parse_key_file
from davserver.vault.shares import ALL, USER
from tests.instances import make_instance

ROOT = Path(__file__).resolve().parent.parent
FILES = 40
PASS = {"alice": "alice-password", "bob": "bob-password"}
FID = bytes(range(16))


def _content(i: int) -> bytes:
    return f"file {i} ".encode() * (i + 1)


def _prepare(tmp_path: Path, *, fsync: bool = False):
    """alice and bob have key pairs; alice has FILES files in big/, shared with nobody."""
    inst = make_instance(tmp_path, user_mode=True, fsync=fsync)
    for u, p in PASS.items():
        inst.users.add(u, p)
    ids = {u: inst.unlock(u, p) for u, p in PASS.items()}
    with context.acting_as(*ids["alice"]):
        inst.vault.make_dir("alice/big")
        for i in range(FILES):
            inst.vault.write_bytes(f"alice/big/f{i:02d}", _content(i))
    return inst, ids


def _key_file(inst, rel: str) -> Path:
    fid = inst.db.get_file(rel).file_id
    return Path(inst.keys._path(fid))


def _reads_all(inst, identities) -> list[str]:
    """The files of alice/big that ``identities`` cannot read (wrong bytes fail loudly)."""
    bad = []
    with context.acting_as(*identities):
        for i in range(FILES):
            try:
                assert inst.vault.read_all(f"alice/big/f{i:02d}") == _content(i)
            except KeyNotFound:
                bad.append(f"f{i:02d}")
    return bad


# --- the key file format ---------------------------------------------------------------

def _doc(wraps: list[Wrap]) -> bytes:
    from davserver.vault.keystore import KeyStore

    return KeyStore._document(FID, wraps)


def _line(w: Wrap) -> bytes:
    from davserver.vault.keystore import KeyStore

    return KeyStore._wrap_line(w)


W1, W2, W3 = (Wrap(f"user:u{i}:k", "self", bytes([i]) * 60) for i in (1, 2, 3))


@pytest.mark.parametrize("tail,expect", [
    (b"", [W1]),
    (b"\n" + _line(W2) + b"\n", [W1, W2]),
    (b"\n" + _line(W2)[:30], [W1]),  # torn last line (crash mid-append)
    (b"\n" + _line(W2)[:30] + b"\n" + _line(W3) + b"\n", [W1, W3]),  # torn, then retried
    (b"\n" + _line(W2) + b"\n\n" + _line(W3) + b"\n", [W1, W2, W3]),
], ids=["plain", "appended", "torn-last", "torn-then-retried", "two-appends"])
def test_key_file_with_appended_lines(tail, expect):
    assert parse_key_file(_doc([W1]) + tail, FID) == expect


@pytest.mark.parametrize("raw", [
    b"\n" + b'{"to": "x"}' + b"\n",  # JSON, but not a wrap
    b"\n" + b'[1, 2]' + b"\n",
    b"\n" + b'{"to": 5, "suite": "self", "sealed": ""}' + b"\n",
], ids=["missing-fields", "not-an-object", "bad-types"])
def test_appended_line_that_is_json_but_not_a_wrap_is_damage(raw):
    with pytest.raises(FormatError):
        parse_key_file(_doc([W1]) + raw, FID)


def test_damaged_document_is_still_refused():
    with pytest.raises(FormatError):
        parse_key_file(_doc([W1])[:-5] + b"\n" + _line(W2) + b"\n", FID)


# --- sharing appends, a rewrite folds --------------------------------------------------

def test_share_appends_and_a_later_rewrite_folds_lines_in(tmp_path):
    inst, ids = _prepare(tmp_path)
    try:
        doc_before = _key_file(inst, "alice/big/f00").read_bytes()
        with context.acting_as(*ids["alice"]):
            share = inst.shares.create("alice", "big", USER, "bob", permissions=ALL)
        raw = _key_file(inst, "alice/big/f00").read_bytes()
        assert raw.startswith(doc_before) and raw.count(b"\n") == 2  # one appended line
        assert f"share:{share.id}:v1".encode() in raw[len(doc_before):]
        assert inst.sharewraps.keys.pending() == []
        assert _reads_all(inst, ids["bob"]) == []
        # Moving a file out of the share rewrites its key file: one document again.
        with context.acting_as(*ids["alice"]):
            inst.vault.move("alice/big/f00", "alice/f00")
        raw = _key_file(inst, "alice/f00").read_bytes()
        assert b"\n" not in raw and b"share:" not in raw
    finally:
        inst.close()


def test_offline_recover_reads_appended_key_files(tmp_path):
    inst, ids = _prepare(tmp_path)
    with context.acting_as(*ids["alice"]):
        inst.shares.create("alice", "big", USER, "bob")
    data, keys = inst.config.data_dir, inst.keys.root
    inst.close()
    out = tmp_path / "out"
    report = offline.recover(data, str(out), keys=keys, user="alice",
                             password=PASS["alice"])
    assert report.failed == [] and report.decrypted >= FILES
    for i in range(FILES):
        assert (out / "alice" / "big" / f"f{i:02d}").read_bytes() == _content(i)


@pytest.mark.parametrize("flush", ["syncfs", "fsync-each"])
def test_batch_is_flushed_before_the_work_is_marked_done(tmp_path, monkeypatch, flush):
    """The pending row goes only after every appended wrap is on disk: a power loss
    before that leaves the work pending, never a share whose wraps vanished."""
    inst, ids = _prepare(tmp_path, fsync=True)
    events: list[str] = []
    if flush == "syncfs":
        if durable._SYNCFS is None:
            pytest.skip("no syncfs in this C library")  # the other case covers the rest
        real = durable._syncfs
        monkeypatch.setattr(durable, "_syncfs", lambda p: (events.append("flush"), real(p)))
    else:
        monkeypatch.setattr(durable, "_SYNCFS", None)
        real_fsync = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (events.append("flush"), real_fsync(fd)))
    monkeypatch.setattr("davserver.vault.userkeys.REWRAP_BATCH", 16)
    real_append = durable.append_many

    def append(items, *, fsync=True):
        events.append(f"append {len(items)}")
        return real_append(items, fsync=fsync)

    monkeypatch.setattr("davserver.vault.keydocs.append_many", append)
    inst.db._conn().set_trace_callback(
        lambda sql: events.append("done") if sql.startswith("DELETE FROM share_key_pending")
        else None)
    try:
        with context.acting_as(*ids["alice"]):
            inst.shares.create("alice", "big", USER, "bob")
        appends = [i for i, e in enumerate(events) if e.startswith("append")]
        assert [events[i] for i in appends] == ["append 16", "append 16", "append 8"]
        done = events.index("done")
        assert appends[-1] < done and "flush" in events[appends[-1]:done]
        if flush == "syncfs":  # one flush per batch, not per file
            assert all(events[a + 1] == "flush" for a in appends)
        assert _reads_all(inst, ids["bob"]) == []
    finally:
        inst.close()


# --- killed in the middle ---------------------------------------------------------------

CHILD = r"""
import os, signal, sys
from pathlib import Path
from davserver.vault import context, keydocs, sharekeys, userkeys
from davserver.vault.shares import ALL, USER
from tests.instances import make_instance

work, point = Path(sys.argv[1]), sys.argv[2]
inst = make_instance(work, user_mode=True, fsync=True)
alice = inst.userkeys.unlock("alice", "alice-password")
userkeys.REWRAP_BATCH = 8
real_append, calls = keydocs.append_many, []

def dying_append(items, *, fsync=True):
    calls.append(1)
    if len(calls) == 3:  # two batches are on disk; this one dies
        if point == "torn-append":
            path, data = items[0]
            with open(path, "ab") as f:
                f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_append(items, fsync=fsync)

keydocs.append_many = dying_append
if point == "before-share-key":
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    sharekeys.ShareKeys.new_version = die
with context.acting_as(alice):
    inst.shares.create("alice", "big", USER, "bob", permissions=ALL)
print("not killed")
"""


@pytest.mark.parametrize("point", ["before-share-key", "between-batches", "torn-append"])
def test_kill_mid_share_leaves_owner_readable_and_share_resumable(tmp_path, point):
    inst, _ids = _prepare(tmp_path)
    inst.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), point], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr[-2000:])

    inst = make_instance(tmp_path, user_mode=True)
    try:
        [share] = inst.shares.list()
        assert (share.id, "files", "") in inst.sharewraps.keys.pending()
        # The owner alone (no pending work done: userkeys, not the login) reads every file.
        alice = inst.userkeys.unlock("alice", PASS["alice"])
        assert _reads_all(inst, [alice]) == []
        bob = inst.userkeys.unlock("bob", PASS["bob"])
        with context.acting_as(bob):
            unread = _reads_all(inst, inst.identities())
        assert f"f{FILES - 1:02d}" in unread  # killed before the end
        if point == "torn-append":
            assert any(b"\n" in p.read_bytes() and p.read_bytes().count(b"\n") % 2
                       for p in Path(inst.keys.root, "files").rglob("*.json"))
        # The owner's next login finishes the work; bob then reads everything.
        inst.unlock("alice", PASS["alice"])
        assert inst.sharewraps.keys.pending() == []
        with context.acting_as(bob):
            assert _reads_all(inst, inst.identities()) == []
    finally:
        inst.close()
