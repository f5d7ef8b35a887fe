"""The key store in the metadata database (``key_storage_root = "db:"``, issue 18) beside
the key storage directory: uploads and downloads over HTTP, moves between the stores
(interrupted and resumed, followed by a running server), sharing in user-key mode,
backup, restore and offline recovery. On SQLite and PostgreSQL metadata."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from davserver.errors import UserError
from davserver.instance import open_instance
from davserver.meta import settings
from davserver.meta.keydocs_db import DbKeyDocs
from davserver.vault import check, context, keyroot
from davserver.vault.keydocs import open_keydocs
from davserver.vault.keystore import KeyStore, parse_key_file
from davserver.vault.shares import USER
from tests import instances
from tests.instances import WEAK_KDF_TOML, make_instance
from tests.live import LiveServer

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL

MAGIC = b"DAVSSE"
WEAK = {"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1}
PASS = {"alice": "alice-password", "bob": "bob-password"}
UPLOADS = {"a.txt": b"alpha\n", "empty": b"", "big.bin": os.urandom(600_000),
           "b.bin": bytes(range(256)) * 50}


# --- helpers ------------------------------------------------------------------------------

def _config(store: str) -> dict:
    enc = dict(WEAK)
    if store == "db":
        enc["key_storage_root"] = "db:"
    return {"encryption": enc}


def _cli(srv: LiveServer, *args: str, env: dict | None = None, ok: bool = True):
    res = srv.run_cli(*args, env=env, check=False, timeout=120)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert (res.returncode == 0) == ok, f"{args}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _jcli(srv: LiveServer, *args: str, env: dict | None = None):
    return json.loads(_cli(srv, *args, "--output", "json", env=env).stdout)


def _disk_key_files(data_dir: str) -> list[Path]:
    root = Path(data_dir) / "keys"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _db_names(srv: LiveServer) -> list[str]:
    inst = open_instance(srv.config, srv.data_dir)
    try:
        return list(DbKeyDocs(inst.db).names())
    finally:
        inst.close()


def _put_all(srv: LiveServer, user: str, files: dict[str, bytes]) -> None:
    s = srv.session(user)
    for rel, data in files.items():
        r = s.put(srv.url(user, rel), data=data, timeout=30)
        assert r.status_code in (201, 204), (rel, r.status_code, r.text)


def _assert_served(srv: LiveServer, user: str, files: dict[str, bytes]) -> None:
    s = srv.session(user)
    for rel, data in files.items():
        r = s.get(srv.url(user, rel), timeout=30)
        assert r.status_code == 200, (rel, r.status_code, srv.log_tail())
        assert r.content == data, rel


def _instance(tmp_path: Path, store: str, *, user_mode: bool):
    """In-process instance whose keys are in ``store`` ("dir" or "db")."""
    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(WEAK_KDF_TOML + ('key_storage_root = "db:"\n' if store == "db" else "")
                    + 'hpke_suite = "x25519"\n'
                    + (f'[database]\nurl = "{instances.DATABASE_URL}"\n'
                       if instances.DATABASE_URL else ""))
    inst = make_instance(tmp_path, user_mode=user_mode)
    for u, p in PASS.items():
        inst.users.add(u, p)
    return inst


def _ids(inst, user: str):
    return inst.unlock(user, PASS[user]) if inst.mode() == "user" else ()


FILES = {f"alice/f{i}.bin": os.urandom(100 + 997 * i) for i in range(6)}


def _write(inst) -> None:
    with context.acting_as(*_ids(inst, "alice")):
        for rel, data in FILES.items():
            inst.vault.write_bytes(rel, data)


def _read_back(inst) -> None:
    with context.acting_as(*_ids(inst, "alice")):
        for rel, data in FILES.items():
            assert inst.vault.read_all(rel) == data, rel


# --- over HTTP ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["master", "user"])
@pytest.mark.parametrize("store", ["dir", "db"])
def test_upload_download_with_keys_in_either_store(server_factory, store, mode):
    srv = server_factory(users={"alice": None}, config=_config(store))
    if mode == "user":
        _cli(srv, "encryption:disable-master-key", "--yes")
        srv.restart()
    _put_all(srv, "alice", UPLOADS)
    _assert_served(srv, "alice", UPLOADS)
    assert (Path(srv.data_dir) / "files" / "alice" / "a.txt").read_bytes()[:6] == MAGIC
    status = _jcli(srv, "encryption:status")
    file_keys = [n for n in _db_names(srv) if n.startswith("files/")]
    if store == "db":
        assert status["keyStorage"] == "database" and status["keyStorageRoot"] == "db:"
        assert _disk_key_files(srv.data_dir) == []  # not one key file on disk
        assert not (Path(srv.data_dir) / "keys" / "files").exists()
        assert len(file_keys) == len(UPLOADS)
        if mode == "user":
            assert "users/alice.json" in _db_names(srv)
    else:
        assert status["keyStorage"] == os.path.join(srv.data_dir, "keys")
        assert file_keys == []
        assert len(srv.key_files()) == len(UPLOADS)
    assert _jcli(srv, "encryption:scan")["problems"] == []


def test_cli_moves_keys_into_the_database_and_out_while_serving(server_factory, tmp_path):
    srv = server_factory(users={"alice": None}, config=_config("dir"))
    _put_all(srv, "alice", UPLOADS)
    old = Path(srv.data_dir) / "keys"
    bad = _cli(srv, "encryption:change-key-storage-root", " ", "--yes", ok=False)
    assert "key storage root is empty" in bad.stderr
    assert _jcli(srv, "encryption:status")["jobsInProgress"] == []
    rep = _jcli(srv, "encryption:change-key-storage-root", "database", "--yes")  # = db:
    assert rep["target"] == "db:" and rep["key_files"] == len(UPLOADS) + 1  # + master
    assert not old.exists()
    _assert_served(srv, "alice", UPLOADS)  # the running server followed the switch
    more = {"after-move.txt": b"written with keys in the database"}
    _put_all(srv, "alice", more)
    assert _disk_key_files(srv.data_dir) == []
    assert _jcli(srv, "encryption:status")["keyStorage"] == "database"
    # ... and back out to a directory.
    new = tmp_path / "keys-again"
    rep = _jcli(srv, "encryption:change-key-storage-root", str(new), "--yes")
    assert rep["key_files"] == len(UPLOADS) + 2
    assert _db_names(srv) == []
    assert len(list((new / "files").rglob("*.json"))) == len(UPLOADS) + 1
    _assert_served(srv, "alice", {**UPLOADS, **more})
    assert _jcli(srv, "encryption:scan")["problems"] == []


# --- moves, in process --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["master", "user"])
def test_move_dir_to_db_to_dir_keeps_every_file(tmp_path, mode):
    inst = _instance(tmp_path, "dir", user_mode=mode == "user")
    try:
        _write(inst)
        old = inst.key_root
        before = {n: inst.keys.docs.get(n) for n in inst.keys.docs.names()}
        rep = keyroot.change_key_storage_root(inst.db, old, "db:", fsync=False,
                                              settle_seconds=0)
        assert rep["key_files"] == len(before) and not os.path.exists(old)
        inst.refresh()
        assert inst.keys.root == "db:"
        db_docs = DbKeyDocs(inst.db)
        assert {n: db_docs.get(n) for n in db_docs.names()} == before  # same bytes
        _read_back(inst)
        back = str(tmp_path / "keys2")
        keyroot.change_key_storage_root(inst.db, "db:", back, fsync=False, settle_seconds=0)
        inst.refresh()
        assert inst.keys.root == back and db_docs.is_empty()
        assert {n: inst.keys.docs.get(n) for n in inst.keys.docs.names()} == before
        _read_back(inst)
        with context.acting_as(*_ids(inst, "alice")):
            assert check.scan(inst.vault).problems == []
    finally:
        inst.close()


class Boom(Exception):
    pass


@pytest.mark.parametrize("direction", ["dir->db", "db->dir"])
def test_interrupted_move_resumes_and_refuses_another_target(tmp_path, direction,
                                                             monkeypatch):
    monkeypatch.setattr(keyroot, "COPY_BATCH", 2)  # interrupted between two batches
    start = "dir" if direction == "dir->db" else "db"
    inst = _instance(tmp_path, start, user_mode=False)
    try:
        _write(inst)
        source = inst.key_root
        target = "db:" if start == "dir" else str(tmp_path / "moved-keys")
        total = sum(1 for _ in inst.keys.docs.names())
        copied = []

        def dying(n: int, size: int) -> None:
            copied.append(n)
            if len(copied) == 3:
                raise Boom()

        with pytest.raises(Boom):
            keyroot.change_key_storage_root(inst.db, source, target, fsync=False,
                                            settle_seconds=0, progress=dying)
        partial = open_keydocs(target, inst.db, fsync=False)
        assert 0 < sum(1 for _ in partial.names()) < total  # cut off mid-copy
        # Nothing switched: the old store is still the one named, and complete.
        assert inst.db.get_setting(settings.JOB_KEY_ROOT)
        assert inst.key_root == source
        _read_back(inst)
        with pytest.raises(UserError, match="unfinished move"):
            keyroot.change_key_storage_root(inst.db, source, str(tmp_path / "elsewhere"),
                                            fsync=False, settle_seconds=0)
        rep = keyroot.change_key_storage_root(inst.db, source, target, fsync=False,
                                              settle_seconds=0)
        assert rep["key_files"] == total
        assert inst.db.get_setting(settings.JOB_KEY_ROOT) is None
        inst.refresh()
        assert inst.keys.root == target
        if start == "dir":
            assert not os.path.exists(source)
        else:
            assert DbKeyDocs(inst.db).is_empty()
        _read_back(inst)
    finally:
        inst.close()


KILLER = r"""
import os, signal, sys
from davserver.meta.keydocs_db import DbKeyDocs
from davserver.vault.keydocs import DirKeyDocs
owner, name, when = {"mid-copy": (DbKeyDocs, "write_many", "after"),
                     "switched": (DirKeyDocs, "remove_all", "before"),
                     "removed": (DirKeyDocs, "remove_all", "after")}[sys.argv[1]]
