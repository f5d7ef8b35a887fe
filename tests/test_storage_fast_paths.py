"""Local storage shortcuts: listings that skip unused stat calls, early writeback."""

from __future__ import annotations

import os

import pytest

from davserver.storage import local
from tests.instances import make_instance


@pytest.fixture
def inst(tmp_path):
    i = make_instance(tmp_path)
    i.users.add("alice", "alicepass1")
    yield i
    i.close()


def test_list_dir_known_differs_from_list_dir_only_for_known_files(inst):
    st = inst.vault.storage
    inst.vault.make_dir("alice/d")
    inst.vault.make_dir("alice/d/sub")
    for n in ("a", "b", "c"):
        inst.vault.write_bytes(f"alice/d/{n}", n.encode() * 10)
    full = {e.name: e for e in st.list_dir("alice/d")}
    light = {e.name: e for e in st.list_dir_known("alice/d", {"a", "sub", "gone"})}
    assert set(full) == set(light) == {"a", "b", "c", "sub"}
    assert (light["a"].size, light["a"].mtime, light["a"].is_dir) == (0, 0.0, False)
    assert light["sub"] == full["sub"]  # folders are always stat'ed (their mtime is used)
    assert light["b"] == full["b"] and light["c"] == full["c"]


def test_folder_listing_unchanged_by_the_shortcut(inst, monkeypatch):
    inst.vault.make_dir("alice/d")
    for n in ("x.txt", "y.bin"):
        inst.vault.write_bytes(f"alice/d/{n}", os.urandom(1000))
    with open(os.path.join(inst.config.data_dir, "files", "alice", "d", "hand.txt"), "wb") as f:
        f.write(b"placed by hand")  # not indexed: needs its stat
    fast = sorted(inst.vault.list_dir("alice/d"), key=lambda n: n.name)
    monkeypatch.setattr(type(inst.vault.storage), "list_dir_known",
                        lambda self, key, known: self.list_dir(key))
    assert fast == sorted(inst.vault.list_dir("alice/d"), key=lambda n: n.name)
    assert {n.name: n.size for n in fast}["hand.txt"] == len(b"placed by hand")


@pytest.mark.parametrize("fsync,replace", [(False, False), (False, True), (True, False)])
def test_early_writeback_keeps_the_bytes(tmp_path, monkeypatch, fsync, replace):
    monkeypatch.setattr(local, "EARLY_FLUSH_BYTES", 1 << 16)
    calls = []
    real = local.start_writeback
    monkeypatch.setattr(local, "start_writeback",
                        lambda fd, start, length, wait=False: calls.append(
                            (start, length, wait)) or real(fd, start, length, wait))
    st = local.LocalStorage(tmp_path / "root", tmp_path / "tmp", fsync=fsync)
    st.make_dir("u")
    data = os.urandom(1 << 20)
    if replace:
        w = st.writer("u/f")
        w.write(b"old version")
        w.commit()
    w = st.writer("u/f")
    for i in range(0, len(data), 50_000):
        w.write(data[i:i + 50_000])
    w.commit()
    with st.open_reader("u/f") as r:
        assert r.read_at(0, len(data)) == data
    if not (fsync or replace):
        assert calls == []  # a new unflushed file is left to the kernel's writeback
        return
    assert calls, "no early writeback"
    # the ranges handed to the disk follow each other, and wait for the disk with fsync
    assert [c[0] for c in calls] == [0] + [a + n for a, n, _w in calls[:-1]]
    assert all(w == fsync for _a, _n, w in calls)
