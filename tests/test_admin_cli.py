"""Admin commands end to end: every ``encryption:*``, ``maintenance:*`` and ``backup:*``
command run as a subprocess against a real data directory, checked on disk, in the DB
and through a running server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.live import LiveServer, wait_until

MAGIC = b"DAVSSE"
FAST = {"storage": {"fsync": False}}

# A hand-placed tree: empty file, nested folders, unicode names, a multi-chunk file.
TREE_ALICE = {
    "empty.txt": b"",
    "hello.txt": b"hello world\n",
    "docs/report.pdf": bytes(range(256)) * 40,
    "docs/deep/er/still/deeper.bin": os.urandom(3000),
    "Grüße/日本語 ✓.txt": "unicode ✓ content".encode(),
    "big/multi-chunk.bin": os.urandom((1 << 18) * 2 + 12345),
    "space name/a b c.txt": b"spaces\n",
}
TREE_BOB = {"bob.txt": b"bob's file\n", "sub/dir/b2.bin": os.urandom(70000)}


# --- helpers ------------------------------------------------------------------------------


def cli(srv: LiveServer, *args: str, env: dict | None = None, ok: bool | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a davserver command; never a traceback. ``ok`` asserts success or failure."""
    res = srv.run_cli(*args, env=env, check=False, timeout=timeout)
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    if ok is True:
        assert res.returncode == 0, f"{args} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    elif ok is False:
        assert res.returncode != 0, f"{args} unexpectedly succeeded:\n{res.stdout}"
    return res


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """A failed command prints exactly one line on stderr, mentioning ``words``."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{res.stderr}"
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


def jcli(srv: LiveServer, *args: str, env: dict | None = None, code: int = 0):
    res = cli(srv, *args, "--output", "json", env=env)
    assert res.returncode == code, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def new_instance(root: Path, users=None, config=None) -> LiveServer:
    return LiveServer(root, users if users is not None else {"alice": None, "bob": None},
                      config if config is not None else FAST).create()


@pytest.fixture
def instances(tmp_path):
    """Create instances (not started); every one is stopped at teardown."""
    made: list[LiveServer] = []

    def make(name: str = "inst", users=None, config=None) -> LiveServer:
        srv = new_instance(tmp_path / name, users, config)
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.kill()


def home(srv: LiveServer, user: str) -> Path:
    return Path(srv.data_dir) / "files" / user


def place(srv: LiveServer, user: str, tree: dict[str, bytes]) -> None:
    for rel, data in tree.items():
        p = home(srv, user) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def on_disk(srv: LiveServer, user: str, rel: str) -> bytes:
    return (home(srv, user) / rel).read_bytes()


def is_encrypted(srv: LiveServer, user: str, rel: str) -> bool:
    return on_disk(srv, user, rel)[:6] == MAGIC


def url(srv: LiveServer, user: str, rel: str) -> str:
    return srv.url(user, quote(rel))


def get(srv: LiveServer, user: str, rel: str) -> requests.Response:
    return requests.get(url(srv, user, rel), auth=srv.auth(user), timeout=30)


def put(srv: LiveServer, user: str, rel: str, data: bytes) -> None:
    r = requests.put(url(srv, user, rel), data=data, auth=srv.auth(user), timeout=30)
    assert r.status_code in (200, 201, 204), (r.status_code, r.text)


def assert_served(srv: LiveServer, user: str, tree: dict[str, bytes]) -> None:
    for rel, data in tree.items():
        r = get(srv, user, rel)
        assert r.status_code == 200, (rel, r.status_code, srv.log_tail())
        assert r.content == data, rel


def key_files(root: str | Path) -> list[str]:
    base = Path(root) / "files"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def db(srv: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(srv.data_dir, "davserver.db"), timeout=10)


def db_query(srv: LiveServer, sql: str, params=()) -> list[tuple]:
    con = db(srv)
    try:
        with con:
            return con.execute(sql, params).fetchall()
    finally:
        con.close()


def status(srv: LiveServer) -> dict:
    return jcli(srv, "encryption:status")


N_FILES = len(TREE_ALICE) + len(TREE_BOB)


def encrypted_tree(instances, name: str = "inst") -> LiveServer:
    srv = instances(name)
    place(srv, "alice", TREE_ALICE)
    place(srv, "bob", TREE_BOB)
    cli(srv, "encryption:encrypt-all", "--yes", ok=True)
    return srv


# --- --help and tracebacks ----------------------------------------------------------------


def test_every_command_help_exits_zero():
    from davserver.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = sorted(sub.choices)
    for name in ("encryption:status", "encryption:encrypt-all", "backup:create", "recover",
                 "maintenance:mode", "encryption:clean-orphaned-keys"):
        assert name in commands
    todo = [["--help"], *[[c, "--help"] for c in commands]]
    while todo:  # a few at a time: each is a full interpreter start
        batch, todo = todo[:4], todo[4:]
        procs = [(args, subprocess.Popen([sys.executable, "-m", "davserver", *args],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)) for args in batch]
        for args, proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (args, err)
            assert "usage:" in out, args
            assert "Traceback" not in err


def test_errors_are_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nothing"
    for args in (["encryption:status"], ["encryption:scan"], ["backup:create", "x.bak"],
                 ["maintenance:mode", "--on"], ["encryption:encrypt-all", "--yes"]):
        res = subprocess.run([sys.executable, "-m", "davserver", *args, "--config",
                              str(missing / "c.toml"), "--data-dir", str(missing / "d")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "no davserver instance" in lines[0], (args, res.stderr)
    assert not missing.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make files another user owns")
def test_root_is_refused_on_the_service_users_data_dir(instances):
    """As occ does: files root creates (keys, DB journals, lock files) would lock the
    server's user out, so commands run as root on its data directory stop first."""
    srv = instances(users={"alice": None})
    for d, _dirs, files in os.walk(srv.root):
        for name in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(name, 65534, 65534)
    before = sorted(str(p) for p in Path(srv.root).rglob("*"))
    for args in (["encryption:status"], ["maintenance:mode", "--on"], ["serve"],
                 ["user:list"], ["init"]):
        res = srv.run_cli(*args, check=False, timeout=30)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "run davserver as that user" in lines[0], (args, lines)
    assert sorted(str(p) for p in Path(srv.root).rglob("*")) == before  # nothing created


