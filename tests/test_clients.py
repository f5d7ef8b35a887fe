"""Real WebDAV clients against a live server: rclone, cadaver and curl."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import requests

from tests.live import require_tool

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL

MiB = 1024 * 1024
CHUNK = 256 * 1024
DAV = "{DAV:}"


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in root.rglob("*") if p.is_file()}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 180)
    return subprocess.run(cmd, capture_output=True, **kw)


# --- rclone ---------------------------------------------------------------------------


def test_rclone_copy_check_roundtrip(server, tmp_path):
    rclone = require_tool("rclone")
    obscured = run([rclone, "obscure", server.users["alice"]], text=True)
    assert obscured.returncode == 0, obscured.stderr
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[dav]\ntype = webdav\nurl = {server.url('alice')}\nvendor = other\n"
                    f"user = alice\npass = {obscured.stdout.strip()}\n")
    local = tmp_path / "local"
    files = {
        "big.bin": os.urandom(20 * MiB),
        "empty.txt": b"",
        "one-chunk.bin": os.urandom(CHUNK),
        "chunk-plus-one.bin": os.urandom(CHUNK + 1),
        "chunk-minus-one.bin": os.urandom(CHUNK - 1),
        "Grüße/日本語 file.txt": "Grüße aus 日本\n".encode() * 100,
        "emoji 😀.bin": os.urandom(1234),
        "a/b/c/deep.txt": b"deep\n",
        "a/b/sibling.txt": b"sibling\n",
        "a/space name/x.txt": b"x" * 10,
    }
    for rel, data in files.items():
        p = local / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    base = [rclone, "--config", str(conf), "--low-level-retries", "1", "--retries", "1"]
    res = run(base + ["copy", str(local), "dav:tree"], text=True)
    assert res.returncode == 0, f"rclone copy failed:\n{res.stderr}\n{server.log_tail(30)}"
    res = run(base + ["check", str(local), "dav:tree"], text=True)
    assert res.returncode == 0, f"rclone check failed:\n{res.stderr}"
    res = run(base + ["check", "--download", str(local), "dav:tree"], text=True)
    assert res.returncode == 0, f"rclone check --download failed:\n{res.stderr}"
    local2 = tmp_path / "local2"
    res = run(base + ["copy", "dav:tree", str(local2)], text=True)
    assert res.returncode == 0, f"rclone copy back failed:\n{res.stderr}"
    want = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    assert tree_hashes(local2) == want
    # sizes the server reports are plaintext sizes
    res = run(base + ["lsjson", "-R", "--files-only", "dav:tree"], text=True)
    assert res.returncode == 0, res.stderr
    sizes = {e["Path"]: e["Size"] for e in json.loads(res.stdout)}
    assert sizes == {rel: len(data) for rel, data in files.items()}


# --- cadaver --------------------------------------------------------------------------


def test_cadaver_put_get(server, tmp_path):
    cadaver = require_tool("cadaver")
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {server.users['alice']}\n")
    netrc.chmod(0o600)
    work = tmp_path / "work"
    work.mkdir()
    data = os.urandom(300 * 1024) + b"cadaver-end"
    (work / "up.bin").write_bytes(data)
    script = "mkcol cadaver-dir\nput up.bin cadaver-dir/remote.bin\nls cadaver-dir\n" \
             "get cadaver-dir/remote.bin down.bin\nquit\n"
    env = dict(os.environ, HOME=str(home))
    res = run([cadaver, server.url("alice")], input=script, text=True, cwd=work, env=env,
              timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert (work / "down.bin").exists(), out
    assert (work / "down.bin").read_bytes() == data
    r = server.session("alice").get(server.url("alice", "cadaver-dir/remote.bin"))
    assert r.content == data


# --- curl -----------------------------------------------------------------------------


class Curl:
    def __init__(self, server, tmp_path: Path, user: str = "alice") -> None:
        self.exe = require_tool("curl")
        self.server = server
        self.user = user
        self.tmp = tmp_path
        self.n = 0

    def __call__(self, *args: str, input: bytes | None = None) -> tuple[int, dict, bytes]:
        self.n += 1
        hdr = self.tmp / f"h{self.n}"
        body = self.tmp / f"b{self.n}"
        cmd = [self.exe, "-sS", "-u", f"{self.user}:{self.server.users[self.user]}",
               "-D", str(hdr), "-o", str(body), "-w", "%{http_code}", *args]
        res = subprocess.run(cmd, input=input, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        status = int(res.stdout.decode().strip()[-3:])
        headers: dict[str, str] = {}
        for line in hdr.read_text(errors="replace").splitlines():
            if line.startswith("HTTP/"):
                headers = {}  # keep the last response's headers (after 100 Continue)
            elif ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers, body.read_bytes() if body.exists() else b""


@pytest.fixture
def curl(server, tmp_path):
    return Curl(server, tmp_path)


def test_curl_put_chunked_and_content_length(server, curl, tmp_path):
    url = server.url("alice", "curl-chunked.bin")
    data = os.urandom(CHUNK * 3 + 17)
    status, _, _ = curl("-T", "-", url, input=data)  # stdin: chunked transfer encoding
    assert status == 201
    status, headers, body = curl(url)
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data))

    url2 = server.url("alice", "curl-cl.bin")
    src = tmp_path / "cl.bin"
    src.write_bytes(os.urandom(CHUNK + 1))
    status, _, _ = curl("-T", str(src), url2)
    assert status == 201
    status, _, body = curl(url2)
    assert status == 200 and body == src.read_bytes()
    # explicit chunked header on a file upload too, overwriting
    status, _, _ = curl("-H", "Transfer-Encoding: chunked", "-T", str(src), url)
    assert status == 204
    assert curl(url)[2] == src.read_bytes()


@pytest.fixture(scope="module")
def ranged_file(server):
    data = os.urandom(CHUNK * 2 + 5000)
    url = server.url("alice", "ranged.bin")
    assert server.session("alice").put(url, data=data).status_code in (201, 204)
    return url, data


def test_curl_ranges(curl, ranged_file):
    url, data = ranged_file
    size = len(data)
    status, h, body = curl("-r", "100-199", url)
    assert status == 206
    assert h["content-range"] == f"bytes 100-199/{size}"
    assert body == data[100:200]
    # across a chunk boundary
    a, b = CHUNK - 50, CHUNK + 49
    status, h, body = curl("-r", f"{a}-{b}", url)
    assert status == 206 and body == data[a:b + 1]
    assert h["content-range"] == f"bytes {a}-{b}/{size}"
    status, h, body = curl("-r", "-10", url)
    assert status == 206 and body == data[-10:]
    assert h["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    status, h, body = curl("-r", f"{size - 3}-", url)
    assert status == 206 and body == data[-3:]
    status, h, body = curl("-H", f"Range: bytes={size + 999999}-", url)
    assert status == 416, status
    assert b"Traceback" not in body


def test_curl_if_range(curl, ranged_file):
    url, data = ranged_file
    status, h, _ = curl("-I", url)
    etag = h["etag"]
    status, h, body = curl("-r", "0-9", "-H", f"If-Range: {etag}", url)
    assert status == 206 and body == data[:10]
    status, h, body = curl("-r", "0-9", "-H", 'If-Range: "not-the-etag"', url)
    assert status == 200 and body == data


def test_head_reports_plaintext_size_without_decrypting(server, curl):
    data = os.urandom(CHUNK + 4321)
    url = server.url("alice", "head.bin")
    assert server.session("alice").put(url, data=data).status_code in (201, 204)
    stored = Path(server.data_dir) / "files" / "alice" / "head.bin"
    assert stored.stat().st_size != len(data)  # ciphertext has headers and tags
    status, h, body = curl("-I", url)
    assert status == 200
    assert h["content-length"] == str(len(data))
    # Damage a byte of ciphertext in the middle: HEAD still answers from the index.
    with open(stored, "r+b") as f:
        f.seek(stored.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    try:
        status, h, _ = curl("-I", url)
        assert status == 200 and h["content-length"] == str(len(data))
    finally:
        server.session("alice").delete(url)


def propfind(session: requests.Session, url: str, depth: str = "0",
             body: bytes | None = None) -> ET.Element:
    r = session.request("PROPFIND", url, headers={"Depth": depth}, data=body)
    assert r.status_code == 207, (r.status_code, r.text[:500])
    return ET.fromstring(r.content)


def prop(tree: ET.Element, name: str) -> str | None:
    el = tree.find(f".//{DAV}propstat/{DAV}prop/{name}")
    return None if el is None else (el.text or "")


def test_propfind_sizes_and_quota(server_factory):
    srv = server_factory(users={"dora": "10MB"})
    s = srv.session("dora")
    sizes = [0, 1, CHUNK, CHUNK + 1, 3 * MiB + 7]
    for i, n in enumerate(sizes):
        assert s.put(srv.url("dora", f"f{i}.bin"), data=os.urandom(n)).status_code == 201
    for i, n in enumerate(sizes):
        t = propfind(s, srv.url("dora", f"f{i}.bin"))
        assert prop(t, f"{DAV}getcontentlength") == str(n)
    t = propfind(s, srv.url("dora"), body=(
        b'<d:propfind xmlns:d="DAV:"><d:prop><d:quota-used-bytes/>'
        b'<d:quota-available-bytes/></d:prop></d:propfind>'))
    used = int(prop(t, f"{DAV}quota-used-bytes"))
    avail = int(prop(t, f"{DAV}quota-available-bytes"))
    assert used == sum(sizes)
    assert avail == 10 * MiB - sum(sizes)


def test_etag_changes_on_put_and_is_stable(server):
    s = server.session("alice")
    url = server.url("alice", "etag.txt")
    seen = []
    for _ in range(3):
        assert s.put(url, data=b"same content").status_code in (201, 204)
        e1 = prop(propfind(s, url), f"{DAV}getetag")
        e2 = prop(propfind(s, url), f"{DAV}getetag")
        assert e1 and e1 == e2, (e1, e2)
        assert s.head(url).headers["ETag"].strip('"') == e1.strip('"')
        seen.append(e1)
    assert len(set(seen)) == 3, seen


def test_dead_property_and_lock_survive_restart(server_factory):
    srv = server_factory(users={"alice": None})
    s = srv.session("alice")
    url = srv.url("alice", "props.txt")
    locked = srv.url("alice", "locked.txt")
    assert s.put(url, data=b"p").status_code == 201
    assert s.put(locked, data=b"v1").status_code == 201
    r = s.request("PROPPATCH", url, headers={"Content-Type": "application/xml"}, data=(
        '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:" xmlns:z="urn:test">'
        '<d:set><d:prop><z:colour>grün &amp; blau</z:colour></d:prop></d:set>'
        '</d:propertyupdate>').encode())
    assert r.status_code == 207 and "200 OK" in r.text, r.text
    r = s.request("LOCK", locked, headers={"Timeout": "Second-3600", "Depth": "0"}, data=(
        b'<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
        b'</d:lockscope><d:locktype><d:write/></d:locktype><d:owner>tests</d:owner>'
        b'</d:lockinfo>'))
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"].strip("<>")
    s.close()

    srv.restart()
    s = srv.session("alice")
    body = (b'<d:propfind xmlns:d="DAV:" xmlns:z="urn:test"><d:prop><z:colour/></d:prop>'
            b'</d:propfind>')
    t = propfind(s, url, body=body)
    assert prop(t, "{urn:test}colour") == "grün & blau"
    # the lock is still there: a write without the token is refused ...
    assert s.put(locked, data=b"v2").status_code == 423
    assert prop(propfind(s, locked), f"{DAV}lockdiscovery") is not None
    assert token in s.request("PROPFIND", locked, headers={"Depth": "0"}).text
    # ... a write with it works, and UNLOCK with the token succeeds
    r = s.put(locked, data=b"v3", headers={"If": f"(<{token}>)"})
    assert r.status_code == 204, r.text
    r = s.request("UNLOCK", locked, headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204, r.text
    assert s.put(locked, data=b"v4").status_code == 204
    assert s.get(locked).content == b"v4"


def test_move_and_copy_keep_content(server):
    s = server.session("alice")
    u = server.url
    data = os.urandom(CHUNK + 99)
    assert s.request("MKCOL", u("alice", "mc")).status_code == 201
    assert s.put(u("alice", "mc/f.bin"), data=data).status_code == 201
    assert s.request("MKCOL", u("alice", "mc/dir")).status_code == 201
    assert s.put(u("alice", "mc/dir/inner.txt"), data=b"inner").status_code == 201
    assert s.request("MKCOL", u("alice", "mc/dir/sub")).status_code == 201
    assert s.put(u("alice", "mc/dir/sub/deep.bin"), data=data[::-1]).status_code == 201

    r = s.request("COPY", u("alice", "mc/f.bin"), headers={"Destination": u("alice",
                                                                           "mc/f-copy.bin")})
    assert r.status_code == 201, r.text
    r = s.request("MOVE", u("alice", "mc/f.bin"), headers={"Destination": u("alice",
                                                                           "mc/f-moved.bin")})
    assert r.status_code == 201, r.text
    assert s.get(u("alice", "mc/f.bin")).status_code == 404
    assert s.get(u("alice", "mc/f-copy.bin")).content == data
    assert s.get(u("alice", "mc/f-moved.bin")).content == data

    r = s.request("COPY", u("alice", "mc/dir"), headers={"Destination": u("alice",
                                                                         "mc/dir-copy")})
    assert r.status_code == 201, r.text
    r = s.request("MOVE", u("alice", "mc/dir"), headers={"Destination": u("alice",
                                                                         "mc/dir-moved")})
    assert r.status_code == 201, r.text
    assert s.get(u("alice", "mc/dir/inner.txt")).status_code == 404
    for d in ("dir-copy", "dir-moved"):
        assert s.get(u("alice", f"mc/{d}/inner.txt")).content == b"inner"
        assert s.get(u("alice", f"mc/{d}/sub/deep.bin")).content == data[::-1]
    # a copy is independent of its source
    assert s.put(u("alice", "mc/dir-copy/inner.txt"), data=b"changed").status_code == 204
    assert s.get(u("alice", "mc/dir-moved/inner.txt")).content == b"inner"
    # via the /remote.php/webdav/ alias too
    r = s.get(f"{server.base}/remote.php/webdav/mc/f-moved.bin")
    assert r.status_code == 200 and r.content == data


def test_copy_move_into_other_home_refused(server):
    a, b = server.session("alice"), server.session("bob")
    assert a.put(server.url("alice", "mine.txt"), data=b"alice data").status_code in (201,
                                                                                      204)
    assert b.put(server.url("bob", "bobs.txt"), data=b"bob data").status_code in (201, 204)
    for method in ("COPY", "MOVE"):
        for dest in (server.url("bob", "x"), "/remote.php/dav/files/bob/x",
                     server.url("bob", "bobs.txt")):
            r = a.request(method, server.url("alice", "mine.txt"),
                          headers={"Destination": dest, "Overwrite": "T"})
            assert r.status_code in (403, 404, 409, 502), (method, dest, r.status_code)
            assert "Traceback" not in r.text
    assert a.get(server.url("alice", "mine.txt")).content == b"alice data"
    assert b.get(server.url("bob", "x")).status_code == 404
    assert b.get(server.url("bob", "bobs.txt")).content == b"bob data"
    assert a.get(server.url("bob", "bobs.txt")).status_code == 404
    assert a.get(server.url("bob", "x")).status_code == 404
    r = a.request("PROPFIND", server.url("bob"), headers={"Depth": "1"})
    assert r.status_code == 404 and "bobs.txt" not in r.text
    # and bob cannot pull alice's file into his home either
    r = b.request("COPY", server.url("alice", "mine.txt"),
                  headers={"Destination": server.url("bob", "stolen.txt")})
    assert r.status_code == 404
    assert b.get(server.url("bob", "stolen.txt")).status_code == 404
    assert not re.search(r"stolen", " ".join(os.listdir(Path(server.data_dir) / "files" /
                                                        "bob")))
