"""What reaches the disk, and in which order, before an upload or a key is acknowledged.

A power loss cannot be staged here, so these tests record every flush, rename and synced
SQLite transaction the code makes and check the order that the crash protocol rests on
(davserver/vault/files.py): a file's bytes and name are flushed before anything points at
it, and the pending row that lets recover() accept a replaced version is flushed first.
"""

from __future__ import annotations

import os

import pytest

from davserver import durable
from davserver.storage.local import LocalStorage
from davserver.vault.files import storage_path
from tests.instances import make_instance


class Journal:
    """Records os.fsync (by path), renames and SQLite's switches to synchronous=FULL."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return real_fsync(fd)

        def rename(src, dst, **kw):
            self.events.append(("rename", str(dst)))
            return real_rename(src, dst, **kw)

        def replace(src, dst, **kw):
            self.events.append(("rename", str(dst)))
            return real_replace(src, dst, **kw)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        monkeypatch.setattr(os, "replace", replace)

    def watch_sql(self, db) -> None:
        def trace(sql: str) -> None:
            if sql.startswith("PRAGMA synchronous=FULL"):
                self.events.append(("synced-sql", "on"))
            elif sql.startswith("INSERT INTO pending"):
                self.events.append(("sql", "pending"))
        db._conn().set_trace_callback(trace)

    def index(self, kind: str, where) -> int:
        for i, (k, what) in enumerate(self.events):
            if k == kind and where(what):
                return i
        raise AssertionError(f"no {kind} matching in {self.events}")


@pytest.fixture
def synced(tmp_path):
    inst = make_instance(tmp_path, fsync=True)
    inst.users.add("alice", "alicepass1")
    yield inst
    inst.close()


def _key_path(inst, file_id: bytes) -> str:
    return os.path.realpath(inst.keys._path(file_id))


def test_a_new_file_is_flushed_key_first_without_a_synced_row(synced, monkeypatch):
    j = Journal(monkeypatch)
    j.watch_sql(synced.db)
    rec = synced.vault.write_bytes(storage_path("alice", "new.txt"), b"hello")
    key = _key_path(synced, rec.file_id)
    final = os.path.realpath(os.path.join(synced.config.files_dir, "alice", "new.txt"))
    key_file = j.index("fsync", lambda p: p == key)
    key_dir = j.index("fsync", lambda p: p == os.path.dirname(key))
    data_file = j.index("fsync", lambda p: "put-" in p)
    renamed = j.index("rename", lambda p: os.path.realpath(p) == final)
    data_dir = j.index("fsync", lambda p: p == os.path.dirname(final))
    assert key_file < key_dir < renamed and data_file < renamed < data_dir
    # The key of a fresh file ID is written in place: it is never renamed.
    assert not any(k == "rename" and "keys" in p for k, p in j.events)
    # Its pending row is not flushed on its own: a lost row leaves a file that is adopted.
    assert ("synced-sql", "on") not in j.events
    assert j.index("sql", lambda w: w == "pending") < key_file
    assert synced.vault.read_all(storage_path("alice", "new.txt")) == b"hello"


def test_replacing_an_encrypted_version_syncs_the_pending_row_first(synced, monkeypatch):
    path = storage_path("alice", "a.txt")
    synced.vault.write_bytes(path, b"old")
    j = Journal(monkeypatch)
    j.watch_sql(synced.db)
    rec = synced.vault.write_bytes(path, b"new")
    synced_row = j.index("synced-sql", lambda w: True)
    pending = j.index("sql", lambda w: w == "pending")
    key_file = j.index("fsync", lambda p: p == _key_path(synced, rec.file_id))
    renamed = j.index("rename", lambda p: p.endswith("/alice/a.txt"))
    assert synced_row < pending < key_file < renamed
    assert synced.vault.read_all(path) == b"new"


def test_a_new_file_whose_rows_were_lost_is_adopted(inst):
    """What a power loss may leave of a new file's commit: the key and the renamed file
    on disk, neither the pending row nor the index row. It reads as the new file."""
    path = storage_path("alice", "lost.txt")
    up = inst.vault.begin_write(path)
    up.write(b"made it to the disk")
    up._stream.finish()
    inst.keys.wrap_new(up.file_id, up._data_key, up._recipients)
    up._blob.commit()
    assert inst.db.get_file(path) is None and inst.db.list_pending() == []
    assert inst.vault.read_all(path) == b"made it to the disk"
    assert inst.db.get_file(path).file_id == up.file_id


def test_write_new_flushes_the_file_and_every_folder_it_made(tmp_path, monkeypatch):
    j = Journal(monkeypatch)
    target = tmp_path / "a" / "b" / "k.json"
    durable.write_new(str(target), b"{}", fsync=True)
    assert target.read_bytes() == b"{}"
    flushed = [p for k, p in j.events if k == "fsync"]
    assert flushed == [str(tmp_path), str(tmp_path / "a"), str(target), str(tmp_path / "a" / "b")]
    assert not [e for e in j.events if e[0] == "rename"]
    with pytest.raises(FileExistsError):
        durable.write_new(str(target), b"other", fsync=True)
    assert target.read_bytes() == b"{}"


def test_write_new_leaves_nothing_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "k.json"

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        durable.write_new(str(target), b"{}", fsync=False)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_replaces_through_a_flushed_temp(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    target.write_bytes(b"old")
    j = Journal(monkeypatch)
    durable.write_atomic(str(target), b"new", fsync=True)
    assert target.read_bytes() == b"new"
    kinds = [k for k, _ in j.events]
    assert kinds == ["fsync", "rename", "fsync"]
    assert j.events[1] == ("rename", str(target)) and j.events[2] == ("fsync", str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


@pytest.mark.parametrize("fsync", [True, False])
def test_a_new_folder_is_flushed_into_its_parent(tmp_path, monkeypatch, fsync):
    root = tmp_path / "files"
    root.mkdir()
    st = LocalStorage(root, tmp_path / "tmp", fsync=fsync)
    j = Journal(monkeypatch)
    st.make_dir("alice")
    assert (root / "alice").is_dir()
    assert j.events == ([("fsync", str(root))] if fsync else [])


def test_orphaned_keys_never_include_what_the_index_or_a_commit_holds(inst, tmp_path):
    from davserver.vault import check

    path = storage_path("alice", "kept.txt")
    inst.vault.write_bytes(path, b"x")
    # The storage stops showing the file (an unmounted disk, a delete by hand): its key is
    # still the index's, and deleting it would make the file unreadable if it comes back.
    stored = os.path.join(inst.config.files_dir, "alice", "kept.txt")
    os.rename(stored, tmp_path / "away")
    assert check.orphan_keys(inst.vault) == []
    # A commit in flight: announced and keyed, not renamed in yet.
    up = inst.vault.begin_write(storage_path("alice", "b.txt"))
    up.write(b"y")
    up._stream.finish()
    inst.db.add_pending(up.file_id, storage_path("alice", "b.txt"))
    inst.keys.wrap_new(up.file_id, up._data_key, up._recipients)
    assert check.orphan_keys(inst.vault) == []
    # Once nothing holds it, it is an orphan.
    inst.db.remove_pending(up.file_id)
    assert check.orphan_keys(inst.vault) == [up.file_id.hex()]
    up.abort()
