"""Offline ``recover --mounts``: a backup archive and the stores are all it takes to
decrypt what external storage mounts hold (real moto S3 and WsgiDAV processes)."""

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
