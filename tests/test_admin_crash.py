"""SIGKILL during encrypt-all, decrypt-all and change-key-storage-root; re-running the same
command must finish the job with every file intact, no leaked keys, no temp files left
after a server start, and maintenance mode off.

Kill delays come from a seeded ``random.Random`` and are spread over the duration of an
uninterrupted run of the same job, measured first on a copy of the instance. A second set
of tests kills the process at exact points of the commit protocol (the CLI runs under a
tiny wrapper that SIGKILLs itself when a given function is reached).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
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

SEED = 0x5EED_CAFE
MIB = 1 << 20
KILLS_PER_JOB = 3


# --- data ---------------------------------------------------------------------------------


def dataset(rng: random.Random, *, scale: float = 1.0) -> dict[tuple[str, str], bytes]:
    """~60 files of mixed sizes (1 B .. 8 MiB, ~100 MiB at scale 1) for alice and bob."""
    sizes = ([8 * MIB] * 5 + [3 * MIB] * 10 + [rng.randint(MIB, 2 * MIB) for _ in range(10)]
             + [rng.randint(10_000, 300_000) for _ in range(15)]
             + [rng.randint(1, 5000) for _ in range(18)] + [1, 0])
    out = {}
    for i, size in enumerate(sizes):
        user = "alice" if i % 3 else "bob"
        depth = i % 4
        rel = "/".join([f"dir{i % 5}", "sub"][:depth] + [f"file-{i:02d}-ü.bin"])
        out[(user, rel)] = os.urandom(max(0, int(size * scale)) if size > 1 else size)
    return out


def place(srv: LiveServer, tree: dict[tuple[str, str], bytes]) -> None:
    for (user, rel), data in tree.items():
        p = Path(srv.data_dir) / "files" / user / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def digests(tree: dict[tuple[str, str], bytes]) -> dict[str, str]:
    return {f"{u}/{rel}": hashlib.sha256(d).hexdigest() for (u, rel), d in tree.items()}


def digests_of_dir(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


# --- instance helpers ---------------------------------------------------------------------


@pytest.fixture
def instances(tmp_path):
    made: list[LiveServer] = []

    def make(name: str, fsync: bool = True) -> LiveServer:
        srv = LiveServer(tmp_path / name, {"alice": None, "bob": None},
                         {"storage": {"fsync": fsync}}).create()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.kill()


def cli_args(srv: LiveServer, *args: str) -> list[str]:
    return [*args, "--config", srv.config, "--data-dir", srv.data_dir]


def cli(srv: LiveServer, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = srv.run_cli(*args, check=False, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    if ok:
        assert res.returncode == 0, f"{args}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def jcli(srv: LiveServer, *args: str) -> dict:
    return json.loads(cli(srv, *args, "--output", "json").stdout)


def status(srv: LiveServer) -> dict:
    return jcli(srv, "encryption:status")


def key_root(srv: LiveServer) -> Path:
    return Path(jcli(srv, "encryption:show-key-storage-root")["keyStorageRoot"])


def all_key_store_files(root: Path) -> list[Path]:
    """Every file under files/ of the key store, temp files included."""
    return sorted(p for p in (root / "files").rglob("*") if p.is_file())


def pending_rows(srv: LiveServer) -> int:
    con = sqlite3.connect(os.path.join(srv.data_dir, "davserver.db"), timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
    finally:
        con.close()


def copy_instance(srv: LiveServer, dst: Path) -> LiveServer:
    shutil.copytree(srv.root, dst)
    twin = LiveServer(dst, {})
    twin.users = dict(srv.users)
    return twin


def recover_all(srv: LiveServer, out: Path, keys: Path | None = None) -> dict[str, str]:
    """Offline recovery of the live data dir (the job is dead); returns digests."""
    keys = keys or key_root(srv)
    if out.exists():
        shutil.rmtree(out)
    res = subprocess.run(
        [sys.executable, "-m", "davserver", "recover", "--data", srv.data_dir, "--keys",
         str(keys), "--secret-file", str(srv.etc / "secret"), "--out", str(out),
         "--output", "json"], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    return digests_of_dir(out)


def timed_run(srv: LiveServer, *args: str) -> float:
    t0 = time.monotonic()
    cli(srv, *args)
    return time.monotonic() - t0


def run_and_kill(srv: LiveServer, args: list[str], delay: float, progress=None,
                 at: float = 1.0) -> bool:
    """Start the command and SIGKILL it once ``progress()`` reaches ``at`` or after
    ``delay`` s, whichever comes first; True if it was still running then."""
    proc = subprocess.Popen([sys.executable, "-m", "davserver", *cli_args(srv, *args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        if progress is not None and progress() >= at:
            break
        time.sleep(0.003)
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    assert "Traceback" not in err, err
    if not running and "already there" not in err:  # see test_rerun_of_a_finished_...
        assert proc.returncode == 0, err
    return running


def rerun_until_done(srv: LiveServer, args: list[str], attempts: int = 5) -> None:
    for _ in range(attempts):
        res = srv.run_cli(*args, check=False, timeout=300)
        assert "Traceback" not in res.stderr, res.stderr
        if res.returncode == 0:
            return
    raise AssertionError(f"{args} did not finish: {res.returncode}\n{res.stderr}")


def kill_repeatedly(srv: LiveServer, args: list[str], rng: random.Random,
                    timing: tuple[float, float], progress, check_mid_state) -> int:
    """Kill the job KILLS_PER_JOB times, each run resuming the previous one, at random
    points spread over the job: the i-th kill comes when ``progress()`` (fraction done)
    passes a random point of band i (10-30 %, 35-55 %, 60-80 %), or at the time that
    point was reached in the measured uninterrupted run (``timing`` = start-up, total).
    Returns how many kills hit the job while it was working; ``check_mid_state(hit)``
    runs after every kill."""
    startup, total = timing
    work = max(total - startup, 0.05)
    hits = 0
    for i in range(KILLS_PER_JOB):
        point = rng.uniform(0.10 + 0.25 * i, 0.30 + 0.25 * i)
        delay = startup + max(point - progress(), 0.05) * work * 1.5
        if not run_and_kill(srv, args, delay, progress, point):
            break  # it finished: nothing left to interrupt
        hit = bool(status(srv)["jobsInProgress"])
        hits += hit
        check_mid_state(hit)
    return hits


def conversion_progress(srv: LiveServer, *, encrypt: bool):
    """Fraction of stored bytes already in the target form (header sniff)."""
    def progress() -> float:
        done = total = 0
        for p in (Path(srv.data_dir) / "files").rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    enc = f.read(6) == b"DAVSSE"
                size = p.stat().st_size
                total += size
                done += size if enc == encrypt else 0
        return done / total if total else 1.0
    return progress


def measure(srv: LiveServer, tmp_path: Path, *args: str) -> tuple[float, float]:
    """(start-up, uninterrupted run) of ``args`` on a copy of ``srv``."""
    twin = copy_instance(srv, tmp_path / "measure")
    try:
        startup = min(timed_run(twin, "maintenance:mode") for _ in range(2))
        return startup, timed_run(twin, *args)
    finally:
        shutil.rmtree(tmp_path / "measure")


def final_checks(srv: LiveServer, expected: dict[str, str], *, encrypted: bool,
                 tmp_path: Path, via_server: bool) -> None:
    """After the job finished: all files in the expected form, nothing pending; then a
    server start (which cleans temp files) and no temp file, leaked key or problem left;
    contents equal the originals (through the server, or by offline recovery)."""
    st = status(srv)
    assert st["maintenance"] is False and st["jobsInProgress"] == [], st
    n = len(expected)
    assert (st["encryptedFiles"], st["plaintextFiles"]) == ((n, 0) if encrypted else (0, n))
    assert pending_rows(srv) == 0

    srv.start()
    try:
        assert srv.tmp_files() == []
        assert requests.get(f"{srv.base}/status.php", timeout=10).json()[
            "maintenance"] is False
        if via_server:
            got = {}
            for key in expected:
                user, rel = key.split("/", 1)
                r = requests.get(srv.url(user, quote(rel)), auth=srv.auth(user), timeout=60)
                assert r.status_code == 200, (key, r.status_code)
                got[key] = hashlib.sha256(r.content).hexdigest()
            assert got == expected
    finally:
        srv.kill()

    root = key_root(srv)
    store = all_key_store_files(root)
    leftovers = [str(p.relative_to(root)) for p in store if p.name.startswith(".tmp-")]
    assert leftovers == [], f"temp key files left in the key store: {leftovers}"
    assert jcli(srv, "encryption:clean-orphaned-keys", "--dry-run")["orphan_keys"] == []
    assert len(store) == (n if encrypted else 0)
    assert jcli(srv, "encryption:scan")["problems"] == []
    if not via_server:
        assert recover_all(srv, tmp_path / "final-recovered", root) == expected
    assert status(srv)["maintenance"] is False


def mid_state_checker(srv: LiveServer, expected: dict[str, str], tmp_path: Path,
                      job: str):
    """After a kill: maintenance is still on and the job is recorded; after the first
    kill also every file is whole (offline recovery of the live data directory gives the
    originals: each stored file is the plaintext or a ciphertext of it, with its key)."""
    recovered = []

    def check(hit: bool) -> None:
        if hit:
            st = status(srv)
            assert st["maintenance"] is True and job in st["jobsInProgress"], st
        if not recovered:
            assert recover_all(srv, tmp_path / "mid-recovered") == expected
            shutil.rmtree(tmp_path / "mid-recovered")
            recovered.append(True)
    return check


# --- random kills -------------------------------------------------------------------------


def test_encrypt_all_killed_and_resumed(instances, tmp_path):
    rng = random.Random(SEED)
    srv = instances("enc")
    tree = dataset(rng)
    place(srv, tree)
    expected = digests(tree)
    del tree
    args = ["encryption:encrypt-all", "--yes"]
    timing = measure(srv, tmp_path, *args)

    checker = mid_state_checker(srv, expected, tmp_path, "encrypt-all")
    served = []

    def check(hit: bool) -> None:
        checker(hit)
        if hit and not served:
            # A job killed mid-way leaves the server in maintenance mode until it re-runs.
            srv.start()
            try:
                r = requests.get(srv.url("alice", ""), auth=srv.auth("alice"), timeout=10)
                assert r.status_code == 503 and "Retry-After" in r.headers
                served.append(r.status_code)
            finally:
                srv.kill()

    hits = kill_repeatedly(srv, args, rng, timing, conversion_progress(srv, encrypt=True),
                           check)
    assert hits >= 1, f"no kill hit the running job (timing: {timing})"
    rerun_until_done(srv, args)
    final_checks(srv, expected, encrypted=True, tmp_path=tmp_path, via_server=True)


def test_decrypt_all_killed_and_resumed(instances, tmp_path):
    rng = random.Random(SEED + 1)
    srv = instances("dec")
    tree = dataset(rng)
    place(srv, tree)
    expected = digests(tree)
    del tree
    cli(srv, "encryption:encrypt-all", "--yes")
    args = ["encryption:decrypt-all", "--yes"]
    timing = measure(srv, tmp_path, *args)

    hits = kill_repeatedly(srv, args, rng, timing, conversion_progress(srv, encrypt=False),
                           mid_state_checker(srv, expected, tmp_path, "decrypt-all"))
    assert hits >= 1, f"no kill hit the running job (timing: {timing})"
    rerun_until_done(srv, args)
    assert digests_of_dir(Path(srv.data_dir) / "files") == expected  # plaintext on disk
    assert status(srv)["enabled"] is False
    final_checks(srv, expected, encrypted=False, tmp_path=tmp_path, via_server=False)


def test_change_key_storage_root_killed_and_resumed(instances, tmp_path):
    rng = random.Random(SEED + 2)
    srv = instances("keyroot", fsync=True)
    tree = dataset(rng, scale=0.05)
    for i in range(600):  # many keys, so that copying the key store takes a while
        tree[("bob", f"many/{i % 10}/k{i:03d}")] = i.to_bytes(2, "big")
    place(srv, tree)
    expected = digests(tree)
    del tree
    cli(srv, "encryption:encrypt-all", "--yes")
    old_root = key_root(srv)
    names = sorted(str(p.relative_to(old_root)) for p in all_key_store_files(old_root))
    target = tmp_path / "new-key-root"
    args = ["encryption:change-key-storage-root", str(target), "--yes"]
    timing = measure(srv, tmp_path, "encryption:change-key-storage-root",
                     str(tmp_path / "measure-target"), "--yes")

    checker = mid_state_checker(srv, expected, tmp_path, "change-key-storage-root")

    def check(hit: bool) -> None:
        checker(hit)  # also: the key store the DB names is complete at every instant

    def progress() -> float:
        if not target.exists():
            return 0.0
        if key_root(srv) == target:
            return 1.0
        copied = sum(1 for p in all_key_store_files(target) if p.name.endswith(".json"))
        return copied / len(names)

    hits = kill_repeatedly(srv, args, rng, timing, progress, check)
    assert hits >= 1, f"no kill hit the running job (timing: {timing})"
    # A different target is refused while the move is unfinished.
    res = cli(srv, "encryption:change-key-storage-root", str(tmp_path / "elsewhere"), "--yes",
              ok=False)
    if res.returncode != 0:
        assert "unfinished move" in res.stderr
    res = srv.run_cli(*args, check=False, timeout=300)
    if res.returncode != 0 and "already there" in res.stderr:
        # killed after the move had finished (see test_rerun_of_a_finished_key_root_move)
        assert key_root(srv) == target
    elif res.returncode != 0:
        assert "Traceback" not in res.stderr, res.stderr
        rerun_until_done(srv, args)
    assert key_root(srv) == target
    assert not old_root.exists()
    assert sorted(str(p.relative_to(target)) for p in all_key_store_files(target)
                  if not p.name.startswith(".tmp-")) == names
    final_checks(srv, expected, encrypted=True, tmp_path=tmp_path, via_server=False)


# --- kills at exact points of the commit protocol -----------------------------------------

WRAPPER = r"""
import importlib, os, signal, sys
target, point = sys.argv[1], sys.argv[2]
parts = target.split(".")
for i in range(len(parts) - 1, 0, -1):
    try:
        owner = importlib.import_module(".".join(parts[:i]))
        break
    except ImportError:
        continue
