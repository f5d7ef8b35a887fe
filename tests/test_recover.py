"""Offline ``davserver recover``: decrypt a copy of a data directory with no server and no
DB, from the key store + instance secret or from a backup archive."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.live import LiveServer

CHUNK = 1 << 18
UPLOADS = {
    "alice": {
        "empty.txt": b"",
        "one.txt": b"1",
        "notes/hello.txt": b"hello world\n" * 10,
        "notes/deep/er/x.bin": os.urandom(5000),
        "exact-chunk.bin": os.urandom(CHUNK),
        "multi-chunk.bin": os.urandom(3 * CHUNK + 777),
        "Grüße/日本語 ✓.txt": "unicode ✓".encode(),
    },
    "bob": {"b.txt": b"bob's\n", "sub/b2.bin": os.urandom(CHUNK + 1)},
}
N_FILES = sum(len(t) for t in UPLOADS.values())
PROGRESS = re.compile(r"^\s*\w+ing:\s+\d+%\|")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An instance whose files were uploaded through the server; the server is stopped."""
    srv = LiveServer(tmp_path_factory.mktemp("recover-src"), {"alice": None, "bob": None},
                     {"storage": {"fsync": False}}).create()
    srv.start()
    try:
        for user, tree in UPLOADS.items():
            s = srv.session(user)
            for rel, data in tree.items():
                parts = rel.split("/")[:-1]
                for i in range(len(parts)):
                    s.request("MKCOL", srv.url(user, quote("/".join(parts[:i + 1]))), timeout=10)
                r = s.put(srv.url(user, quote(rel)), data=data, timeout=30)
                assert r.status_code in (201, 204), (rel, r.status_code)
    finally:
        srv.kill()
    for tree_user, tree in UPLOADS.items():
        for rel in tree:
            raw = (Path(srv.data_dir) / "files" / tree_user / rel).read_bytes()
            assert raw[:6] == b"DAVSSE", rel
    return srv


@pytest.fixture
def data_copy(source, tmp_path) -> Path:
    dst = tmp_path / "data-copy"
    shutil.copytree(source.data_dir, dst)
    return dst


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    full.update(env or {})
    res = subprocess.run([sys.executable, "-m", "davserver", *args], capture_output=True,
                         text=True, env=full, timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    assert "Traceback" not in res.stdout, res.stdout
    return res


def one_error_line(res: subprocess.CompletedProcess, *words: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not PROGRESS.match(ln)]
    assert len(lines) == 1, f"expected one line, got:\n{res.stderr}"
    assert lines[0].startswith("davserver: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def regular_files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_recovered(out: Path, users=("alice", "bob")) -> None:
    expected = {f"{u}/{rel}": data for u in users for rel, data in UPLOADS[u].items()}
    assert regular_files(out) == sorted(expected)
    for rel, data in expected.items():
        assert (out / rel).read_bytes() == data, rel


def secret_of(srv: LiveServer) -> str:
    return str(srv.etc / "secret")


def test_recover_with_keys_and_secret(source, data_copy, tmp_path):
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"recovered {N_FILES} encrypted and 0 plaintext files" in res.stdout
    assert "0 could not be decrypted" in res.stdout
    assert_recovered(out)

    # --data may also name the files/ folder; --user limits to one user; JSON summary.
    out2 = tmp_path / "out2"
    res = run("recover", "--data", str(data_copy / "files"), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(out2), "--user", "bob",
              "--output", "json")
    assert res.returncode == 0 and res.stderr == ""
    rep = json.loads(res.stdout)
    assert rep["decrypted"] == len(UPLOADS["bob"]) and rep["failed"] == []
    assert rep["bytes"] == sum(len(d) for d in UPLOADS["bob"].values())
    assert_recovered(out2, users=("bob",))


def test_recover_copies_hand_placed_plaintext(source, data_copy, tmp_path):
    (data_copy / "files" / "alice" / "placed.txt").write_bytes(b"plain by hand")
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(out), "--output", "json")
    assert res.returncode == 0
    rep = json.loads(res.stdout)
    assert (rep["decrypted"], rep["copied_plaintext"]) == (N_FILES, 1)
    assert (out / "alice" / "placed.txt").read_bytes() == b"plain by hand"


def test_recover_from_backup(source, data_copy, tmp_path):
    bak = tmp_path / "plain.bak"
    res = run("backup:create", str(bak), "--config", source.config, "--data-dir",
              source.data_dir)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--backup", str(bak), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert_recovered(out)

    # The backup's key store is used, so the data copy's keys are not needed.
    shutil.rmtree(data_copy / "keys")
    out2 = tmp_path / "out2"
    res = run("recover", "--data", str(data_copy), "--backup", str(bak), "--out", str(out2))
    assert res.returncode == 0, res.stderr
    assert_recovered(out2)


def test_recover_from_passphrase_backup(source, data_copy, tmp_path):
    env = {"DAVSERVER_BACKUP_PASS": "open sesame"}
    bak = tmp_path / "enc.bak"
    res = run("backup:create", str(bak), "--passphrase-from-env", "--config", source.config,
              "--data-dir", source.data_dir, env=env)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--backup", str(bak), "--out", str(out),
              "--passphrase-from-env", env=env)
    assert res.returncode == 0, res.stderr
    assert_recovered(out)

    for args, env_, words in (
            (["--passphrase-from-env"], {"DAVSERVER_BACKUP_PASS": "wrong"}, ["wrong password"]),
            ([], {}, ["passphrase"])):
        bad = tmp_path / f"bad{len(args)}"
        res = run("recover", "--data", str(data_copy), "--backup", str(bak), "--out", str(bad),
                  "--output", "json", *args, env=env_)
        assert res.returncode != 0
        one_error_line(res, *words)
        assert res.stdout == ""
        assert regular_files(bad) == []


