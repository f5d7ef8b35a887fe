"""The real Nextcloud desktop client (nextcloudcmd, headless) syncing two ways against
davserver, in master-key and user-key mode: every phase checked byte for byte on both
sides, transfers counted from the client's own request log."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.live import LiveServer, require_tool, wait_until

MB = 1_000_000
# Qt's operation numbers in the client's request log: 2 GET, 3 PUT, 5 DELETE, 6 custom verb.
_REQUEST = re.compile(r'accessmanager \]:\s+(\d) "([A-Z]*)" "([^"]+)"')
_VERBS = {"2": "GET", "3": "PUT", "4": "POST", "5": "DELETE"}


class Client:
    """One sync folder and the nextcloudcmd runs on it."""

    def __init__(self, server: LiveServer, root: Path, user: str = "alice",
                 password: str | None = None) -> None:
        self.exe = require_tool("nextcloudcmd")
        self.server = server
        self.user = user
        self.password = password or server.users[user]
        self.local = root / "local"
        self.home = root / "home"
        self.local.mkdir(parents=True)
        self.home.mkdir(parents=True)
        self.runs = 0

    def _cmd(self, *extra: str) -> tuple[list[str], dict]:
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(self.home),
                   XDG_CONFIG_HOME=str(self.home / ".config"))
        return ([self.exe, "--non-interactive", "--logdebug", "--max-sync-retries", "1",
                 "-u", self.user, "-p", self.password, *extra,
                 str(self.local), self.server.base], env)

    def start(self, *extra: str) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.home / f"run{self.runs}.log"
        cmd, env = self._cmd(*extra)
        with open(log, "wb") as f:
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        return proc, log

    def sync(self, *, expect_ok: bool = True) -> Counter:
        """One sync run; the requests it made, as Counter of (verb, area)."""
        proc, log = self.start()
        try:
            rc = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        text = log.read_text(errors="replace")
        if expect_ok:
            assert rc == 0, (f"nextcloudcmd exited {rc}:\n{text[-4000:]}\n"
                             f"{self.server.log_tail(20)}")
        else:
            assert rc != 0, "nextcloudcmd succeeded"
        return requests_in(text)


def requests_in(log_text: str) -> Counter:
    out: Counter = Counter()
    for op, verb, url in _REQUEST.findall(log_text):
        verb = verb or _VERBS.get(op, op)
        area = "uploads" if "/remote.php/dav/uploads/" in url else \
            "files" if "/remote.php/dav/files/" in url else "other"
        out[(verb, area)] += 1
        if area == "uploads" and verb == "PUT":
            out[("chunk", unquote(url).rsplit("/", 1)[-1])] += 1
    return out


def transfers(reqs: Counter) -> int:
    """Requests that move or change data (a no-op sync makes none)."""
    return sum(n for (verb, area), n in reqs.items()
               if verb in ("GET", "PUT", "DELETE", "MKCOL", "MOVE") and area != "other")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_tree(root: Path, *, skip_conflicts: bool = False) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # the client's journal and logs
        if skip_conflicts and "conflicted copy" in rel:
            continue
        out[rel + "/" if p.is_dir() else rel] = "" if p.is_dir() else digest(p.read_bytes())
    return out


def remote_tree(server: LiveServer, user: str = "alice") -> dict[str, str]:
    s = server.session(user)
    prefix = f"/remote.php/dav/files/{user}/"
    out: dict[str, str] = {}
    todo = [""]
    while todo:
        folder = todo.pop()
        r = s.request("PROPFIND", server.url(user, folder), headers={"Depth": "1"})
        assert r.status_code == 207, r.text
        for resp in ET.fromstring(r.content).findall("{DAV:}response"):
            rel = unquote(resp.findtext("{DAV:}href"))[len(prefix):]
            if rel.rstrip("/") == folder.rstrip("/"):
                continue
            if resp.find(".//{DAV:}collection") is not None:
                out[rel.rstrip("/") + "/"] = ""
                todo.append(rel)
            else:
                got = s.get(server.url(user, rel))
                assert got.status_code == 200, rel
                out[rel] = digest(got.content)
    return out


def assert_same(client: Client, **kw) -> None:
    assert local_tree(client.local, **kw) == remote_tree(client.server)


def write(p: Path, data: bytes, mtime: int = 0) -> None:
    """``mtime``: a distinct time in the past (the client distrusts future times and
    files that changed in the last moments)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if mtime:
        os.utime(p, (mtime, mtime))


@pytest.fixture(scope="module", params=["master-key", "user-key"])
def server(request, tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp(f"ncc-{request.param}"), {"alice": None},
                   {"encryption": {"kdf_memory_kib": 8192, "kdf_time_cost": 1}})
    s.create()
    if request.param == "user-key":
        s.run_cli("encryption:disable-master-key", "--yes")
    try:
        yield s.start()
    finally:
        s.stop()