# --- status, encrypt-all ------------------------------------------------------------------


def test_status_and_encrypt_all_hand_placed_tree(instances):
    srv = instances()
    place(srv, "alice", TREE_ALICE)
    place(srv, "bob", TREE_BOB)

    st = status(srv)
    assert st["enabled"] is True
    assert (st["encryptedFiles"], st["plaintextFiles"]) == (0, N_FILES)
    assert st["maintenance"] is False and st["jobsInProgress"] == []
    assert st["keyStorageRoot"] == os.path.join(srv.data_dir, "keys")
    plain = cli(srv, "encryption:status", ok=True).stdout
    assert f"plaintextFiles: {N_FILES}" in plain and "encryptedFiles: 0" in plain

    rep = jcli(srv, "encryption:encrypt-all", "--yes")
    assert rep["converted"] == N_FILES and rep["failed"] == [] and rep["skipped"] == 0
    assert rep["bytes"] == sum(len(v) for v in (*TREE_ALICE.values(), *TREE_BOB.values()))
    for rel in TREE_ALICE:
        assert is_encrypted(srv, "alice", rel), rel
    for rel in TREE_BOB:
        assert is_encrypted(srv, "bob", rel), rel
    st = status(srv)
    assert (st["encryptedFiles"], st["plaintextFiles"]) == (N_FILES, 0)
    assert st["maintenance"] is False and st["jobsInProgress"] == []
    assert len(key_files(Path(srv.data_dir) / "keys")) == N_FILES

    # Re-running is a no-op.
    before = {rel: on_disk(srv, "alice", rel) for rel in TREE_ALICE}
    res = cli(srv, "encryption:encrypt-all", "--yes", ok=True)
    assert f"encrypted 0 files (0 bytes), {N_FILES} already encrypted, 0 failed" in res.stdout
    assert {rel: on_disk(srv, "alice", rel) for rel in TREE_ALICE} == before
    assert cli(srv, "encryption:scan", ok=True).returncode == 0

    srv.start()
    assert_served(srv, "alice", TREE_ALICE)
    assert_served(srv, "bob", TREE_BOB)
    assert srv.tmp_files() == []


