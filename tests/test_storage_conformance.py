"""One behaviour for every backend: the same tests run against local disk, a moto S3
server and a WsgiDAV server (fixture ``storage`` in tests/conftest_storage.py)."""

from __future__ import annotations

import os

import pytest

from davserver.errors import Conflict, StorageError, StorageNotFound

BIG = 5 * 1024 * 1024 + 12345  # above S3's minimum part: exercises multipart when allowed


def put(storage, key: str, data: bytes, step: int = 1 << 16) -> None:
    w = storage.writer(key)
    for i in range(0, len(data), step):
        w.write(data[i:i + step])
    w.commit()


def read(storage, key: str) -> bytes:
    with storage.open_reader(key) as r:
        return r.read_at(0, r.size)


def names(storage, key: str) -> dict[str, bool]:
    return {e.name: e.is_dir for e in storage.list_dir(key)}


def test_write_stat_read(storage):
    storage.make_dir("u")
    data = os.urandom(300_000)
    put(storage, "u/f.bin", data)
    e = storage.stat("u/f.bin")
    assert (e.name, e.is_dir, e.size) == ("f.bin", False, len(data))
    assert e.mtime > 0
    assert read(storage, "u/f.bin") == data
    d = storage.stat("u")
    assert d.is_dir and d.name == "u"
    assert storage.stat("u/none") is None
    assert storage.stat("").is_dir


def test_empty_blob_and_empty_folder(storage):
    storage.make_dir("e")
    assert storage.list_dir("e") == []
    put(storage, "e/zero", b"")
    assert storage.stat("e/zero").size == 0
    assert read(storage, "e/zero") == b""
    assert names(storage, "") == {"e": True}


def test_read_at_ranges(storage):
    storage.make_dir("r")
    data = os.urandom(200_000)
    put(storage, "r/f", data)
    with storage.open_reader("r/f") as r:
        assert r.size == len(data)
        assert r.read_at(0, 64) == data[:64]
        assert r.read_at(150_000, 10) == data[150_000:150_010]
        assert r.read_at(10, 100_000) == data[10:100_010]  # sequential after a jump
        assert r.read_at(100_010, 100_000) == data[100_010:200_010]
        assert r.read_at(199_990, 100) == data[199_990:]  # clipped at the end
        assert r.read_at(len(data), 10) == b""
        assert r.read_at(5, 0) == b""


def test_large_blob_in_parts(storage):
    storage.make_dir("big")
    data = os.urandom(BIG)
    put(storage, "big/f", data, step=1 << 20)
    assert storage.stat("big/f").size == BIG
    with storage.open_reader("big/f") as r:
        got = b"".join(r.read_at(o, 1 << 20) for o in range(0, BIG, 1 << 20))
    assert got == data


def test_writer_invisible_until_commit(storage):
    storage.make_dir("w")
    put(storage, "w/f", b"old")
    w = storage.writer("w/f")
    w.write(b"new content" * 1000)
    assert read(storage, "w/f") == b"old"
    w2 = storage.writer("w/g")
    w2.write(b"x" * 1000)
    assert storage.stat("w/g") is None
    assert names(storage, "w") == {"f": False}
    w.commit()
    w2.abort()
    assert read(storage, "w/f") == b"new content" * 1000
    assert storage.stat("w/g") is None
    assert names(storage, "") == {"w": True}


def test_abort_leaves_old_version(storage):
    storage.make_dir("a")
    put(storage, "a/f", b"keep me")
    w = storage.writer("a/f")
    w.write(os.urandom(BIG))
    w.abort()
    assert read(storage, "a/f") == b"keep me"
    assert storage.cleanup() == 0  # nothing left behind by a clean abort


def test_commit_into_missing_folder_is_conflict(storage):
    w = storage.writer("nowhere/f")
    w.write(b"data")
    with pytest.raises(Conflict):
        w.commit()
    assert storage.stat("nowhere/f") is None
    assert storage.stat("nowhere") is None