def test_recover_with_wrong_secret_fails_cleanly(source, data_copy, tmp_path):
    other = LiveServer(tmp_path / "other", {}).create()  # a fresh `davserver init`
    for output in ("json", "plain"):
        out = tmp_path / f"out-{output}"
        res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
                  "--secret-file", secret_of(other), "--out", str(out), "--output", output)
        assert res.returncode != 0
        one_error_line(res, "secret")
        assert regular_files(out) == [], regular_files(out)


def test_recover_needs_a_secret(data_copy, tmp_path):
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--out", str(out))
    assert res.returncode == 2
    one_error_line(res, "--secret-file")
    assert regular_files(out) == []
    res = run("recover", "--data", str(data_copy), "--keys", str(tmp_path / "nokeys"),
              "--secret-file", str(tmp_path / "nosecret"), "--out", str(out))
    assert res.returncode != 0
    one_error_line(res)
    assert regular_files(out) == []


def test_recover_reports_tampered_and_keyless_files(source, data_copy, tmp_path):
    victim = data_copy / "files" / "alice" / "multi-chunk.bin"
    raw = bytearray(victim.read_bytes())
    raw[64 + 2 * (CHUNK + 16) + 10] ^= 0x01  # third chunk: two good chunks come first
    victim.write_bytes(bytes(raw))
    # A file whose key is gone.
    head = (data_copy / "files" / "bob" / "b.txt").read_bytes()[:64]
    fid = head[16:32].hex()
    (data_copy / "keys" / "files" / fid[:2] / f"{fid}.json").unlink()

    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(out))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "2 could not be decrypted" in res.stdout
    assert "alice/multi-chunk.bin: failed authentication" in res.stdout
    assert "bob/b.txt: no key" in res.stdout

    expected = {f"{u}/{rel}": d for u in UPLOADS for rel, d in UPLOADS[u].items()}
    del expected["alice/multi-chunk.bin"], expected["bob/b.txt"]
    assert regular_files(out) == sorted(expected)  # no output, no .partial for the failed
    for rel, data in expected.items():
        assert (out / rel).read_bytes() == data, rel

    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(tmp_path / "o2"),
              "--output", "json")
    assert res.returncode == 3
    rep = json.loads(res.stdout)
    assert sorted(f["path"] for f in rep["failed"]) == ["alice/multi-chunk.bin", "bob/b.txt"]
    assert rep["decrypted"] == N_FILES - 2


def test_recover_does_not_need_the_server_or_db(source, data_copy, tmp_path):
    os.unlink(data_copy / "davserver.db")
    shutil.rmtree(data_copy / "tmp")
    out = tmp_path / "out"
    res = run("recover", "--data", str(data_copy), "--keys", str(data_copy / "keys"),
              "--secret-file", secret_of(source), "--out", str(out), "--output", "json")
    assert res.returncode == 0, res.stderr
    assert_recovered(out)