for name in parts[i:-1]:
    owner = getattr(owner, name)
orig = getattr(owner, parts[-1])

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def hooked(*a, **k):
    if point == "before":
        die()
    orig(*a, **k)
    die()

setattr(owner, parts[-1], hooked)
from davserver.cli.main import main
sys.exit(main(sys.argv[3:]))
"""


def run_until_hook(srv: LiveServer, target: str, point: str, *args: str) -> None:
    """Run a CLI command that SIGKILLs itself before/after the first call of ``target``."""
    res = subprocess.run([sys.executable, "-c", WRAPPER, target, point,
                          *cli_args(srv, *args)], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, f"hook {target} not reached:\n{res.stderr}"


#: Small files go through batches (vault.convert_batch), the 2 MiB one alone, first.
SMALL = {("alice", "a.txt"): b"alpha" * 1000, ("alice", "d/b.bin"): os.urandom(300_000),
         ("bob", "c.txt"): b"c", ("alice", "d/big.bin"): os.urandom(2 * MIB)}

HOOKS = [
    # encrypt-all: the pending row announces the key file before it is written
    ("encrypt", "davserver.meta.db.MetaDB.add_pending", "before"),
    ("encrypt", "davserver.meta.db.MetaDB.add_pending", "after"),
    # ciphertext renamed into place, index not yet updated
    ("encrypt", "davserver.storage.local._FileWriter.commit", "after"),
    # decrypt-all: plaintext in place and indexed, old key not yet deleted
    ("decrypt", "davserver.storage.local._FileWriter.commit", "after"),
    ("decrypt", "davserver.vault.keystore.KeyStore.delete", "before"),
    # batches: pending rows of the batch before / after, keys written, nothing renamed
    ("encrypt", "davserver.meta.db.MetaDB.add_pending_many", "before"),
    ("encrypt", "davserver.meta.db.MetaDB.add_pending_many", "after"),
    ("encrypt", "davserver.storage.local._FileWriter.close_unflushed", "after"),
    ("decrypt", "davserver.meta.db.MetaDB.add_pending_many", "after"),
    # the first file of a batch renamed in, the others not
    ("encrypt", "davserver.storage.local._FileWriter.publish", "after"),
    ("decrypt", "davserver.storage.local._FileWriter.publish", "after"),
    # every file of the batch renamed in, the index not yet updated
    ("encrypt", "davserver.storage.local.LocalStorage.flush_names", "before"),
    ("decrypt", "davserver.storage.local.LocalStorage.flush_names", "before"),
]


@pytest.mark.parametrize(("job", "target", "point"), HOOKS,
                         ids=[f"{j}-{t.rsplit('.', 1)[1]}-{p}" for j, t, p in HOOKS])
def test_kill_at_commit_step(instances, tmp_path, job, target, point):
    srv = instances("hook", fsync=False)
    place(srv, SMALL)
    expected = digests(SMALL)
    if job == "decrypt":
        cli(srv, "encryption:encrypt-all", "--yes")
    args = [f"encryption:{job}-all", "--yes"]
    run_until_hook(srv, target, point, *args)
    assert recover_all(srv, tmp_path / "mid") == expected
    rerun_until_done(srv, args)
    final_checks(srv, expected, encrypted=job == "encrypt", tmp_path=tmp_path,
                 via_server=False)


@pytest.mark.parametrize("job", ["encrypt-all", "change-key-storage-root"])
def test_kill_inside_a_key_file_write(instances, tmp_path, job):
    """A kill inside the write of a key file must not leave a part-written file in the key
    store for good (re-run and a server start clean it up). A new file ID's key is written
    in place (durable.write_new), so the kill leaves an empty key file under its final
    name; a key copied to a new root goes through a temp file (durable.write_atomic)."""
    srv = instances("hook-tmp", fsync=False)
    place(srv, SMALL)
    expected = digests(SMALL)
    target = tmp_path / "new-root"
    if job == "encrypt-all":
        args = ["encryption:encrypt-all", "--yes"]
        store = Path(srv.data_dir) / "keys"
        run_until_hook(srv, "davserver.durable._open_new", "after", *args)
        assert [p for p in store.rglob("files/*/*.json") if p.stat().st_size == 0], \
            "the hook did not fire inside write_new"
    else:
        cli(srv, "encryption:encrypt-all", "--yes")
        args = ["encryption:change-key-storage-root", str(target), "--yes"]
        # write_atomic reaches os.replace only after its temp file is written.
        run_until_hook(srv, "davserver.durable.os.replace", "before", *args)
        assert list(target.rglob(".tmp-*")), "the hook did not fire inside write_atomic"
    rerun_until_done(srv, args)
    if job != "encrypt-all":
        assert key_root(srv) == target
    final_checks(srv, expected, encrypted=True, tmp_path=tmp_path, via_server=False)


def test_rerun_of_a_finished_key_root_move_is_a_no_op(instances, tmp_path):
    """A move killed after it finished, but before it reported success, is re-run by the
    admin with the same directory; that must succeed (like encrypt-all re-runs do)."""
    srv = instances("rerun-root", fsync=False)
    place(srv, SMALL)
    cli(srv, "encryption:encrypt-all", "--yes")
    target = tmp_path / "new-root"
    args = ["encryption:change-key-storage-root", str(target), "--yes"]
    cli(srv, *args)
    res = cli(srv, *args, ok=False)
    assert res.returncode == 0, res.stderr
    assert key_root(srv) == target


def test_server_after_killed_job_finishes_it(instances, tmp_path):
    """A server started after a killed job stays in maintenance until the job re-runs,
    and its start-up recovery leaves no temp files."""
    srv = instances("srv-after", fsync=False)
    place(srv, SMALL)
    expected = digests(SMALL)
    run_until_hook(srv, "davserver.storage.local._FileWriter.commit", "before",
                   "encryption:encrypt-all", "--yes")
    assert any(Path(srv.data_dir, "tmp").iterdir())  # the uncommitted temp blob
    srv.start()
    try:
        assert srv.tmp_files() == []
        assert requests.get(srv.url("alice", "a.txt"), auth=srv.auth("alice"),
                            timeout=10).status_code == 503
        rerun_until_done(srv, ["encryption:encrypt-all", "--yes"])
        assert wait_until(lambda: requests.get(srv.url("alice", "a.txt"), auth=srv.auth(
            "alice"), timeout=10).status_code == 200, 5)
    finally:
        srv.kill()
    final_checks(srv, expected, encrypted=True, tmp_path=tmp_path, via_server=True)