orig = getattr(owner, name)

def hooked(*a, **k):
    if when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    orig(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)

setattr(owner, name, hooked)
from davserver.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("point", ["mid-copy", "switched", "removed"])
def test_move_into_the_database_killed_and_resumed(tmp_path, point):
    """SIGKILL of the CLI at each step of a move into the database: the store the DB
    names is complete at that instant, and the same command finishes the move."""
    inst = _instance(tmp_path, "dir", user_mode=False)
    many = {f"alice/many/k{i:03d}": i.to_bytes(2, "big") for i in range(300)}
    try:
        inst.vault.make_dir("alice/many")
        for rel, data in many.items():
            inst.vault.write_bytes(rel, data)
        _write(inst)
        old, total = inst.key_root, sum(1 for _ in inst.keys.docs.names())
        assert total > keyroot.COPY_BATCH  # so that the copy takes two batches
        db_docs = DbKeyDocs(inst.db)
        args = ["encryption:change-key-storage-root", "db:", "--yes", "--config",
                inst.config.path, "--data-dir", inst.config.data_dir]
        res = subprocess.run([sys.executable, "-c", KILLER, point, *args],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == -signal.SIGKILL, res.stderr
        copied = db_docs.count()
        assert copied == (keyroot.COPY_BATCH if point == "mid-copy" else total)
        inst.refresh()
        assert inst.key_root == (old if point == "mid-copy" else "db:")
        assert os.path.exists(old) is (point != "removed")
        assert sum(1 for _ in inst.keys.docs.names()) == total  # the named one is whole
        _read_back(inst)
        assert inst.db.get_setting(settings.JOB_KEY_ROOT)  # unfinished: said so
        res = subprocess.run([sys.executable, "-m", "davserver", *args], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        inst.refresh()
        assert inst.key_root == "db:" and db_docs.count() == total
        assert not os.path.exists(old) and inst.db.get_setting(settings.JOB_KEY_ROOT) is None
        _read_back(inst)
        assert inst.vault.read_all("alice/many/k299") == many["alice/many/k299"]
    finally:
        inst.close()


def test_move_into_a_database_that_holds_keys_is_refused(tmp_path):
    inst = _instance(tmp_path, "dir", user_mode=False)
    try:
        DbKeyDocs(inst.db, fsync=False).write("files/00/stray.json", b"{}")
        with pytest.raises(UserError, match="already holds key documents"):
            keyroot.change_key_storage_root(inst.db, inst.key_root, "db:", fsync=False,
                                            settle_seconds=0)
        assert inst.db.get_setting(settings.JOB_KEY_ROOT) is None
    finally:
        inst.close()


# --- sharing, user-key mode ---------------------------------------------------------------

def test_sharing_in_user_key_mode_with_keys_in_the_database(tmp_path):
    inst = _instance(tmp_path, "db", user_mode=True)
    try:
        ids = {u: inst.unlock(u, p) for u, p in PASS.items()}
        with context.acting_as(*ids["alice"]):
            inst.vault.make_dir("alice/proj")
            for i in range(20):
                inst.vault.write_bytes(f"alice/proj/f{i}", b"secret %d" % i)
            inst.shares.create("alice", "proj", USER, "bob")
        fid = inst.db.get_file("alice/proj/f0").file_id
        raw = inst.keys.docs.get(KeyStore.name_of(fid))
        recipients = [w.recipient for w in parse_key_file(raw, fid)]
        assert any(r.startswith("share:") for r in recipients)  # the share's wrap ...
        assert raw.rstrip().count(b"\n") >= 1  # ... appended as a line to the document
        assert any(n.startswith("shares/") for n in inst.keys.docs.names())
        assert not os.path.exists(os.path.join(inst.config.data_dir, "keys", "shares"))
        bob = inst.unlock("bob", PASS["bob"])
        with context.acting_as(*bob):
            for i in range(20):
                assert inst.vault.read_all(f"alice/proj/f{i}") == b"secret %d" % i
    finally:
        inst.close()


# --- backup, restore, offline recovery ----------------------------------------------------

def _recovered(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out / "alice")): p.read_bytes()
            for p in (out / "alice").rglob("*") if p.is_file()}