def test_two_way_sync_phases(server, tmp_path):
    c = Client(server, tmp_path)
    s = server.session("alice")
    big = os.urandom(35 * MB)
    write(c.local / "big.bin", big)
    for i in range(16):
        write(c.local / f"a/b/c{i % 3}/file{i}.bin", os.urandom(MB))
    write(c.local / "Grüße/naïve café.txt", "Grüße aus Köln\n".encode())
    write(c.local / "日本語/ファイル.txt", b"unicode names")
    write(c.local / "empty folder/.keep-me-not", b"")  # a hidden file: not synced
    (c.local / "empty folder/.keep-me-not").unlink()

    # 1. First sync: everything goes up; the big file in chunks.
    reqs = c.sync()
    assert reqs[("MOVE", "uploads")] >= 1 and sum(
        n for (k, _v), n in reqs.items() if k == "chunk") >= 2, reqs
    assert_same(c)
    assert s.get(server.url("alice", "big.bin")).content == big
    assert not list((Path(server.data_dir) / "files" / ".uploads").rglob("*.*"))

    # 2. No-op: nothing to transfer.
    reqs = c.sync()
    assert transfers(reqs) == 0, reqs

    # 3. Remote add deep in the tree.
    for d in ("x", "x/y", "x/y/z"):
        assert s.request("MKCOL", server.url("alice", d)).status_code == 201
    assert s.put(server.url("alice", "x/y/z/deep.txt"), data=b"deep").status_code == 201
    c.sync()
    assert (c.local / "x/y/z/deep.txt").read_bytes() == b"deep"
    assert_same(c)

    # 4. Remote modify.
    assert s.put(server.url("alice", "a/b/c0/file0.bin"), data=b"changed remotely").status_code \
        == 204
    c.sync()
    assert (c.local / "a/b/c0/file0.bin").read_bytes() == b"changed remotely"
    assert_same(c)

    # 5. Local delete.
    (c.local / "a/b/c1/file1.bin").unlink()
    c.sync()
    assert s.get(server.url("alice", "a/b/c1/file1.bin")).status_code == 404
    assert_same(c)

    # 6. Remote delete.
    assert s.delete(server.url("alice", "a/b/c2/file2.bin")).status_code == 204
    c.sync()
    assert not (c.local / "a/b/c2/file2.bin").exists()
    assert_same(c)

    # 7. Local modify.
    write(c.local / "Grüße/naïve café.txt", b"changed locally", mtime=1_600_000_000)
    c.sync()
    assert s.get(server.url("alice", "Grüße/naïve café.txt")).content == b"changed locally"
    assert_same(c)

    # 8. A real conflict: both sides changed; the server's version takes the name, the
    # local one is kept as a conflict copy. Nothing is lost.
    write(c.local / "x/y/z/deep.txt", b"local side", mtime=1_600_000_100)
    assert s.put(server.url("alice", "x/y/z/deep.txt"), data=b"server side").status_code == 204
    c.sync()
    assert (c.local / "x/y/z/deep.txt").read_bytes() == b"server side"
    copies = [p for p in (c.local / "x/y/z").iterdir() if "conflicted copy" in p.name]
    assert len(copies) == 1 and copies[0].read_bytes() == b"local side"
    assert_same(c, skip_conflicts=True)
    remote = remote_tree(server)
    assert all("conflicted copy" not in k or v == digest(b"local side")
               for k, v in remote.items())

    # 9. No-op again.
    reqs = c.sync()
    assert transfers(reqs) == 0, reqs


def test_interrupted_chunked_upload_resumes(server, tmp_path):
    c = Client(server, tmp_path)
    c.sync()  # an initial, empty sync
    data = os.urandom(40 * MB)
    write(c.local / "resume.bin", data)
    session = server.session("alice")
    uploads = f"{server.base}/remote.php/dav/uploads/alice"

    def hrefs(url: str) -> list[str]:
        r = session.request("PROPFIND", url, headers={"Depth": "1"}, timeout=10)
        assert r.status_code == 207, r.text
        return [unquote(h.text).rstrip("/").rsplit("/", 1)[-1]
                for h in ET.fromstring(r.content).iter("{DAV:}href")][1:]

    def stored_chunks() -> list[str]:
        """The chunks the server lists (what a resuming client skips)."""
        return [c for u in hrefs(uploads) for c in hrefs(f"{uploads}/{u}")]

    proc, _log = c.start("--uplimit", "5000")  # KB/s: ~8 s for the whole file
    try:
        assert wait_until(lambda: stored_chunks() or proc.poll() is not None, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done = set(stored_chunks())
    assert done, "the client finished before it could be interrupted"
    assert s_get(server, "resume.bin").status_code == 404  # nothing half-visible
    reqs = c.sync()
    again = {k[1] for k in reqs if k[0] == "chunk"}
    assert again and not (again & done), (again, done)  # finished chunks not re-sent
    assert s_get(server, "resume.bin").content == data
    assert_same(c)


def s_get(server: LiveServer, path: str):
    return server.session("alice").get(server.url("alice", path))