def test_make_and_remove_dir(storage):
    storage.make_dir("d")
    with pytest.raises(Conflict):
        storage.make_dir("d")
    with pytest.raises(Conflict):
        storage.make_dir("missing/child")
    storage.make_dir("d/sub")
    put(storage, "d/sub/f", b"1")
    with pytest.raises(Conflict):
        storage.remove_dir("d/sub")
    storage.delete("d/sub/f")
    storage.remove_dir("d/sub")
    assert storage.stat("d/sub") is None
    assert storage.list_dir("d") == []
    storage.remove_dir("d")
    assert storage.stat("d") is None
    with pytest.raises(StorageNotFound):
        storage.remove_dir("d")


def test_rename_file(storage):
    storage.make_dir("m")
    data = os.urandom(70_000)
    put(storage, "m/a", data)
    put(storage, "m/b", b"other")
    with pytest.raises(Conflict):
        storage.rename("m/a", "m/b")
    storage.rename("m/a", "m/c")
    assert storage.stat("m/a") is None
    assert read(storage, "m/c") == data
    with pytest.raises(StorageNotFound):
        storage.rename("m/a", "m/d")


def test_rename_folder(storage):
    storage.make_dir("src")
    storage.make_dir("src/inner")
    storage.make_dir("src/inner/empty")
    put(storage, "src/one", b"1")
    put(storage, "src/inner/two", b"22")
    storage.make_dir("dst")
    storage.rename("src", "dst/moved")
    assert storage.stat("src") is None
    assert names(storage, "dst/moved") == {"one": False, "inner": True}
    assert names(storage, "dst/moved/inner") == {"two": False, "empty": True}
    assert read(storage, "dst/moved/inner/two") == b"22"
    storage.make_dir("taken")
    with pytest.raises(Conflict):
        storage.rename("dst/moved", "taken")


def test_delete(storage):
    storage.make_dir("x")
    put(storage, "x/f", b"bye")
    storage.delete("x/f")
    assert storage.stat("x/f") is None
    with pytest.raises(StorageNotFound):
        storage.delete("x/f")


def test_walk_parents_first(storage):
    storage.make_dir("t")
    storage.make_dir("t/a")
    storage.make_dir("t/a/b")
    put(storage, "t/a/b/f", b"f")
    put(storage, "t/g", b"g")
    seen = [k for k, _e in storage.walk("t")]
    assert sorted(seen) == ["t/a", "t/a/b", "t/a/b/f", "t/g"]
    assert seen.index("t/a") < seen.index("t/a/b") < seen.index("t/a/b/f")


def test_missing_keys(storage):
    with pytest.raises(StorageNotFound):
        storage.open_reader("nope")
    with pytest.raises(StorageNotFound):
        storage.list_dir("nope")
    storage.make_dir("f")
    put(storage, "f/file", b"x")
    with pytest.raises(StorageNotFound):
        storage.list_dir("f/file")  # a file is not a folder
    with pytest.raises(StorageNotFound):
        storage.open_reader("f")  # a folder is not a blob


@pytest.mark.parametrize("bad", ["../etc", "a/../b", "a/./b", "a\x00b"])
def test_invalid_keys_refused(storage, bad):
    with pytest.raises(StorageError):
        storage.stat(bad)
    with pytest.raises(StorageError):
        storage.writer(bad)


def test_cleanup_removes_interrupted_writes(storage):
    storage.make_dir("c")
    w = storage.writer("c/f")
    w.write(os.urandom(BIG))  # a part on its way (S3), bytes in a temp file (local, dav)
    w.write(os.urandom(BIG))
    _interrupt(w)
    assert storage.cleanup() >= 1
    assert storage.stat("c/f") is None
    assert storage.list_dir("c") == []
    assert storage.cleanup() == 0


def _interrupt(w) -> None:
    """Leave a writer as a killed process would: nothing aborted or committed. Remote
    writers are brought to the point where the store holds the unfinished upload."""
    if hasattr(w, "_inflight"):
        w._wait()  # S3: the multipart upload exists with parts in it
    thread = getattr(w, "_thread", None)
    if thread is not None:  # WebDAV: end the body so the temp file exists remotely
        from davserver.storage.webdav import _END

        w._q.put(_END)
        thread.join(10)
    f = getattr(w, "_f", None)
    if f is not None:
        f.close()