def test_encrypt_all_without_yes_is_refused_non_interactively(instances):
    srv = instances()
    place(srv, "alice", {"a.txt": b"a"})
    res = cli(srv, "encryption:encrypt-all", ok=False)
    one_line_error(res, "--yes")
    assert on_disk(srv, "alice", "a.txt") == b"a"
    assert status(srv)["maintenance"] is False


# --- enable / disable / decrypt-all -------------------------------------------------------


def test_disable_decrypt_all_enable(instances):
    srv = encrypted_tree(instances)
    keys = Path(srv.data_dir) / "keys"

    res = cli(srv, "encryption:disable", "--yes", ok=False)
    assert res.returncode == 2
    one_line_error(res, "decrypt-all")
    assert status(srv)["enabled"] is True

    # One user: only alice's files become plaintext.
    rep = jcli(srv, "encryption:decrypt-all", "alice", "--yes")
    assert rep["converted"] == len(TREE_ALICE) and rep["failed"] == []
    for rel, data in TREE_ALICE.items():
        assert on_disk(srv, "alice", rel) == data, rel
    for rel in TREE_BOB:
        assert is_encrypted(srv, "bob", rel), rel
    st = status(srv)
    assert st["enabled"] is True
    assert (st["encryptedFiles"], st["plaintextFiles"]) == (len(TREE_BOB), len(TREE_ALICE))
    assert len(key_files(keys)) == len(TREE_BOB)
    cli(srv, "encryption:disable", "--yes", ok=False)

    res = cli(srv, "encryption:decrypt-all", "nosuchuser", "--yes", ok=False)
    one_line_error(res, "nosuchuser")

    # Everyone: encryption ends up disabled.
    rep = jcli(srv, "encryption:decrypt-all", "--yes")
    assert rep["converted"] == len(TREE_BOB) and rep["skipped"] == len(TREE_ALICE)
    for rel, data in TREE_BOB.items():
        assert on_disk(srv, "bob", rel) == data, rel
    st = status(srv)
    assert st["enabled"] is False
    assert (st["encryptedFiles"], st["plaintextFiles"]) == (0, N_FILES)
    assert key_files(keys) == []

    assert "encryption disabled" in cli(srv, "encryption:disable", "--yes", ok=True).stdout
    res = cli(srv, "encryption:encrypt-all", "--yes", ok=False)
    one_line_error(res, "encryption:enable")
    assert cli(srv, "encryption:enable", ok=True).returncode == 0
    assert status(srv)["enabled"] is True

    srv.start()
    assert_served(srv, "alice", TREE_ALICE)
    assert_served(srv, "bob", TREE_BOB)


# --- modules, master key ------------------------------------------------------------------


def test_list_modules_and_set_default_module(instances):
    srv = instances()
    mods = jcli(srv, "encryption:list-modules")
    assert mods == {"DAVSERVER_AEAD_V1": {"name": mods["DAVSERVER_AEAD_V1"]["name"],
                                          "default": True}}
    assert "[default]" in cli(srv, "encryption:list-modules", ok=True).stdout
    cli(srv, "encryption:set-default-module", "DAVSERVER_AEAD_V1", ok=True)
    res = cli(srv, "encryption:set-default-module", "OC_DEFAULT_MODULE", ok=False)
    one_line_error(res, "OC_DEFAULT_MODULE")
    assert res.stdout == ""
    assert status(srv)["defaultModule"] == "DAVSERVER_AEAD_V1"


def test_master_key_mode_switch_refused_while_files_are_encrypted(instances):
    srv = encrypted_tree(instances)
    keys = Path(srv.data_dir) / "keys"
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    res = cli(srv, "encryption:enable-master-key", "--yes", ok=False)
    one_line_error(res, "already active")
    res = cli(srv, "encryption:disable-master-key", "--yes", ok=False)
    assert res.returncode == 2
    one_line_error(res, f"{N_FILES} files are encrypted with the master key", "decrypt-all")
    res = cli(srv, "encryption:disable-master-key", ok=False)  # no --yes, no tty
    one_line_error(res, "--yes")
    assert status(srv)["mode"] == "master"
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before
    assert cli(srv, "encryption:scan", ok=True).returncode == 0