def test_backup_restore_and_recover_with_keys_in_the_database(server_factory, tmp_path,
                                                              metadata_url):
    srv = server_factory(users={"alice": None}, config=_config("db"))
    _put_all(srv, "alice", UPLOADS)
    srv.stop()
    bak = tmp_path / "keys-in-db.bak"
    rep = _jcli(srv, "backup:create", str(bak))
    assert rep["key_store"] == "database" and rep["key_files"] == len(UPLOADS) + 1
    assert rep["database"] is (not metadata_url)  # PostgreSQL: pg_dump backs it up

    # Offline recovery from the archive (the keys travel in it as keys/<name>).
    out = tmp_path / "out-backup"
    res = _jcli(srv, "recover", "--data", srv.data_dir, "--backup", str(bak), "--out",
                str(out))
    assert res["failed"] == [] and _recovered(out) == UPLOADS
    # ... and straight from the database, read-only.
    db = metadata_url or os.path.join(srv.data_dir, "davserver.db")
    out = tmp_path / "out-db"
    res = _jcli(srv, "recover", "--data", srv.data_dir, "--keys", "db:", "--database-url",
                db, "--secret-file", str(srv.etc / "secret"), "--out", str(out))
    assert res["failed"] == [] and _recovered(out) == UPLOADS
    # --keys db: alone reads the database the config names ...
    out = tmp_path / "out-config"
    res = _jcli(srv, "recover", "--data", srv.data_dir, "--keys", "db:", "--secret-file",
                str(srv.etc / "secret"), "--out", str(out))
    assert res["failed"] == [] and _recovered(out) == UPLOADS
    # ... and without a config says what to give.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVSERVER_")}
    bad = subprocess.run([sys.executable, "-m", "davserver", "recover", "--data", srv.data_dir,
                          "--keys", "db:", "--secret-file", str(srv.etc / "secret"), "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, env=env,
                         timeout=60, cwd=tmp_path)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--database-url" in bad.stderr
    if metadata_url:
        return  # backup:restore of PostgreSQL metadata is pg_restore's job

    # Restored into a fresh instance: the keys go back into the database they came from.
    dst = LiveServer(tmp_path / "dst", {})
    dst.etc.mkdir(parents=True)
    Path(dst.config).write_text("[storage]\nfsync = false\n")
    shutil.copytree(Path(srv.data_dir) / "files", Path(dst.data_dir) / "files")
    dst.users = dict(srv.users)
    rep = _jcli(dst, "backup:restore", str(bak))
    assert rep["key_store"] == "database" and rep["key_files"] == len(UPLOADS) + 1
    assert _disk_key_files(dst.data_dir) == []
    try:
        dst.start()
        _assert_served(dst, "alice", UPLOADS)
    finally:
        dst.stop()
    assert _jcli(dst, "encryption:scan")["problems"] == []

    # A config naming a directory gets the keys there instead, none left in the database.
    dir_dst = LiveServer(tmp_path / "dir-dst", {})
    dir_dst.etc.mkdir(parents=True)
    keys = tmp_path / "dir-dst-keys"
    Path(dir_dst.config).write_text(f'[storage]\nfsync = false\n[encryption]\n'
                                    f'key_storage_root = "{keys}"\n')
    shutil.copytree(Path(srv.data_dir) / "files", Path(dir_dst.data_dir) / "files")
    dir_dst.users = dict(srv.users)
    rep = _jcli(dir_dst, "backup:restore", str(bak))
    assert rep["key_store"] == "directory"
    assert len(list((keys / "files").rglob("*.json"))) == len(UPLOADS)
    assert _db_names(dir_dst) == []
    try:
        dir_dst.start()
        _assert_served(dir_dst, "alice", UPLOADS)
    finally:
        dir_dst.stop()


def test_user_key_recover_from_the_database(server_factory, tmp_path, metadata_url):
    srv = server_factory(users={"alice": None}, config=_config("db"))
    _cli(srv, "encryption:disable-master-key", "--yes")
    srv.restart()
    _put_all(srv, "alice", UPLOADS)
    db = metadata_url or os.path.join(srv.data_dir, "davserver.db")
    out = tmp_path / "out"
    res = _jcli(srv, "recover", "--data", srv.data_dir, "--database-url", db, "--user",
                "alice", "--password-from-env", "--out", str(out),
                env={"DAVSERVER_PASS": srv.users["alice"]})
    assert res["failed"] == [] and _recovered(out) == UPLOADS
    wrong = _cli(srv, "recover", "--data", srv.data_dir, "--database-url", db, "--user",
                 "alice", "--password-from-env", "--out", str(tmp_path / "o2"),
                 env={"DAVSERVER_PASS": "not-her-password"}, ok=False)
    assert "password" in wrong.stderr.lower()
    r = requests.get(srv.url("alice", "a.txt"), auth=srv.auth("alice"), timeout=30)
    assert r.content == UPLOADS["a.txt"]


# --- two nodes that share no key directory ------------------------------------------------

def test_two_nodes_with_separate_data_dirs_share_keys_through_the_database(
        server_factory, tmp_path, metadata_url):
    """Node B has a data dir of its own (its own run/ and no keys/), only the files are
    shared (as S3 would share them) and the metadata (PostgreSQL, or A's SQLite file named
    in B's config): with the keys in the database it reads what A wrote and A reads what B
    wrote, in user-key mode."""
    a = server_factory(users={"alice": None}, config=_config("db"))
    _cli(a, "encryption:disable-master-key", "--yes")
    a.restart()
    b = copy.copy(a)
    b.proc, b.port = None, 0
    b.data_dir = str(tmp_path / "node-b")
    b.log_path = tmp_path / "node-b.log"
    os.makedirs(b.data_dir, mode=0o700)
    os.symlink(Path(a.data_dir) / "files", Path(b.data_dir) / "files")
    # B's own config dir: the same config and instance secret, and the database by name.
    b.etc = tmp_path / "node-b-etc"
    shutil.copytree(a.etc, b.etc)
    b.config = str(b.etc / "davserver.toml")
    b._config_doc = copy.deepcopy(a._config_doc)
    b.write_config(database={"url": metadata_url or os.path.join(a.data_dir, "davserver.db")})
    b.start()
    try:
        _put_all(a, "alice", {"from-a.bin": UPLOADS["big.bin"]})
        _assert_served(b, "alice", {"from-a.bin": UPLOADS["big.bin"]})
        _put_all(b, "alice", {"from-b.txt": b"written on node b"})
        _assert_served(a, "alice", {"from-b.txt": b"written on node b"})
        for node in (a, b):
            assert _disk_key_files(node.data_dir) == []
        assert {"users/alice.json"} <= set(_db_names(a))
    finally:
        b.stop()


def test_a_new_key_directory_is_private(tmp_path):
    inst = _instance(tmp_path, "db", user_mode=False)
    try:
        _write(inst)
        target = tmp_path / "new" / "keys"
        keyroot.change_key_storage_root(inst.db, "db:", str(target), fsync=False,
                                        settle_seconds=0)
        assert target.stat().st_mode & 0o777 == 0o700
        assert (target / "files").stat().st_mode & 0o777 == 0o700
    finally:
        inst.close()
