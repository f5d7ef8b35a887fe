"""davserver with its primary storage on S3 (a moto server process) or on another
WebDAV server, over real HTTP: the WebDAV methods, ciphertext at rest, litmus, a crash
mid-upload, and the store going away and coming back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.live import LiveServer, require_tool
from tests.s3_server import MotoServer
from tests.test_litmus import SUITES, SUMMARY


def s3_config(moto: MotoServer, bucket: str) -> dict:
    return {"storage": {"backend": "s3"},
            "storage.s3": moto.config_section(bucket, prefix="dav", part_size=5 << 20)}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[tuple[LiveServer, MotoServer, str]]:
    moto = MotoServer().start()
    bucket = moto.new_bucket()
    srv = LiveServer(tmp_path_factory.mktemp("s3srv"), config=s3_config(moto, bucket))
    try:
        yield srv.create().start(), moto, bucket
    finally:
        srv.stop()
        moto.stop()


def test_webdav_methods_on_s3(s3_server):
    srv, moto, bucket = s3_server
    s = srv.session("alice")
    data = os.urandom(3 << 20) + b"PLAINTEXT-CANARY" * 1000
    url = srv.url("alice", "dir/file.bin")
    assert s.request("MKCOL", srv.url("alice", "dir")).status_code == 201
    assert s.put(url, data=data).status_code in (201, 204)
    r = s.get(url)
    assert r.status_code == 200 and r.content == data
    r = s.get(url, headers={"Range": "bytes=1000000-1000099"})
    assert r.status_code == 206 and r.content == data[1000000:1000100]
    # At rest: objects named by ID hold ciphertext; neither the canary nor a name is there.
    c = moto.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    (file_key,) = keys  # one object: the file (folders are names in the index)
    assert file_key.startswith("dav/urn:oid:")
    obj = c.get_object(Bucket=bucket, Key=file_key)["Body"].read()
    assert b"PLAINTEXT-CANARY" not in obj and len(obj) > len(data)
    r = s.request("COPY", url, headers={"Destination": srv.url("alice", "dir/copy.bin")})
    assert r.status_code == 201
    r = s.request("MOVE", srv.url("alice", "dir"), headers={
        "Destination": srv.url("alice", "moved")})
    assert r.status_code == 201
    assert s.get(url).status_code == 404
    assert s.get(srv.url("alice", "moved/copy.bin")).content == data
    r = s.request("PROPFIND", srv.url("alice", "moved"), headers={"Depth": "1"})
    assert r.status_code == 207
    assert "file.bin" in r.text and "copy.bin" in r.text
    assert s.delete(srv.url("alice", "moved/file.bin")).status_code == 204
    assert s.get(srv.url("alice", "moved/file.bin")).status_code == 404
    left = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # The copy's, and the deleted one's, kept keep_replaced_seconds for downloads that
    # began before the DELETE (storage/by_id.py); nothing names it any more.
    assert len(left) == 2 and file_key in left


def test_litmus_on_s3_home(s3_server, tmp_path):
    srv, _moto, _bucket = s3_server
    litmus = require_tool("litmus")
    env = dict(os.environ, TESTS=" ".join(SUITES))
    res = subprocess.run([litmus, srv.url("bob"), "bob", srv.users["bob"]], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    fails = "\n".join(ln for ln in out.splitlines() if "FAIL" in ln or "summary" in ln)
    assert res.returncode == 0, f"litmus exited {res.returncode}\n{fails}\n{srv.log_tail(30)}"
    summaries = {m.group(1): m for m in SUMMARY.finditer(out)}
    for suite in SUITES:
        m = summaries.get(suite)
        assert m is not None and int(m.group(4)) == 0, f"{suite}\n{fails}"
        assert int(m.group(2)) > 0 and m.group(2) == m.group(3)


def test_store_down_is_503_then_recovers(s3_server):
    """Last of the module's server tests: it takes the module's store away and back."""
    srv, moto, bucket = s3_server
    s = srv.session("alice")
    assert s.put(srv.url("alice", "f.txt"), data=b"before the outage").status_code == 201
    c = moto.client()
    saved = {o["Key"]: c.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
             for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}
    moto.stop()
    for method, path, body in (("GET", "f.txt", None), ("PUT", "g.txt", b"during"),
                               ("GET", "f.txt", None)):
        r = s.request(method, srv.url("alice", path), data=body, timeout=60)
        assert r.status_code == 503, (method, r.status_code, r.text)
        assert int(r.headers["Retry-After"]) > 0
        assert "Traceback" not in r.text
    # Names live in the index (objects by ID): listings still work without the store.
    r = s.request("PROPFIND", srv.url("alice", ""), headers={"Depth": "1"}, timeout=60)
    assert r.status_code == 207 and "f.txt" in r.text and "g.txt" not in r.text
    # The store comes back with its data (moto keeps it in memory: put it back).
    moto.start()
    c = moto.client()
    c.create_bucket(Bucket=bucket)
    for key, body in saved.items():
        c.put_object(Bucket=bucket, Key=key, Body=body)
    assert s.get(srv.url("alice", "f.txt")).content == b"before the outage"
    assert s.put(srv.url("alice", "g.txt"), data=b"after").status_code == 201
    assert s.get(srv.url("alice", "g.txt")).content == b"after"
    assert "Traceback" not in srv.log_text()


def test_slow_store_times_out_as_unavailable():
    """A store that accepts connections but never answers: the call gives up after its
    timeouts and retries with StorageUnavailable instead of hanging the worker."""
    import socket

    from davserver.errors import StorageUnavailable
    from davserver.storage.s3 import S3Settings, S3Storage

    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)
        port = sink.getsockname()[1]
        st = S3Storage(S3Settings(bucket="b", endpoint=f"http://127.0.0.1:{port}",
                                  access_key="k", secret_key="s", path_style=True,
                                  retries=1, connect_timeout=1, read_timeout=1))
        with pytest.raises(StorageUnavailable):
            st.stat("x")


def test_wrong_bucket_is_a_clear_error_not_unavailable(s3_server):
    from davserver.errors import StorageError, StorageUnavailable
    from davserver.storage.s3 import S3Storage

    _srv, moto, _bucket = s3_server
    st = S3Storage(moto.settings("no-such-bucket-here"))
    with pytest.raises(StorageError) as e:
        st.stat("x")
    assert not isinstance(e.value, StorageUnavailable)


def test_kill_during_upload_to_s3_keeps_previous_version(tmp_path, moto):
    """SIGKILL while a multipart upload is under way: after the restart the old version
    is served, and the unfinished upload is gone from the store."""
    import base64
    import signal
    import socket
    from urllib.parse import urlsplit

    from tests.live import wait_until

    bucket = moto.new_bucket()
    cfg = s3_config(moto, bucket)
    cfg["storage.s3"]["stale_upload_seconds"] = 0  # this node is the only writer
    srv = LiveServer(tmp_path / "srv", users={"alice": None}, config=cfg).create().start()
    c = moto.client()
    try:
        url = srv.url("alice", "big.bin")
        v1 = os.urandom(1 << 20)
        assert srv.session("alice").put(url, data=v1).status_code == 201
        u = urlsplit(url)
        cred = base64.b64encode(f"alice:{srv.users['alice']}".encode()).decode()
        total = 20 << 20
        head = (f"PUT {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Basic {cred}\r\n"
                f"Content-Length: {total}\r\n\r\n").encode()
        with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
            sock.sendall(head)
            for _ in range(12):  # two 5 MiB parts and more
                sock.sendall(os.urandom(1 << 20))

            def parts_stored() -> bool:
                ups = c.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
                return bool(ups) and bool(c.list_parts(
                    Bucket=bucket, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"]).get("Parts"))

            assert wait_until(parts_stored, timeout=30), srv.log_tail(20)
            srv.kill()
        assert srv.proc.returncode == -signal.SIGKILL
        srv.start()  # recover() at start aborts the unfinished upload
        r = srv.session("alice").get(url)
        assert r.status_code == 200 and r.content == v1
        assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert len(c.list_objects_v2(Bucket=bucket).get("Contents", [])) == 1
    finally:
        srv.stop()


def test_remote_webdav_as_primary_storage_over_http(tmp_path, remote_dav):
    """davserver in front of another WebDAV server: what a client stores arrives there
    as ciphertext under its name, and folder moves are the remote server's MOVE."""
    from tests.webdav_server import PASSWORD, USER

    sub = f"home-{os.urandom(4).hex()}"
    (remote_dav.root / sub).mkdir()
    srv = LiveServer(tmp_path / "srv", users={"alice": None}, config={
        "storage": {"backend": "webdav"},
        "storage.webdav": {"url": f"{remote_dav.url}/{sub}", "user": USER,
                           "password": PASSWORD}}).create().start()
    try:
        s = srv.session("alice")
        data = os.urandom(2 << 20) + b"PLAINTEXT-CANARY"
        assert s.request("MKCOL", srv.url("alice", "d")).status_code == 201
        assert s.put(srv.url("alice", "d/f.bin"), data=data).status_code == 201
        stored = (remote_dav.root / sub / "alice" / "d" / "f.bin").read_bytes()
        assert b"PLAINTEXT-CANARY" not in stored and len(stored) > len(data)
        r = s.get(srv.url("alice", "d/f.bin"), headers={"Range": "bytes=5-14"})
        assert r.status_code == 206 and r.content == data[5:15]
        assert s.request("MOVE", srv.url("alice", "d"), headers={
            "Destination": srv.url("alice", "e")}).status_code == 201
        assert s.get(srv.url("alice", "e/f.bin")).content == data
        assert (remote_dav.root / sub / "alice" / "e" / "f.bin").exists()
        assert s.delete(srv.url("alice", "e")).status_code == 204
        assert sorted(p.name for p in (remote_dav.root / sub / "alice").iterdir()) == []
    finally:
        srv.stop()


def test_serve_with_the_store_down_exits_with_one_line(tmp_path):
    """Start-up recovery needs the store: without it the server stops with exit code 11
    and one line (a service manager restarts it), not a traceback."""
    moto = MotoServer().start()
    srv = LiveServer(tmp_path / "srv", users={"alice": None},
                     config=s3_config(moto, moto.new_bucket())).create()
    moto.stop()
    with pytest.raises(AssertionError) as e:
        srv.start()
    assert srv.proc.returncode == 11
    assert "the storage backend is unavailable" in str(e.value)
    assert "Traceback" not in srv.log_text()
