"""A read that overlaps an overwrite of the same file gets one whole version, never a 500.

Found by bench/soak.py: with many clients writing and reading the same names, a reader
could see the new header but the old index row (the commit's index update had not landed
yet), or the old header whose key the commit had just deleted. Both were refused as if the
file were damaged ("swapped or rolled back", "no key"). The interleavings are forced here
deterministically, by committing the other version at the exact point inside the read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from davserver.errors import VersionMismatch


def test_index_read_before_the_commit_landed_is_read_again(inst, monkeypatch):
    v = inst.vault
    v.write_bytes("alice/r.txt", b"old version")
    stale = inst.db.get_file("alice/r.txt")
    v.write_bytes("alice/r.txt", b"new version")
    real = inst.db.get_file
    calls = []

    def first_call_stale(path):
        calls.append(path)
        return stale if len(calls) == 1 else real(path)

    monkeypatch.setattr(inst.db, "get_file", first_call_stale)
    assert v.read_all("alice/r.txt") == b"new version"
    assert len(calls) >= 2


def test_key_deleted_by_an_overwrite_during_the_open_reads_the_new_version(inst, monkeypatch):
    v = inst.vault
    v.write_bytes("alice/k.txt", b"old version")
    real_unwrap = inst.keys.unwrap
    raced = []

    def overwrite_first(file_id, identities):
        if not raced:
            raced.append(file_id)
            v.write_bytes("alice/k.txt", b"new version")  # deletes the old key
        return real_unwrap(file_id, identities)

    monkeypatch.setattr(inst.keys, "unwrap", overwrite_first)
    f = v.open_read("alice/k.txt")
    try:
        data = f.read()
    finally:
        f.close()
    assert raced and data == b"new version"


def test_a_real_swap_is_still_refused(inst):
    """The retry is only for a moved-on index: a stored file whose ID the index does not
    name (and no commit pending) is refused as before."""
    v = inst.vault
    v.write_bytes("alice/a.txt", b"A")
    v.write_bytes("alice/b.txt", b"B")
    root = Path(inst.storage.root)
    a, b = root / "alice" / "a.txt", root / "alice" / "b.txt"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(VersionMismatch):
        v.read_all("alice/a.txt")


def test_reader_finishing_a_commit_that_a_newer_one_replaced_changes_nothing(inst):
    """The reader saw version X's pending row; X was finished and Z committed before the
    reader got to finish X. Finishing X then must not index X over Z's blob (nor delete
    Z's key): that lost the file under the soak."""
    from davserver.vault.files import _Superseded

    v = inst.vault
    v.write_bytes("alice/f.txt", b"version Y")
    x = v.write_bytes("alice/f.txt", b"version X").file_id
    z = v.write_bytes("alice/f.txt", b"version Z").file_id
    with pytest.raises(_Superseded):
        v._finish_commit("alice/f.txt", x)
    inst.db.add_pending(x, "alice/f.txt")  # even with X's row still there (a crash)
    with pytest.raises(_Superseded):
        v._finish_commit("alice/f.txt", x)
    inst.db.remove_pending(x)
    assert inst.db.get_file("alice/f.txt").file_id == z and inst.keys.exists(z)
    assert v.read_all("alice/f.txt") == b"version Z"


def test_path_lock_waits_through_a_false_deadlock_report(tmp_path, monkeypatch):
    """POSIX record locks detect deadlocks per process, not per thread, and report
    EDEADLK where none exists; the commit lock asks again instead of failing (a 500)."""
    import errno
    import fcntl

    from davserver.meta import interprocess

    real = fcntl.lockf
    refusals = []

    def edeadlk_twice(fd, cmd, *args):
        if cmd == fcntl.LOCK_EX and len(refusals) < 2:
            refusals.append(cmd)
            raise OSError(errno.EDEADLK, "Resource deadlock avoided")
        return real(fd, cmd, *args)

    monkeypatch.setattr(interprocess.fcntl, "lockf", edeadlk_twice)
    locks = interprocess.PathLocks(str(tmp_path / "commit.lock"))
    entered = []
    with locks.hold("alice/f.txt"):
        entered.append(True)
    assert entered and len(refusals) == 2
