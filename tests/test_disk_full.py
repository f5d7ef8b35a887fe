"""A full disk is a clear 507 (HTTP) or one line and exit 9 (CLI), and nothing is changed.

The instance lives on a 6 MiB tmpfs, so the kernel itself says "no space left" wherever
the server writes: temp blobs, key files, SQLite's WAL. Where mounting is not allowed the
same answers are checked with ENOSPC raised by the storage layer's writes instead.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import re
import subprocess

import pytest

from davserver.cli.main import main as cli_main
from davserver.dav import app as dav_app
from davserver.instance import Instance
from davserver.vault.files import storage_path
from tests.instances import make_instance

AUTH = "Basic " + base64.b64encode(b"alice:alicepass1").decode()
URL = "/remote.php/dav/files/alice/"


class SmallDisk:
    """A directory on a 6 MiB filesystem; ``fill()`` leaves no space at all."""

    def __init__(self, root, monkeypatch) -> None:
        self.root = root
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(root)],
                             capture_output=True, text=True)
        self.real = res.returncode == 0
        self._full = False
        if not self.real:  # no mount allowed: the blob writer reports what the kernel would
            from davserver.storage import local

            real_write = local._FileWriter.write

            def write(writer, data):
                if self._full or writer._f.tell() + len(data) > 4 << 20:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(writer, data)

            monkeypatch.setattr(local._FileWriter, "write", write)

    def fill(self) -> None:
        self._full = True
        if self.real:
            with open(self.root / "filler", "wb") as f, pytest.raises(OSError) as e:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
            assert e.value.errno == errno.ENOSPC

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    (tmp_path / "mnt").mkdir()
    disk = SmallDisk(tmp_path / "mnt", monkeypatch)
    yield disk
    disk.unmount()


@pytest.fixture
def inst(small_disk):
    i = make_instance(small_disk.root)
    i.users.add("alice", "alicepass1")
    i.vault.write_bytes(storage_path("alice", "keep.bin"), b"old version")
    yield i
    i.close()


def _request(app, method, rel, body=b""):
    env = {"REQUEST_METHOD": method, "PATH_INFO": URL + rel, "wsgi.input": io.BytesIO(body),
           "CONTENT_LENGTH": str(len(body)), "HTTP_AUTHORIZATION": AUTH,
           "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "1",
           "SCRIPT_NAME": "", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO()}
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