def test_master_key_mode_switch_without_encrypted_files(instances):
    srv = instances()
    res = cli(srv, "encryption:disable-master-key", "--yes", ok=True)
    assert "user-key mode enabled" in res.stdout
    assert status(srv)["mode"] == "user"
    res = cli(srv, "encryption:disable-master-key", "--yes", ok=False)
    one_line_error(res, "already active")
    assert "master-key mode enabled" in cli(srv, "encryption:enable-master-key", ok=True).stdout
    assert status(srv)["mode"] == "master"


# --- key storage root ---------------------------------------------------------------------


def test_change_key_storage_root(instances, tmp_path):
    srv = encrypted_tree(instances)
    old = os.path.join(srv.data_dir, "keys")
    assert jcli(srv, "encryption:show-key-storage-root") == {"keyStorageRoot": old}
    assert old in cli(srv, "encryption:show-key-storage-root", ok=True).stdout
    names = key_files(old)
    assert len(names) == N_FILES

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    res = cli(srv, "encryption:change-key-storage-root", str(busy), "--yes", ok=False)
    one_line_error(res, "not empty")
    res = cli(srv, "encryption:change-key-storage-root", os.path.join(old, "inner"), "--yes",
              ok=False)
    one_line_error(res)
    assert jcli(srv, "encryption:show-key-storage-root")["keyStorageRoot"] == old
    assert key_files(old) == names and status(srv)["jobsInProgress"] == []
    assert status(srv)["maintenance"] is False

    srv.start()
    new = tmp_path / "newkeys"
    rep = jcli(srv, "encryption:change-key-storage-root", str(new), "--yes")
    assert rep["target"] == str(new) and rep["key_files"] == N_FILES + 1  # + the master key
    assert not os.path.exists(old)
    assert key_files(new) == names
    assert jcli(srv, "encryption:show-key-storage-root")["keyStorageRoot"] == str(new)
    st = status(srv)
    assert st["maintenance"] is False and st["jobsInProgress"] == []

    assert wait_until(lambda: get(srv, "alice", "hello.txt").status_code == 200, 5)
    assert_served(srv, "alice", TREE_ALICE)
    assert_served(srv, "bob", TREE_BOB)
    put(srv, "alice", "after-move.txt", b"new key goes to the new root")
    assert len(key_files(new)) == N_FILES + 1
    assert not os.path.exists(old)
    srv.kill()
    srv.start()
    assert get(srv, "alice", "after-move.txt").content == b"new key goes to the new root"
    assert_served(srv, "alice", TREE_ALICE)


def test_upload_right_after_key_root_change_is_not_lost(instances, tmp_path):
    """The server must not write keys into the old root after a key-root change.

    The server re-reads maintenance mode and the key root at most once a second; a job
    shorter than that never shows it maintenance, and an upload in the stale window
    after the job stores its key in the removed old root (recreated by the write)."""
    srv = encrypted_tree(instances)
    srv.start()
    time.sleep(1.2)
    assert get(srv, "alice", "hello.txt").status_code == 200  # settings re-read now
    new = tmp_path / "newkeys"
    cli(srv, "encryption:change-key-storage-root", str(new), "--yes", ok=True)
    r = requests.put(url(srv, "alice", "racy.txt"), data=b"uploaded right after the move",
                     auth=srv.auth("alice"), timeout=30)
    uploaded = r.status_code in (200, 201, 204)
    time.sleep(1.2)
    statuses = {rel: get(srv, "alice", rel).status_code for rel in TREE_ALICE}
    assert set(statuses.values()) == {200}, statuses
    if uploaded:
        r = get(srv, "alice", "racy.txt")
        assert r.status_code == 200, (r.status_code, srv.log_tail(10))
        assert r.content == b"uploaded right after the move"
    old = os.path.join(srv.data_dir, "keys")
    assert not os.path.exists(old), f"old key root recreated: {key_files(old)}"


# --- fix-encrypted-version, fix-key-location, scan, orphans -------------------------------


