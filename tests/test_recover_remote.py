"""Offline ``recover --mounts`` and ``--primary``: a backup archive and the stores are all
it takes to decrypt what external storage mounts and a remote primary store hold (real
moto S3 and WsgiDAV processes)."""

from __future__ import annotations

import json
import os

import pytest

from davserver.crypto import header as hdr
from tests.live import LiveServer
from tests.test_mounts import Store, create_mount


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("recover-mounts")).create().start()
    yield s
    s.stop()


def test_recover_mounts_from_backup(srv, request, tmp_path):
    s3, dav = Store("s3", request), Store("dav", request)
    m_s3 = create_mount(srv, s3, "/Bucket", "--user", "alice")
    m_dav = create_mount(srv, dav, "/Remote/Dav")
    alice = srv.session("alice")
    big = os.urandom(700_000)
    try:
        for url, data in (("Bucket/a.txt", b"on s3"), ("Remote/Dav/b.bin", big)):
            r = alice.put(srv.url("alice", url), data=data)
            assert r.status_code in (201, 204), r.text
        assert alice.request("MKCOL", srv.url("alice", "Bucket/sub")).status_code == 201
        assert alice.put(srv.url("alice", "Bucket/sub/c.txt"), data=b"deeper").status_code \
            in (201, 204)
        assert hdr.is_encrypted(s3.raw("a.txt")[:64])
        s3.put_raw("plain.txt", b"placed by hand")
        # An encrypted file whose key the backup does not hold: reported, not written.
        assert alice.put(srv.url("alice", "Bucket/gone.txt"), data=b"x").status_code \
            in (201, 204)
        blob = s3.raw("gone.txt")
        assert alice.delete(srv.url("alice", "Bucket/gone.txt")).status_code == 204
        s3.put_raw("foreign.bin", blob)
        srv.run_cli("backup:create", str(tmp_path / "b.tar"))

        out = tmp_path / "out"
        res = srv.run_cli("recover", "--backup", str(tmp_path / "b.tar"), "--mounts",
                          "--out", str(out), "--output", "json", check=False)
        assert res.returncode == 3, res.stderr
        rep = json.loads(res.stdout)
        assert rep["decrypted"] == 3 and rep["copied_plaintext"] == 1, rep
        assert [f["path"] for f in rep["failed"]] == ["Bucket/foreign.bin"]
        assert (out / "Bucket" / "a.txt").read_bytes() == b"on s3"
        assert (out / "Bucket" / "sub" / "c.txt").read_bytes() == b"deeper"
        assert (out / "Bucket" / "plain.txt").read_bytes() == b"placed by hand"
        assert (out / "Remote" / "Dav" / "b.bin").read_bytes() == big
        assert not (out / "Bucket" / "foreign.bin").exists()
        assert not list(out.rglob("*.partial"))

        # One mount by ID; a wrong ID is a clear error.
        only = tmp_path / "only"
        res = srv.run_cli("recover", "--backup", str(tmp_path / "b.tar"), "--mounts",
                          str(m_dav), "--out", str(only))
        assert (only / "Remote" / "Dav" / "b.bin").read_bytes() == big
        assert not (only / "Bucket").exists()
        bad = srv.run_cli("recover", "--backup", str(tmp_path / "b.tar"), "--mounts", "999",
                          "--out", str(only), check=False)
        assert bad.returncode != 0 and "no mount 999 in the backup" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        srv.run_cli("files_external:delete", str(m_s3))
        srv.run_cli("files_external:delete", str(m_dav))


@pytest.mark.parametrize("kind", ["s3-by-id", "s3"])
def test_recover_primary_s3_from_backup(kind, request, tmp_path):
    """A home on S3 (objects named by file ID, or by path): the backup's config names the
    bucket, its database names the objects; recover --primary decrypts them all."""
    import subprocess
    import sys

    from davserver.vault import backup
    from tests.test_storage_primary import make_remote_inst

    inst, _remote = make_remote_inst(kind, request, tmp_path)
    try:
        inst.users.add("bob", "bobpass123")
        files = {"alice/a.txt": b"alice on s3", "alice/deep/b.bin": os.urandom(300_000),
                 "bob/c.txt": b"bob on s3"}
        inst.vault.make_dir("alice/deep")
        for path, data in files.items():
            inst.vault.write_bytes(path, data)
        inst.vault.move("alice/deep", "alice/moved")  # by ID: only the index knows
        files["alice/moved/b.bin"] = files.pop("alice/deep/b.bin")
        backup.create(str(tmp_path / "b.tar"), secret_file=inst.config.secret_file,
                      config_file=inst.config.path, key_root=inst.key_root, db=inst.db)
    finally:
        inst.close()

    def recover(*extra: str):
        return subprocess.run(
            [sys.executable, "-m", "davserver", "recover", "--backup", str(tmp_path / "b.tar"),
             "--primary", "--output", "json", *extra], capture_output=True, text=True,
            timeout=120)

    out = tmp_path / "out"
    res = recover("--out", str(out))
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["decrypted"] == 3 and rep["failed"] == [], rep
    for path, data in files.items():
        assert (out / path).read_bytes() == data, path
    only = tmp_path / "only"
    res = recover("--user", "bob", "--out", str(only))
    assert res.returncode == 0, res.stderr
    assert sorted(str(p.relative_to(only)) for p in only.rglob("*") if p.is_file()) \
        == ["bob/c.txt"]
    both = recover("--mounts", "--out", str(only))
    assert both.returncode != 0 and "give one of --mounts or --primary" in both.stderr
