"""Vault service rules that every entry point relies on."""

from __future__ import annotations

import pytest

from davserver.errors import QuotaExceeded

pytestmark = pytest.mark.pg  # on SQLite and on PostgreSQL metadata


def test_folder_etags_change_when_anything_below_changes(inst):
    v = inst.vault
    for d in ("alice/a", "alice/a/b", "alice/other"):
        v.make_dir(d)
    v.write_bytes("alice/a/b/c.txt", b"1")
    before = {p: v.stat(p).etag for p in ("alice", "alice/a", "alice/a/b", "alice/other")}
    v.write_bytes("alice/a/b/c.txt", b"2")
    after = {p: v.stat(p).etag for p in before}
    assert after["alice/a"] != before["alice/a"]
    assert after["alice/a/b"] != before["alice/a/b"]
    assert after["alice"] != before["alice"]
    assert after["alice/other"] == before["alice/other"]
    listed = {n.name: n.etag for n in v.list_dir("alice")}
    assert listed["a"] == after["alice/a"]


def test_move_keeps_file_id_and_key(inst):
    v = inst.vault
    v.make_dir("alice/x")
    v.write_bytes("alice/x/f.txt", b"data")
    fid = inst.db.get_file("alice/x/f.txt").file_id
    v.move("alice/x", "alice/y")
    assert inst.db.get_file("alice/y/f.txt").file_id == fid
    assert inst.db.get_file("alice/x/f.txt") is None
    assert v.read_all("alice/y/f.txt") == b"data"


def test_copy_reencrypts_under_a_fresh_key(inst):
    v = inst.vault
    v.write_bytes("alice/f.txt", b"data")
    v.copy_file("alice/f.txt", "alice/g.txt")
    a, b = inst.db.get_file("alice/f.txt"), inst.db.get_file("alice/g.txt")
    assert a.file_id != b.file_id and inst.keys.exists(b.file_id)
    assert v.read_all("alice/g.txt") == b"data"


def test_delete_removes_keys_of_everything_below(inst):
    v = inst.vault
    v.make_dir("alice/d")
    v.write_bytes("alice/d/1", b"1")
    v.write_bytes("alice/d/2", b"2")
    ids = [inst.db.get_file(f"alice/d/{n}").file_id for n in "12"]
    v.delete("alice/d")
    assert not any(inst.keys.exists(i) for i in ids)
    assert list(inst.db.iter_files("alice/d")) == []


def test_quota_counts_plaintext_and_refuses_without_touching_the_old_version(inst):
    v = inst.vault
    v.write_bytes("alice/f", b"x" * 1000, quota=2000)
    assert v.usage("alice") == 1000
    v.write_bytes("alice/f", b"y" * 1900, quota=2000)  # replacing: old size is not counted
    with pytest.raises(QuotaExceeded):
        v.write_bytes("alice/g", b"z" * 200, quota=2000)
    up = v.begin_write("alice/f", quota=2000)
    with pytest.raises(QuotaExceeded):
        up.write(b"w" * 2001)  # streamed without a length: refused when it overflows
    assert v.read_all("alice/f") == b"y" * 1900
    assert v.usage("alice") == 1900


def test_usage_counter_follows_every_index_change(inst):
    v = inst.vault
    v.make_dir("alice/d")
    v.write_bytes("alice/d/a", b"x" * 100)
    v.write_bytes("alice/d/b", b"x" * 50)
    v.write_bytes("alice/d/a", b"x" * 10)  # replace
    v.move("alice/d", "alice/e")
    v.copy_file("alice/e/b", "alice/c")
    v.delete("alice/e/a")

    def summed():
        return inst.db.query("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = 'alice'")[0][0]

    assert v.usage("alice") == summed() == 100
    v.delete("alice/e")
    assert v.usage("alice") == summed() == 50


def test_new_and_overwritten_plaintext_files_commit_with_encryption_off(inst):
    """Regression: the commit branch without an encryption marker left ``plain`` unset
    (UnboundLocalError -> 500 for every upload with encryption disabled)."""
    inst.db.set_setting("encryption.enabled", "0")
    inst.refresh()
    assert not inst.encryption_enabled()
    rec = inst.vault.write_bytes("alice/new.txt", b"plain one")
    assert rec.file_id is None
    rec2 = inst.vault.write_bytes("alice/new.txt", b"plain two")
    assert rec2.file_id is None and rec2.generation == rec.generation + 1
    assert inst.vault.read_all("alice/new.txt") == b"plain two"
    with open(f"{inst.config.files_dir}/alice/new.txt", "rb") as f:
        assert f.read() == b"plain two"  # stored as it is: encryption is off