def test_fix_encrypted_version_rolled_back_file_is_not_fixed(instances):
    srv = instances()
    srv.start()
    put(srv, "alice", "x.txt", b"version one")
    old_cipher = on_disk(srv, "alice", "x.txt")
    put(srv, "alice", "x.txt", b"version two, longer")
    put(srv, "alice", "y.txt", b"innocent bystander")
    (home(srv, "alice") / "x.txt").write_bytes(old_cipher)  # rolled back behind our back
    assert 500 <= get(srv, "alice", "x.txt").status_code < 600

    res = cli(srv, "encryption:fix-encrypted-version", "alice", "--dry-run", "--output", "json")
    assert res.returncode == 3, res.stderr
    rep = json.loads(res.stdout)
    assert [(p["path"], p["state"]) for p in rep["problems"]] == [("alice/x.txt", "no-key")]
    assert rep["fixed"] == []
    text = cli(srv, "encryption:fix-encrypted-version", "alice", "--dry-run").stdout
    assert "alice/x.txt: no-key" in text and "0 files can be re-recorded (dry run)" in text

    res = cli(srv, "encryption:fix-encrypted-version", "alice", "--yes", "--output", "json")
    assert res.returncode == 3
    assert json.loads(res.stdout)["fixed"] == []
    assert on_disk(srv, "alice", "x.txt") == old_cipher
    assert 500 <= get(srv, "alice", "x.txt").status_code < 600
    assert get(srv, "alice", "y.txt").content == b"innocent bystander"


