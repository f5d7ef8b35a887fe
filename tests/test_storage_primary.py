"""Primary storage on a remote store: the vault (index, keys, commit protocol, tamper
checks) over a moto S3 server and a WsgiDAV server, in-process. What reaches the store is
ciphertext only; keys stay in the local key store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from davserver.errors import VersionMismatch
from davserver.vault.files import storage_path
from tests import instances
from tests.instances import WEAK_KDF_TOML, make_instance
from tests.webdav_server import PASSWORD, USER


def _toml(section: str, values: dict) -> str:
    def v(x):
        if isinstance(x, bool):
            return "true" if x else "false"
        return str(x) if isinstance(x, int | float) else f'"{x}"'
    return f"[{section}]\n" + "".join(f"{k} = {v(x)}\n" for k, x in values.items())


class Remote:
    """Raw access to what the backend stored, bypassing davserver (as an attacker or a
    curious admin of the store would)."""

    def __init__(self, kind: str, request, tmp_path: Path) -> None:
        self.kind = kind
        self.inst = None
        if kind.startswith("s3"):
            self.moto = request.getfixturevalue("moto")
            self.bucket = self.moto.new_bucket()
            self.section = _toml("storage.s3", self.moto.config_section(
                self.bucket, prefix="homes", part_size=5 << 20,
                objects_by="id" if kind == "s3-by-id" else "path"))
        else:
            dav = request.getfixturevalue("remote_dav")
            sub = f"p-{os.urandom(6).hex()}"
            self.dir = dav.root / sub
            self.dir.mkdir()
            self.section = _toml("storage.webdav", {
                "url": f"{dav.url}/{sub}", "user": USER, "password": PASSWORD})

    def object_key(self, key: str) -> str:
        """The bucket key holding the file at storage path ``key``."""
        if self.kind == "s3-by-id":
            (blob,), = self.inst.db.query("SELECT blob FROM object_names WHERE path = ?",
                                          (key,))
            return f"homes/urn:oid:{blob}"
        return f"homes/{key}"

    def get(self, key: str) -> bytes:
        if self.kind.startswith("s3"):
            c = self.moto.client()
            return c.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()
        return (self.dir / key).read_bytes()

    def put(self, key: str, data: bytes) -> None:
        if self.kind.startswith("s3"):
            self.moto.client().put_object(Bucket=self.bucket, Key=self.object_key(key),
                                          Body=data)
        else:
            (self.dir / key).write_bytes(data)

    def keys(self) -> list[str]:
        if self.kind.startswith("s3"):
            r = self.moto.client().list_objects_v2(Bucket=self.bucket)
            return [o["Key"] for o in r.get("Contents", [])]
        return [str(p.relative_to(self.dir)) for p in self.dir.rglob("*")]


def make_remote_inst(kind: str, request, tmp_path):
    remote = Remote(kind, request, tmp_path)
    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True)
    backend = kind.split("-")[0]
    db = f'[database]\nurl = "{instances.DATABASE_URL}"\n' if instances.DATABASE_URL else ""
    conf.write_text(WEAK_KDF_TOML + f'\n[storage]\nbackend = "{backend}"\n'
                    + remote.section + db)
    inst = make_instance(tmp_path)
    remote.inst = inst
    inst.users.add("alice", "alicepass1")
    return inst, remote


@pytest.fixture(params=["s3-by-id", "s3", "webdav"])
def remote_inst(request, tmp_path):
    inst, remote = make_remote_inst(request.param, request, tmp_path)
    yield inst, remote
    inst.close()


def sp(rel: str) -> str:
    return storage_path("alice", rel)


def test_roundtrip_and_only_ciphertext_on_the_store(remote_inst):
    inst, remote = remote_inst
    assert inst.storage.kind == remote.kind
    marker = b"PLAINTEXT-MARKER-" * 4096
    inst.vault.write_bytes(sp("doc.txt"), marker)
    assert inst.vault.read_all(sp("doc.txt")) == marker
    stored = remote.get("alice/doc.txt")
    assert b"PLAINTEXT-MARKER" not in stored
    assert len(stored) > len(marker)  # header and tags: it is the ciphertext
    # Keys live in the local key store, never on the remote store.
    assert not any("key" in k or k.endswith(".json") for k in remote.keys())
    assert os.listdir(os.path.join(inst.key_root, "files"))


def test_swapped_object_is_refused(remote_inst):
    inst, remote = remote_inst
    inst.vault.write_bytes(sp("a"), b"A" * 5000)
    inst.vault.write_bytes(sp("b"), b"B" * 5000)
    remote.put("alice/a", remote.get("alice/b"))
    with pytest.raises(VersionMismatch):
        inst.vault.read_all(sp("a"))


def test_rolled_back_object_is_refused(remote_inst):
    inst, remote = remote_inst
    inst.vault.write_bytes(sp("v"), b"version one")
    old = remote.get("alice/v")
    inst.vault.write_bytes(sp("v"), b"version two")
    remote.put("alice/v", old)
    with pytest.raises(VersionMismatch):
        inst.vault.read_all(sp("v"))


def test_folder_move_keeps_files_index_and_keys(remote_inst):
    inst, _remote = remote_inst
    v = inst.vault
    v.make_dir(sp("proj"))
    v.make_dir(sp("proj/sub"))
    v.make_dir(sp("proj/empty"))
    files = {"proj/a": b"a" * 100, "proj/sub/b": os.urandom(70_000)}
    for rel, data in files.items():
        v.write_bytes(sp(rel), data)
    ids = {rel: v.db.get_file(sp(rel)).file_id for rel in files}
    v.move(sp("proj"), sp("renamed"))
    assert v.stat(sp("proj")) is None
    assert {n.name for n in v.list_dir(sp("renamed"))} == {"a", "sub", "empty"}
    for rel, data in files.items():
        new = rel.replace("proj", "renamed", 1)
        assert v.read_all(sp(new)) == data
        assert v.db.get_file(sp(new)).file_id == ids[rel]  # same key, nothing re-encrypted
        assert v.db.get_file(sp(rel)) is None
    v.delete(sp("renamed"))
    assert v.stat(sp("renamed")) is None
    assert v.usage("alice") == 0


def test_large_upload_streams_in_parts(remote_inst):
    inst, remote = remote_inst
    data = os.urandom(12 << 20)  # more than two 5 MiB parts on S3
    up = inst.vault.begin_write(sp("big.bin"))
    for i in range(0, len(data), 1 << 20):
        up.write(data[i:i + (1 << 20)])
        assert inst.storage.stat(sp("big.bin")) is None  # nothing visible before commit
        assert all("big.bin" not in k for k in remote.keys())
    up.commit()
    f = inst.vault.open_read(sp("big.bin"))
    try:
        f.seek(7_000_000)
        assert f.read(100_000) == data[7_000_000:7_100_000]
    finally:
        f.close()
    assert inst.vault.read_all(sp("big.bin")) == data


@pytest.mark.pg  # object_names on PostgreSQL too (its "blob" column was misnamed once)
def test_by_id_names_stay_home_and_folder_moves_copy_nothing(request, tmp_path):
    inst, remote = make_remote_inst("s3-by-id", request, tmp_path)
    try:
        v = inst.vault
        v.make_dir(sp("Secret project"))
        for i in range(20):
            v.write_bytes(sp(f"Secret project/file-{i}.txt"), b"x" * i)
        before = sorted(remote.keys())
        assert len(before) == 20
        assert all(k.startswith("homes/urn:oid:") for k in before)  # no names on the store
        v.move(sp("Secret project"), sp("Renamed"))
        assert sorted(remote.keys()) == before  # metadata only: no copy, no delete
        assert v.read_all(sp("Renamed/file-7.txt")) == b"x" * 7
        v.write_bytes(sp("Renamed/file-7.txt"), b"new")  # a new version: a new object
        after = sorted(remote.keys())
        assert len(after) == 21  # the old version is kept for downloads in progress
        assert inst.storage.sweep() == 0  # ... until keep_replaced_seconds is up
        inst.storage.keep_replaced_seconds = 0
        assert inst.storage.sweep() == 1
        after = sorted(remote.keys())
        assert len(after) == 20 and after != before
        v.delete(sp("Renamed"))  # with nothing kept, deleted at once
        assert remote.keys() == []
    finally:
        inst.close()


@pytest.mark.pg
@pytest.mark.parametrize("change", ["overwrite", "delete"])
def test_by_id_download_in_progress_outlives_a_new_version(request, tmp_path, change):
    """A GET that began before another request replaced or deleted the file (on any
    node) reads the version it began with to the end: the object is kept, as an open
    file descriptor keeps a file on local disk."""
    inst, remote = make_remote_inst("s3-by-id", request, tmp_path)
    try:
        v = inst.vault
        old, new = os.urandom(3 << 20), os.urandom(1 << 20)
        v.write_bytes(sp("f.bin"), old)
        f = v.open_read(sp("f.bin"))
        try:
            assert f.read(100_000) == old[:100_000]
            if change == "overwrite":
                v.write_bytes(sp("f.bin"), new)
            else:  # also what a MOVE onto it does first
                v.delete(sp("f.bin"))
            assert f.read() == old[100_000:]
        finally:
            f.close()
        assert len(remote.keys()) == (1 if change == "delete" else 2)
        inst.storage.keep_replaced_seconds = 0
        assert inst.storage.sweep() == 1
        assert len(remote.keys()) == (0 if change == "delete" else 1)
        if change != "delete":
            assert v.read_all(sp("f.bin")) == new
        assert inst.vault.recover()["temps"] == 0  # nothing left for the crash cleanup
    finally:
        inst.close()


@pytest.mark.pg
def test_by_id_interrupted_upload_is_cleaned_up(request, tmp_path):
    inst, remote = make_remote_inst("s3-by-id", request, tmp_path)
    try:
        inst.storage.stale_seconds = 0  # every unfinished upload counts as a crash's
        inst.storage.make_dir("alice/d")
        w = inst.storage.writer("alice/d/f")
        w.write(b"half")
        w._inner.commit()  # the object reached the store; the process "died" before naming
        assert len(remote.keys()) == 1 and inst.storage.stat("alice/d/f") is None
        assert inst.vault.recover()["temps"] >= 1
        assert remote.keys() == []
    finally:
        inst.close()


@pytest.mark.parametrize("kind", ["local", "s3-by-id", "s3", "webdav"])
def test_a_version_replaced_between_open_and_first_read_is_not_taken_for_a_rollback(
        request, tmp_path, kind):
    """A GET opens the stored file, then another request commits a new version before
    the GET reads the header (on an object store the name is resolved by one request and
    read by the next). The header then names the previous version, which the index no
    longer does: that is a superseded read, answered with the new version, not a rolled
    back file refused with 500."""
    if kind == "local":
        inst = make_instance(tmp_path)
        inst.users.add("alice", "alicepass1")
    else:
        inst, _remote = make_remote_inst(kind, request, tmp_path)
    try:
        v = inst.vault
        v.write_bytes(sp("f.bin"), b"old" * 1000)
        store = v.storage
        opened = []
        real_open = store.open_reader

        def open_then_overwrite(key):
            reader = real_open(key)
            if not opened:
                opened.append(key)
                v.write_bytes(sp("f.bin"), b"new" * 2000)
            return reader

        store.open_reader = open_then_overwrite
        try:
            assert v.read_all(sp("f.bin")) == b"new" * 2000
        finally:
            del store.open_reader
        assert opened
    finally:
        inst.close()
