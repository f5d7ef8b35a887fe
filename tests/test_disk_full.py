"""A full disk is a clear 507 (HTTP) or one line and exit 9 (CLI), and nothing is changed.

The instance lives on a 6 MiB tmpfs, so the kernel itself says "no space left" wherever
the server writes: temp blobs, key files, folders, SQLite's WAL.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import re
import sqlite3
import subprocess

import pytest

from davserver.cli.main import main as cli_main
from davserver.dav import app as dav_app
from davserver.errors import StorageFull, known
from davserver.instance import Instance
from davserver.meta.db import MetaDB
from davserver.vault.files import storage_path
from tests.instances import make_instance

AUTH = "Basic " + base64.b64encode(b"alice:alicepass1").decode()
URL = "/remote.php/dav/files/alice/"


class SmallDisk:
    """A 6 MiB tmpfs: the kernel says "no space left" to every writer, SQLite included."""

    def __init__(self, root) -> None:
        self.root = root
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(root)],
                             capture_output=True, text=True)
        if res.returncode != 0:  # CI and scripts/test.sh run as root, where this works
            pytest.fail(f"these tests mount a small tmpfs and need root: {res.stderr.strip()}")

    def fill(self) -> None:
        with open(self.root / "filler", "wb") as f, pytest.raises(OSError) as e:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        assert e.value.errno == errno.ENOSPC

    def free(self) -> None:
        os.unlink(self.root / "filler")

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    (tmp_path / "mnt").mkdir()
    disk = SmallDisk(tmp_path / "mnt")
    yield disk
    disk.unmount()


@pytest.fixture
def inst(small_disk):
    i = make_instance(small_disk.root)
    i.users.add("alice", "alicepass1")
    i.vault.write_bytes(storage_path("alice", "keep.bin"), b"old version")
    yield i
    i.close()


def _request(app, method, rel, body=b"", **headers):
    env = {"REQUEST_METHOD": method, "PATH_INFO": URL + rel, "wsgi.input": io.BytesIO(body),
           "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": AUTH, "HTTP_HOST": "x",
           "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "1",
           "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO(),
           **headers}
    got = []
    it = app(env, lambda s, h, e=None: got.append(s))
    try:
        out = b"".join(it)
    finally:
        if hasattr(it, "close"):
            it.close()
    return got[0], out


def _leftovers(inst) -> list[str]:
    return [n for n in os.listdir(inst.config.tmp_dir) if not n.startswith(".")]


@pytest.mark.parametrize("fast", [True, False], ids=["direct path", "WsgiDAV path"])
def test_upload_larger_than_the_free_space(inst, fast):
    app = dav_app.build_app(inst, fast_files=fast)
    big = os.urandom(8 << 20)
    for rel in ("keep.bin", "new.bin"):
        status, body = _request(app, "PUT", rel, big)
        assert status.startswith("507"), (status, body)
        assert b"storage is full" in body and b"Traceback" not in body
    assert inst.vault.read_all(storage_path("alice", "keep.bin")) == b"old version"
    assert inst.vault.stat(storage_path("alice", "new.bin")) is None
    assert _leftovers(inst) == []
    # the space of the failed uploads is free again: a file that fits goes in
    status, _ = _request(app, "PUT", "new.bin", b"fits")
    assert status.startswith("201")
    assert inst.vault.read_all(storage_path("alice", "new.bin")) == b"fits"


def test_both_paths_give_the_same_answer(inst):
    big = os.urandom(8 << 20)
    fast = _request(dav_app.build_app(inst), "PUT", "x.bin", big)
    reference = _request(dav_app.build_app(inst, fast_files=False), "PUT", "x.bin", big)
    def strip(page: bytes) -> bytes:  # WsgiDAV's error page carries a timestamp
        return re.sub(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+", b"<time>", page)

    assert fast[0] == reference[0] and strip(fast[1]) == strip(reference[1])


_BIG = b"o" * 20_000  # so that the index must grow
WRITES = {
    "PUT": ("new.bin", b"x" * 10_000, {}),
    "MKCOL": ("newdir", b"", {}),
    "COPY": ("keep.bin", b"", {"HTTP_DESTINATION": f"http://x{URL}copy.bin"}),
    "MOVE": ("keep.bin", b"", {"HTTP_DESTINATION": f"http://x{URL}moved.bin"}),
    "LOCK": ("keep.bin", b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope>'
             b"<D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>"
             + _BIG + b"</D:owner></D:lockinfo>", {"HTTP_TIMEOUT": "Second-600"}),
    "PROPPATCH": ("keep.bin", b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
                  b'xmlns:Z="urn:z"><D:set><D:prop><Z:note>' + _BIG
                  + b"</Z:note></D:prop></D:set></D:propertyupdate>", {}),
}


@pytest.mark.parametrize("method", list(WRITES))
def test_every_write_on_a_full_disk_is_507_and_changes_nothing(inst, small_disk, method):
    app = dav_app.build_app(inst)
    home = os.path.join(inst.config.files_dir, "alice")
    before = sorted(os.listdir(home))
    small_disk.fill()
    rel, body, headers = WRITES[method]
    status, out = _request(app, method, rel, body, **headers)
    if method == "PROPPATCH":  # per-property status inside a 207, as RFC 4918 asks
        assert status.startswith("207") and b"HTTP/1.1 507 Insufficient Storage" in out, out
    else:
        assert status == "507 Insufficient Storage", (status, out)
        assert b"storage is full" in out and b"Error(" not in out
    assert sorted(os.listdir(home)) == before  # no folder, copy or temp file left behind
    assert inst.vault.read_all(storage_path("alice", "keep.bin")) == b"old version"
    small_disk.free()
    # no lock or half-written row stands in the way once there is room again
    assert _request(app, "PUT", "keep.bin", b"new version")[0].startswith("204")
    assert inst.vault.read_all(storage_path("alice", "keep.bin")) == b"new version"
    assert _request(app, "PROPFIND", "keep.bin", HTTP_DEPTH="0")[0].startswith("207")


def test_cli_job_on_a_full_disk_stops_with_one_line(inst, small_disk, capsys):
    """decrypt-all needs room for each plaintext copy: it stops at the first file with
    exit 9 and one line, leaves every file as it was and maintenance mode off."""
    for n in range(3):
        inst.vault.write_bytes(storage_path("alice", f"f{n}.bin"), b"x" * 5000)
    small_disk.fill()
    capsys.readouterr()
    code = cli_main(["encryption:decrypt-all", "--yes", "--config",
                     str(small_disk.root / "etc" / "davserver.toml"),
                     "--data-dir", str(small_disk.root / "data")])
    err = capsys.readouterr().err
    assert code == 9, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "davserver: failed to decrypt all files: the server's storage is full")
    fresh = Instance(inst.config)
    try:
        assert not fresh.maintenance()
        assert fresh.vault.read_all(storage_path("alice", "keep.bin")) == b"old version"
        for n in range(3):
            assert fresh.vault.read_all(storage_path("alice", f"f{n}.bin")) == b"x" * 5000
            assert fresh.vault.stat(storage_path("alice", f"f{n}.bin")).encrypted
    finally:
        fresh.close()


def test_a_full_index_reports_itself_and_leaves_no_transaction_open(tmp_path):
    """SQLITE_FULL mid-transaction (here from max_page_count, SQLite's own size limit)
    rolls the transaction back inside SQLite: the error must reach the caller as itself,
    not as a failed second ROLLBACK, and the connection must take the next write."""
    db = MetaDB(str(tmp_path / "meta.db"))
    try:
        c = db._conn()
        c.execute(f"PRAGMA max_page_count = {c.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError) as e, db.tx() as t:
            t.execute("INSERT INTO props(path, name, value) VALUES('a', 'n', ?)", (_BIG * 10,))
        assert isinstance(known(e.value), StorageFull)
        assert not c.in_transaction
        c.execute("PRAGMA max_page_count = 1073741823")
        with db.tx() as t:
            t.execute("INSERT INTO props(path, name, value) VALUES('a', 'n', 'v')")
        assert db.query("SELECT value FROM props WHERE path = 'a'") == [("v",)]
    finally:
        db.close()