def test_fix_encrypted_version_re_records_file_that_authenticates(instances):
    srv = instances()
    srv.start()
    put(srv, "alice", "x", b"the right content")
    put(srv, "alice", "other", b"other content")
    cipher = on_disk(srv, "alice", "x")
    db_query(srv, "UPDATE files SET file_id = randomblob(16) WHERE path = 'alice/x'")
    assert 500 <= get(srv, "alice", "x").status_code < 600
    assert cli(srv, "encryption:scan", "alice").returncode == 3

    res = cli(srv, "encryption:fix-encrypted-version", "alice", "--dry-run", "--output", "json")
    assert res.returncode == 3
    rep = json.loads(res.stdout)
    assert [(p["path"], p["state"]) for p in rep["problems"]] == [("alice/x", "mismatch")]
    assert 500 <= get(srv, "alice", "x").status_code < 600  # dry run changed nothing

    res = cli(srv, "encryption:fix-encrypted-version", "alice", "--yes", "--output", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads(res.stdout)
    assert rep["fixed"] == ["alice/x"] and rep["problems"] == []
    r = get(srv, "alice", "x")
    assert r.status_code == 200 and r.content == b"the right content"
    assert on_disk(srv, "alice", "x") == cipher
    assert get(srv, "alice", "other").content == b"other content"
    assert cli(srv, "encryption:scan", ok=True).returncode == 0


def test_fix_encrypted_version_needs_user_for_path(instances):
    srv = instances()
    res = cli(srv, "encryption:fix-encrypted-version", "--path", "x", "--dry-run", ok=False)
    one_line_error(res, "USER")


def test_fix_key_location_reindexes(instances):
    srv = encrypted_tree(instances)
    rows = db_query(srv, "SELECT path, file_id, size FROM files ORDER BY path")
    assert len(rows) == N_FILES
    db_query(srv, "DELETE FROM files")

    rep = jcli(srv, "encryption:fix-key-location", "--dry-run")
    assert sorted(rep["fixed"]) == [r[0] for r in rows]
    assert rep["orphan_keys"] == [] and rep["problems"] == []
    assert db_query(srv, "SELECT COUNT(*) FROM files") == [(0,)]

    rep = jcli(srv, "encryption:fix-key-location")
    assert sorted(rep["fixed"]) == [r[0] for r in rows]
    assert db_query(srv, "SELECT path, file_id, size FROM files ORDER BY path") == rows
    rep = jcli(srv, "encryption:fix-key-location")
    assert rep["fixed"] == [] and rep["problems"] == []
    srv.start()
    assert_served(srv, "alice", TREE_ALICE)


def test_scan_detects_flipped_byte(instances):
    srv = encrypted_tree(instances)
    rep = jcli(srv, "encryption:scan")
    assert rep["counts"]["ok"] == N_FILES and rep["problems"] == []
    jcli(srv, "encryption:scan", "bob")

    victim = home(srv, "alice") / "docs/report.pdf"
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0x01
    victim.write_bytes(bytes(raw))
    res = cli(srv, "encryption:scan", "--output", "json")
    assert res.returncode == 3
    rep = json.loads(res.stdout)
    assert [(p["path"], p["state"]) for p in rep["problems"]] == [
        ("alice/docs/report.pdf", "corrupt")]
    assert rep["counts"]["ok"] == N_FILES - 1
    res = cli(srv, "encryption:scan")
    assert res.returncode == 3 and "alice/docs/report.pdf: corrupt" in res.stdout
    assert cli(srv, "encryption:scan", "bob").returncode == 0


def test_clean_orphaned_keys(instances):
    srv = encrypted_tree(instances)
    keys = Path(srv.data_dir) / "keys" / "files"
    src = next(keys.rglob("*.json"))
    orphan_id = os.urandom(16).hex()
    doc = json.loads(src.read_text())
    doc["file_id"] = orphan_id
    orphan = keys / orphan_id[:2] / f"{orphan_id}.json"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_text(json.dumps(doc))

    rep = jcli(srv, "encryption:clean-orphaned-keys", "--dry-run")
    assert rep == {"orphan_keys": [orphan_id], "deleted": False}
    assert orphan.exists()
    assert "1 orphaned keys found (dry run)" in cli(
        srv, "encryption:clean-orphaned-keys", "--dry-run", ok=True).stdout
    assert jcli(srv, "encryption:fix-key-location", "--dry-run")["orphan_keys"] == [orphan_id]

    res = cli(srv, "encryption:clean-orphaned-keys", ok=False)  # no --yes, no tty
    one_line_error(res, "--yes")
    assert orphan.exists()

    rep = jcli(srv, "encryption:clean-orphaned-keys", "--yes")
    assert rep == {"orphan_keys": [orphan_id], "deleted": True}
    assert not orphan.exists()
    assert len(key_files(keys.parent)) == N_FILES
    assert jcli(srv, "encryption:clean-orphaned-keys", "--dry-run")["orphan_keys"] == []
    assert jcli(srv, "encryption:scan")["counts"]["ok"] == N_FILES


# --- maintenance --------------------------------------------------------------------------


def test_maintenance_mode_on_off(instances):
    srv = instances()
    srv.start()
    put(srv, "alice", "m.txt", b"maintained")
    assert "maintenance mode is off" in cli(srv, "maintenance:mode", ok=True).stdout
    assert "maintenance mode is on" in cli(srv, "maintenance:mode", "--on", ok=True).stdout
    assert status(srv)["maintenance"] is True
    assert wait_until(lambda: get(srv, "alice", "m.txt").status_code == 503, 5)
    r = get(srv, "alice", "m.txt")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
    r = requests.request("PROPFIND", url(srv, "alice", ""), auth=srv.auth("alice"),
                         headers={"Depth": "1"}, timeout=10)
    assert r.status_code == 503 and "Retry-After" in r.headers
    assert requests.get(f"{srv.base}/status.php", timeout=10).json()["maintenance"] is True

    assert "maintenance mode is off" in cli(srv, "maintenance:mode", "--off", ok=True).stdout
    assert wait_until(lambda: get(srv, "alice", "m.txt").status_code == 200, 5)
    assert get(srv, "alice", "m.txt").content == b"maintained"
    res = cli(srv, "maintenance:mode", "--on", "--off", ok=False)
    assert res.returncode == 2  # argparse: mutually exclusive


def start_encrypt_all(srv: LiveServer) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "davserver", "encryption:encrypt-all", "--yes", "--output",
         "json", "--config", srv.config, "--data-dir", srv.data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def encrypt_all_job(srv: LiveServer):
    """encrypt-all running in the background; killed if the block leaves it running."""
    proc = start_encrypt_all(srv)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_maintenance_mode_during_encrypt_all(instances):
    srv = instances(users={"alice": None})
    blob = os.urandom(75_000)
    tree = {}
    for i in range(2000):  # 150 MB in many files: the job runs for a few seconds
        rel = f"d{i % 20}/f{i:04d}.bin"
        tree[rel] = blob
    place(srv, "alice", tree)
    srv.start()
    assert get(srv, "alice", "d0/f0000.bin").status_code == 200
    with encrypt_all_job(srv) as proc:
        def maintenance_seen() -> bool:
            return requests.get(f"{srv.base}/status.php", timeout=10).json()["maintenance"]

        assert wait_until(maintenance_seen, 30), "the server never saw maintenance mode"
        seen = 0
        while proc.poll() is None:
            r = get(srv, "alice", f"d{seen % 20}/f{seen % 2000:04d}.bin")
            job_done = proc.poll() is not None or not db_query(
                srv, "SELECT value FROM settings WHERE key = 'maintenance.job'")
            if job_done and r.status_code == 200:
                break  # the job finished (and left maintenance) between check and request
            assert r.status_code == 503, r.status_code
            assert int(r.headers["Retry-After"]) > 0
            seen += 1
            time.sleep(0.02)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert json.loads(out)["converted"] == 2000
    assert seen >= 3, "the job ended before the test could observe it"
    assert wait_until(lambda: get(srv, "alice", "d3/f0003.bin").status_code == 200, 5)
    time.sleep(1.1)  # every worker process re-reads maintenance mode within a second
    for rel in ("d0/f0000.bin", "d19/f1999.bin", "d7/f0507.bin"):
        assert get(srv, "alice", rel).content == blob
        assert is_encrypted(srv, "alice", rel)
    assert status(srv)["maintenance"] is False


def test_no_write_accepted_once_a_job_has_started(instances):
    """encrypt-all promises 503 while it runs. The server re-reads maintenance mode at
    most once a second, so a job must not start converting before servers can have seen
    it; otherwise an upload is accepted while files change form under it."""
    srv = instances(users={"alice": None})
    blob = os.urandom(75_000)
    place(srv, "alice", {f"d{i % 10}/f{i:04d}.bin": blob for i in range(600)})
    srv.start()
    time.sleep(1.2)
    assert get(srv, "alice", "d0/f0000.bin").status_code == 200  # settings re-read now
    with encrypt_all_job(srv) as proc:
        def job_running() -> bool:
            rows = db_query(srv, "SELECT value FROM settings WHERE key = 'maintenance.job'")
            return bool(rows) or proc.poll() is not None

        assert wait_until(job_running, 30, 0.005)
        converted = sum(is_encrypted(srv, "alice", f"d{i % 10}/f{i:04d}.bin")
                        for i in range(600))
        r = requests.put(url(srv, "alice", "during-job.txt"), data=b"x",
                         auth=srv.auth("alice"), timeout=30)
        running = proc.poll() is None
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    if running:
        assert r.status_code == 503, (
            f"PUT answered {r.status_code} while encrypt-all was running ({converted} of "
            "600 files already converted)")


# --- backup -------------------------------------------------------------------------------


def fresh_pair(root: Path, like: LiveServer) -> LiveServer:
    """An empty config/data pair with the data files of ``like`` copied in."""
    srv = LiveServer(root, {})
    srv.etc.mkdir(parents=True)
    Path(srv.config).write_text("[storage]\nfsync = false\n")
    shutil.copytree(Path(like.data_dir) / "files", Path(srv.data_dir) / "files")
    srv.users = dict(like.users)
    return srv


def test_backup_create_and_restore(instances, tmp_path):
    src = instances("src")
    src.start()
    uploads = {"a.txt": b"alpha", "empty": b"", "Grüße/日本語.txt": "ü".encode(),
               "big.bin": os.urandom(600_000)}
    for rel, data in uploads.items():
        if "/" in rel:
            requests.request("MKCOL", url(src, "alice", rel.rsplit("/", 1)[0]),
                             auth=src.auth("alice"), timeout=10)
        put(src, "alice", rel, data)
    put(src, "bob", "b.txt", b"bob")

    plain_bak = tmp_path / "plain.bak"
    rep = jcli(src, "backup:create", str(plain_bak))
    assert rep["encrypted"] is False and rep["key_files"] == 6  # 5 files + master
    assert "NOT encrypted" in cli(src, "backup:create", str(tmp_path / "p2.bak"), ok=True).stdout
    secret = Path(src.etc / "secret").read_bytes()
    assert secret in plain_bak.read_bytes()

    env = {"DAVSERVER_BACKUP_PASS": "correct horse battery"}
    enc_bak = tmp_path / "enc.bak"
    res = cli(src, "backup:create", str(enc_bak), "--passphrase-from-env", ok=False)
    one_line_error(res, "DAVSERVER_BACKUP_PASS")
    rep = jcli(src, "backup:create", str(enc_bak), "--passphrase-from-env", env=env)
    assert rep["encrypted"] is True
    assert secret not in enc_bak.read_bytes()
    src.kill()

    # Restore the encrypted backup into a fresh pair.
    dst = fresh_pair(tmp_path / "dst", src)
    res = cli(dst, "backup:restore", str(enc_bak), ok=False)
    one_line_error(res, "passphrase")
    res = cli(dst, "backup:restore", str(enc_bak), "--passphrase-from-env",
              env={"DAVSERVER_BACKUP_PASS": "wrong"}, ok=False)
    one_line_error(res, "wrong password")
    assert not (dst.etc / "secret").exists()
    assert not os.path.exists(os.path.join(dst.data_dir, "davserver.db"))
    assert not os.path.exists(os.path.join(dst.data_dir, "keys"))
    res = cli(dst, "backup:restore", str(tmp_path / "missing.bak"), ok=False)
    one_line_error(res, "not found")

    rep = jcli(dst, "backup:restore", str(enc_bak), "--passphrase-from-env", env=env)
    assert rep["key_files"] == 6
    assert (dst.etc / "secret").read_bytes() == secret
    res = cli(dst, "backup:restore", str(enc_bak), "--passphrase-from-env", env=env, ok=False)
    one_line_error(res, "--force")
    try:
        dst.start()
        assert_served(dst, "alice", uploads)
        assert_served(dst, "bob", {"b.txt": b"bob"})
        assert jcli(dst, "encryption:show-key-storage-root")["keyStorageRoot"] == \
            os.path.join(dst.data_dir, "keys")
    finally:
        dst.kill()
    assert jcli(dst, "encryption:scan")["problems"] == []

    # The unencrypted backup works the same; a passphrase is not needed for it.
    dst2 = fresh_pair(tmp_path / "dst2", src)
    jcli(dst2, "backup:restore", str(plain_bak))
    try:
        dst2.start()
        assert_served(dst2, "alice", uploads)
    finally:
        dst2.kill()

    # --force overwrites an existing instance.
    jcli(dst2, "backup:restore", str(enc_bak), "--passphrase-from-env", "--force", env=env)
    assert jcli(dst2, "encryption:scan")["problems"] == []


def test_restore_rejects_damaged_backup(instances, tmp_path):
    src = encrypted_tree(instances, "src")
    bak = tmp_path / "b.bak"
    env = {"DAVSERVER_BACKUP_PASS": "pw"}
    jcli(src, "backup:create", str(bak), "--passphrase-from-env", env=env)
    raw = bytearray(bak.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    bak.write_bytes(bytes(raw))
    dst = fresh_pair(tmp_path / "dst", src)
    res = cli(dst, "backup:restore", str(bak), "--passphrase-from-env", env=env, ok=False)
    one_line_error(res)
    assert not (dst.etc / "secret").exists()

    junk = tmp_path / "junk.bak"
    junk.write_bytes(b"not a backup at all" * 100)
    res = cli(dst, "backup:restore", str(junk), ok=False)
    one_line_error(res, "not a davserver backup")
    assert not (dst.etc / "secret").exists()


def test_serve_stops_on_sigterm(instances):
    """SIGTERM (systemd stop, Ctrl-C) must end ``serve`` promptly and cleanly."""
    srv = instances()
    srv.start()
    assert get(srv, "alice", "").status_code in (200, 207)
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, f"serve did not stop within 10 s of SIGTERM:\n{srv.log_tail(5)}"
