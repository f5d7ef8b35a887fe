"""Every read and write path of the WebDAV server in every encryption state.

An upload with encryption disabled once answered 500 while 506 tests passed: none of
them ran a server in that state. Here each state is built once through the admin CLI (as
an admin would reach it), then served four ways -- the direct fast path and the WsgiDAV
path, each with one and with two worker processes -- and every operation runs against
each of those servers over real HTTP. Each case checks the status, the bytes read back,
and what lies on disk: ciphertext (the format's magic, its key wrapped for the master key
or, in user-key mode, for the user) where the state encrypts, the exact plaintext where it
does not, and for a MOVE the very blob that was there before. A job killed half-way is
looked at twice: as it leaves the instance (maintenance on: every request a 503 with
Retry-After, nothing changed on disk) and after an admin switched maintenance off without
re-running it (every operation works on the half-converted files).

Operations on existing files run on two seed files, ``f0`` and ``f1``. In the mixed
states they differ: ``f0`` was written while encryption was off; ``f1`` was written with it
on (mixed) or is whatever form the interrupted job left it in (the state checks that both
forms occur). Each variant of a state works in its own folder, so the four servers of a
state share one data directory without meeting each other's files.

Nextcloud's chunked upload (``/remote.php/dav/uploads``) is one more operation: a new file
and an overwrite of each seed, with the chunks at rest checked for the state's form.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from davserver.crypto import header as hdr
from tests.live import LiveServer

MAGIC = b"DAVSSE"
QUOTA = 200_000
KDF = {"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1}
LOCK_BODY = ('<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
             '</d:lockscope><d:locktype><d:write/></d:locktype></d:lockinfo>')
PROPFIND_BODY = ('<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getcontentlength/>'
                 '<d:getetag/><d:resourcetype/></d:prop></d:propfind>')

#: (name, fast_files, workers): the ways a state is served.
VARIANTS = [("fast-w1", True, 1), ("dav-w1", False, 1), ("fast-w2", True, 2),
            ("dav-w2", False, 2)]
SOURCES = ("f0", "f1")


def payload(name: str, size: int = 70_000) -> bytes:
    """Distinct, reproducible content per name, larger than one encryption chunk."""
    return random.Random(name).randbytes(size)


# --- the states -----------------------------------------------------------------------


KILLER = r"""
import os, signal, sys
from davserver.storage import local
calls, limit = [0], int(sys.argv[1])

def counted(orig):
    # commit: one file alone; publish: a file's rename within a batch of small files
    def step(self, *a, **k):
        orig(self, *a, **k)
        calls[0] += 1
        if calls[0] >= limit:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return step

local._FileWriter.commit = counted(local._FileWriter.commit)
local._FileWriter.publish = counted(local._FileWriter.publish)
from davserver.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def kill_half_way(srv: LiveServer, job: str, files: int) -> None:
    """Run ``job`` and SIGKILL it right after half of the files have been committed."""
    cmd = [sys.executable, "-c", KILLER, str(files // 2), f"encryption:{job}", "--yes",
           "--config", srv.config, "--data-dir", srv.data_dir]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert res.returncode == -signal.SIGKILL, f"{job} was not interrupted:\n{res.stderr}"


@dataclass
class State:
    name: str
    #: Does a write in this state store ciphertext?
    encrypts: bool
    #: CLI commands before anything is stored.
    before: list[list[str]] = field(default_factory=list)
    #: CLI commands between writing f0 and f1 (the server is stopped meanwhile).
    between: list[list[str]] = field(default_factory=list)
    #: What happens to the data dir after both seeds are stored (server stopped).
    after: Callable[[LiveServer, int], None] | None = None
    #: Both forms must be on disk among the seeds (the state is a mixture).
    mixed: bool = False
    #: Every request is answered 503 (a killed job left maintenance mode on).
    maintenance: bool = False
    #: Whom a new file's key is wrapped for: the master key or the user's own key.
    wrapped_to: str = "master"


def _cli(*cmds: list[str]) -> Callable[[LiveServer, int], None]:
    def run(srv: LiveServer, _files: int) -> None:
        for cmd in cmds:
            srv.run_cli(*cmd)
    return run


def _killed(job: str, *, then_off: bool) -> Callable[[LiveServer, int], None]:
    def run(srv: LiveServer, files: int) -> None:
        if job == "encrypt-all":
            srv.run_cli("encryption:enable")
        kill_half_way(srv, job, files)
        if then_off:  # the admin lets clients back in without re-running the job
            srv.run_cli("maintenance:mode", "--off")
    return run


DISABLE = ["encryption:disable"]
STATES = [
    State("never-enabled", False, before=[DISABLE]),
    State("master-key", True),
    State("user-key", True, before=[["encryption:disable-master-key", "--yes"]],
          wrapped_to="user"),
    State("decrypted", False, after=_cli(["encryption:decrypt-all", "--yes"])),
    State("mixed", True, before=[DISABLE], between=[["encryption:enable"]], mixed=True),
    State("encrypt-all-killed", True, before=[DISABLE],
          after=_killed("encrypt-all", then_off=True), mixed=True),
    State("decrypt-all-killed", True, after=_killed("decrypt-all", then_off=True),
          mixed=True),
    State("encrypt-all-killed-maintenance", False, before=[DISABLE],
          after=_killed("encrypt-all", then_off=False), mixed=True, maintenance=True),
]


# --- the operations -------------------------------------------------------------------


class Ctx:
    """One state served one way: requests, and the disk as the case sees it."""

    def __init__(self, srv: LiveServer, state: State, variant: str, workers: int) -> None:
        self.srv, self.state, self.variant, self.workers = srv, state, variant, workers
        self.user = "alice"
        self.seeds: dict[str, bytes] = {}   # rel -> on-disk blob before the case ran
        self.sessions: dict[str, requests.Session] = {}

    def url(self, rel: str, user: str | None = None) -> str:
        return self.srv.url(user or self.user, rel)

    def req(self, method: str, rel: str, *, user: str | None = None, **kw) -> requests.Response:
        user = user or self.user
        kw.setdefault("timeout", 30)
        if self.workers > 1:
            # A new connection per request: consecutive requests of one case land on
            # either process.
            kw["headers"] = {"Connection": "close", **kw.get("headers", {})}
            return requests.request(method, self.url(rel, user), auth=self.srv.auth(user),
                                    **kw)
        if user not in self.sessions:
            self.sessions[user] = self.srv.session(user)
        return self.sessions[user].request(method, self.url(rel, user), **kw)

    def path(self, rel: str, user: str | None = None) -> Path:
        return Path(self.srv.data_dir) / "files" / (user or self.user) / rel

    def disk(self, rel: str, user: str | None = None) -> bytes | None:
        try:
            return self.path(rel, user).read_bytes()
        except FileNotFoundError:
            return None

    def rel(self, name: str) -> str:
        return f"{self.variant}/{name}"

    def assert_stored(self, rel: str, plain: bytes) -> None:
        """The blob at ``rel`` is ``plain`` in the form the state writes."""
        blob = self.disk(rel)
        assert blob is not None, f"{rel} is not on disk"
        if self.state.encrypts:
            assert blob.startswith(MAGIC), f"{rel}: plaintext on disk, ciphertext expected"
            assert not plain or plain[:64] not in blob
            fid = hdr.parse(blob[:hdr.HEADER_BYTES]).file_id.hex()
            key = Path(self.srv.data_dir) / "keys" / "files" / fid[:2] / f"{fid}.json"
            wraps = json.loads(key.read_text())["wraps"]
            assert {w["to"].split(":")[0] for w in wraps} == {self.state.wrapped_to}, wraps
        else:
            assert blob == plain, f"{rel}: on disk is not the exact plaintext"

    def assert_reads(self, rel: str, plain: bytes) -> None:
        r = self.req("GET", rel)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert r.content == plain


def _seed_name(op: str, src: str) -> str:
    return f"{op}-{src}.bin"


def _target_name(op: str, src: str) -> str:
    """An existing destination in the other seed's form (in the mixed states)."""
    return f"{op}-{src}-target-{SOURCES[1 - SOURCES.index(src)]}.bin"


def op_put_new(c: Ctx, src: None) -> None:
    rel, data = c.rel("new.bin"), payload(c.variant + "new")
    r = c.req("PUT", rel, data=data)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    c.assert_reads(rel, data)
    c.assert_stored(rel, data)


MTIME = 1_500_000_000  # 2017-07-14 02:40:00 UTC
MTIME_HTTP = "Fri, 14 Jul 2017 02:40:00 GMT"


def op_put_empty(c: Ctx, src: None) -> None:
    """An empty file, under a name that needs percent-encoding."""
    rel = c.rel("leer ü € #1.bin")
    r = c.req("PUT", rel.replace("#", "%23"), data=b"")
    assert r.status_code == 201, (r.status_code, r.text[:300])
    got = c.req("GET", rel.replace("#", "%23"))
    assert got.status_code == 200 and got.content == b""
    c.assert_stored(rel, b"")
    r = c.req("PROPFIND", rel.replace("#", "%23"), data=PROPFIND_BODY, headers={"Depth": "0"})
    assert r.status_code == 207 and "<d:getcontentlength>0</d:getcontentlength>" in r.text


def op_put_mtime(c: Ctx, src: str | None) -> None:
    """X-OC-Mtime (sync clients) is what GET and PROPFIND report afterwards, and the ETag
    the PUT answered is the one they report, whatever form the file is stored in."""
    rel = c.rel(_seed_name("put_mtime", src) if src else "mtime-new.bin")
    data = payload(rel + "m", 4000)
    r = c.req("PUT", rel, data=data, headers={"X-OC-Mtime": str(MTIME)})
    assert r.status_code == (204 if src else 201), (r.status_code, r.text[:300])
    etag = r.headers.get("ETag")
    got = c.req("GET", rel)
    assert got.content == data and got.headers["Last-Modified"] == MTIME_HTTP
    assert etag is None or got.headers["ETag"] == etag, (etag, got.headers["ETag"])
    r = c.req("PROPFIND", rel, data=PROPFIND_BODY.replace(
        "<d:getetag/>", "<d:getetag/><d:getlastmodified/>"), headers={"Depth": "0"})
    assert r.status_code == 207 and MTIME_HTTP in r.text, r.text[:600]
    bare = got.headers["ETag"].strip('"')
    assert f">{bare}<" in r.text.replace("&quot;", ""), r.text[:600]
    c.assert_stored(rel, data)


def op_put_overwrite(c: Ctx, src: str) -> None:
    rel, data = c.rel(_seed_name("put_overwrite", src)), payload(c.variant + "over" + src, 5000)
    r = c.req("PUT", rel, data=data)
    assert r.status_code == 204, (r.status_code, r.text[:300])
    c.assert_reads(rel, data)
    c.assert_stored(rel, data)


def op_put_content_range(c: Ctx, src: str) -> None:
    """A partial PUT is refused (it would need a read-modify-write of the whole file)."""
    rel = c.rel(_seed_name("put_content_range", src))
    r = c.req("PUT", rel, data=b"xyz", headers={"Content-Range": "bytes 0-2/3"})
    assert r.status_code in (400, 501), (r.status_code, r.text[:300])
    assert "Content-Range" in r.text or "range" in r.text.lower(), r.text[:300]
    assert c.disk(rel) == c.seeds[rel]
    c.assert_reads(rel, payload(rel))


def op_copy(c: Ctx, src: str) -> None:
    rel, dst = c.rel(_seed_name("copy", src)), c.rel(f"copy-{src}-dst.bin")
    r = c.req("COPY", rel, headers={"Destination": c.url(dst)})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    c.assert_reads(dst, payload(rel))
    c.assert_stored(dst, payload(rel))
    assert c.disk(rel) == c.seeds[rel]
    c.assert_reads(rel, payload(rel))


def op_move(c: Ctx, src: str) -> None:
    rel, dst = c.rel(_seed_name("move", src)), c.rel(f"move-{src}-dst.bin")
    r = c.req("MOVE", rel, headers={"Destination": c.url(dst)})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    assert c.disk(rel) is None
    assert c.disk(dst) == c.seeds[rel]  # the blob moves as it is
    c.assert_reads(dst, payload(rel))
    assert c.req("GET", rel).status_code == 404


def op_copy_overwrite(c: Ctx, src: str) -> None:
    rel, dst = c.rel(_seed_name("copy_overwrite", src)), c.rel(_target_name("copy_overwrite", src))
    r = c.req("COPY", rel, headers={"Destination": c.url(dst), "Overwrite": "T"})
    assert r.status_code == 204, (r.status_code, r.text[:300])
    c.assert_reads(dst, payload(rel))
    c.assert_stored(dst, payload(rel))
    assert c.disk(rel) == c.seeds[rel]


def op_move_overwrite(c: Ctx, src: str) -> None:
    rel, dst = c.rel(_seed_name("move_overwrite", src)), c.rel(_target_name("move_overwrite", src))
    r = c.req("MOVE", rel, headers={"Destination": c.url(dst), "Overwrite": "T"})
    assert r.status_code == 204, (r.status_code, r.text[:300])
    assert c.disk(rel) is None
    assert c.disk(dst) == c.seeds[rel]
    c.assert_reads(dst, payload(rel))


def op_delete(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("delete", src))
    r = c.req("DELETE", rel)
    assert r.status_code == 204, (r.status_code, r.text[:300])
    assert c.disk(rel) is None
    assert c.req("GET", rel).status_code == 404


def op_mkcol(c: Ctx, src: None) -> None:
    rel = c.rel("newdir")
    r = c.req("MKCOL", rel)
    assert r.status_code == 201, (r.status_code, r.text[:300])
    assert c.path(rel).is_dir()
    data = payload(c.variant + "indir")
    assert c.req("PUT", rel + "/inside.bin", data=data).status_code == 201
    c.assert_reads(rel + "/inside.bin", data)
    c.assert_stored(rel + "/inside.bin", data)


def _locked_put(c: Ctx, rel: str, data: bytes, expect: int) -> None:
    r = c.req("LOCK", rel, data=LOCK_BODY, headers={"Depth": "0", "Timeout": "Second-60"})
    assert r.status_code in (200, 201), (r.status_code, r.text[:300])
    token = r.headers["Lock-Token"].strip("<>")
    try:
        assert c.req("PUT", rel, data=b"no token").status_code == 423
        r = c.req("PUT", rel, data=data, headers={"If": f"(<{token}>)"})
        assert r.status_code == expect, (r.status_code, r.text[:300])
    finally:
        assert c.req("UNLOCK", rel, headers={"Lock-Token": f"<{token}>"}).status_code == 204
    c.assert_reads(rel, data)
    c.assert_stored(rel, data)


def op_lock_put_new(c: Ctx, src: None) -> None:
    rel = c.rel("locked-new.bin")
    _locked_put(c, rel, payload(rel + "x"), 204)  # the LOCK made an empty file


def op_lock_put_overwrite(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("lock_put_overwrite", src))
    _locked_put(c, rel, payload(rel + "x", 3000), 204)


def op_quota_refused(c: Ctx, src: None) -> None:
    rel = f"{c.variant}-too-big.bin"
    r = c.req("PUT", rel, user="quinn", data=payload(rel, QUOTA + 1000))
    assert r.status_code == 507, (r.status_code, r.text[:300])
    assert c.disk(rel, "quinn") is None
    assert c.req("GET", rel, user="quinn").status_code == 404


def op_quota_overwrite_refused(c: Ctx, src: None) -> None:
    """A replacement that does not fit is refused and the old version stays."""
    rel = f"{c.variant}-fits.bin"
    data = payload(rel, QUOTA // 8)
    assert c.req("PUT", rel, user="quinn", data=data).status_code == 201
    blob = c.disk(rel, "quinn")
    assert blob is not None and blob.startswith(MAGIC) == c.state.encrypts
    r = c.req("PUT", rel, user="quinn", data=payload(rel + "big", QUOTA + 1))
    assert r.status_code == 507, (r.status_code, r.text[:300])
    assert c.disk(rel, "quinn") == blob
    assert c.req("GET", rel, user="quinn").content == data


def op_put_if_match(c: Ctx, src: str) -> None:
    """Conditional PUTs (always WsgiDAV's evaluation) work with the ETag GET reported."""
    rel = c.rel(_seed_name("put_if_match", src))
    etag = c.req("GET", rel).headers["ETag"]
    assert c.req("GET", rel, headers={"If-None-Match": etag}).status_code == 304
    data = payload(rel + "m", 3000)
    r = c.req("PUT", rel, data=b"stale", headers={"If-Match": '"not-the-etag"'})
    assert r.status_code == 412, (r.status_code, r.text[:300])
    assert c.disk(rel) == c.seeds[rel]
    r = c.req("PUT", rel, data=data, headers={"If-Match": etag})
    assert r.status_code == 204, (r.status_code, r.text[:300])
    c.assert_reads(rel, data)
    c.assert_stored(rel, data)


TREE = ("a-f0.bin", "b-f1.bin")  # each folder op's folder: one file of each seed phase


def _tree(c: Ctx, op: str) -> tuple[str, dict[str, bytes]]:
    folder = c.rel(op)
    return folder, {name: payload(f"{folder}/{name}") for name in TREE}


def op_copy_folder(c: Ctx, src: None) -> None:
    folder, files = _tree(c, "copy_folder")
    r = c.req("COPY", folder, headers={"Destination": c.url(folder + "-copy"), "Depth": "infinity"})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    for name, data in files.items():
        c.assert_reads(f"{folder}-copy/{name}", data)
        c.assert_stored(f"{folder}-copy/{name}", data)
        assert c.disk(f"{folder}/{name}") == c.seeds[f"{folder}/{name}"]


def op_move_folder(c: Ctx, src: None) -> None:
    folder, files = _tree(c, "move_folder")
    r = c.req("MOVE", folder, headers={"Destination": c.url(folder + "-moved")})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    assert not c.path(folder).exists()
    for name, data in files.items():
        assert c.disk(f"{folder}-moved/{name}") == c.seeds[f"{folder}/{name}"]
        c.assert_reads(f"{folder}-moved/{name}", data)


def op_delete_folder(c: Ctx, src: None) -> None:
    folder, _files = _tree(c, "delete_folder")
    r = c.req("DELETE", folder)
    assert r.status_code == 204, (r.status_code, r.text[:300])
    assert not c.path(folder).exists()
    assert c.req("PROPFIND", folder, headers={"Depth": "0"}).status_code == 404


def op_propfind_listing(c: Ctx, src: None) -> None:
    """A listing of files of both forms: sizes are plaintext sizes and ETags are GET's."""
    folder, files = _tree(c, "propfind_listing")
    r = c.req("PROPFIND", folder, data=PROPFIND_BODY, headers={"Depth": "1"})
    assert r.status_code == 207, (r.status_code, r.text[:300])
    text = r.text.replace("&quot;", "")
    for name, data in files.items():
        part = text.split(f"{folder}/{name}</d:href>", 1)[1].split("</d:response>", 1)[0]
        assert f"<d:getcontentlength>{len(data)}</d:getcontentlength>" in part, part
        bare = c.req("HEAD", f"{folder}/{name}").headers["ETag"].strip('"')
        assert f">{bare}<" in part, (bare, part)


def op_get(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("get", src))
    c.assert_reads(rel, payload(rel))
    assert c.disk(rel) == c.seeds[rel]


def op_head(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("head", src))
    r = c.req("HEAD", rel)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["Content-Length"]) == len(payload(rel))


def op_range_get(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("range_get", src))
    data = payload(rel)
    for first, last in ((0, 9), (65_530, 65_550), (len(data) - 5, len(data) - 1)):
        r = c.req("GET", rel, headers={"Range": f"bytes={first}-{last}"})
        assert r.status_code == 206, (r.status_code, r.text[:300])
        assert r.content == data[first:last + 1]
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"


def op_propfind(c: Ctx, src: str) -> None:
    rel = c.rel(_seed_name("propfind", src))
    r = c.req("PROPFIND", rel, data=PROPFIND_BODY, headers={"Depth": "0"})
    assert r.status_code == 207, (r.status_code, r.text[:300])
    assert f"<d:getcontentlength>{len(payload(rel))}</d:getcontentlength>" \
        in r.text.replace("ns0:", "d:").replace("D:", "d:"), r.text[:500]
    r = c.req("PROPFIND", c.variant, data=PROPFIND_BODY, headers={"Depth": "1"})
    assert r.status_code == 207 and _seed_name("propfind", src) in r.text


def op_chunked_upload(c: Ctx, src: str | None) -> None:
    """Nextcloud's chunked upload v2 (MKCOL, numbered chunks, MOVE of .file):
    the chunks are stored in the state's form too, and none is left after the MOVE."""
    rel = c.rel(_seed_name("chunked_upload", src) if src else "chunked-new.bin")
    data = payload(rel + "chunked", 150_000)
    upload = f"up-{c.variant}-{src or 'new'}"
    base = f"{c.srv.base}/remote.php/dav/uploads/{c.user}/{upload}"
    auth = c.srv.auth(c.user)

    def send(method: str, url: str, **kw) -> requests.Response:
        return requests.request(method, url, auth=auth, timeout=30, **kw)

    r = send("MKCOL", base, headers={"Destination": c.url(rel)})
    assert r.status_code == 201, (r.status_code, r.text[:300])
    parts = [data[i:i + 60_000] for i in range(0, len(data), 60_000)]
    # A new file's chunks go in order (written in place where the state allows), an
    # overwrite's last first (stored whole, assembled by streaming).
    for i in (reversed(range(len(parts))) if src else range(len(parts))):
        r = send("PUT", f"{base}/{i + 1:05d}", data=parts[i],
                 headers={"OC-Total-Length": str(len(data)), "Destination": c.url(rel)})
        assert r.status_code == 201, (r.status_code, r.text[:300])
    chunk_dir = Path(c.srv.data_dir) / "files" / ".uploads" / c.user / upload
    if chunk_dir.exists():  # chunks at rest take the state's form
        for blob in (p.read_bytes() for p in chunk_dir.iterdir() if p.is_file()):
            assert blob.startswith(MAGIC) == c.state.encrypts, blob[:16]
    r = send("MOVE", f"{base}/.file", headers={
        "Destination": c.url(rel), "OC-Total-Length": str(len(data))})
    assert r.status_code == (204 if src else 201), (r.status_code, r.text[:300])
    c.assert_reads(rel, data)
    c.assert_stored(rel, data)
    assert not chunk_dir.exists() or not any(chunk_dir.iterdir())


OPS: dict[str, Callable[[Ctx, str | None], None]] = {
    f.__name__[3:]: f for f in (
        op_put_new, op_put_empty, op_put_mtime, op_put_overwrite, op_put_content_range, op_copy,
        op_copy_overwrite, op_move, op_move_overwrite, op_delete, op_mkcol, op_lock_put_new,
        op_lock_put_overwrite, op_quota_refused, op_quota_overwrite_refused, op_get,
        op_head, op_range_get, op_propfind, op_put_if_match, op_copy_folder, op_move_folder,
        op_delete_folder, op_propfind_listing, op_chunked_upload)}
#: Operations on an existing file run once per seed; the others once.
ON_SEEDS = {"put_overwrite", "put_content_range", "copy", "copy_overwrite", "move",
            "move_overwrite", "delete", "lock_put_overwrite", "get", "head", "range_get",
            "propfind", "put_if_match"}
ON_NEW_AND_SEEDS = {"put_mtime", "chunked_upload"}
CASES = [(name, src) for name in OPS
         for src in ((None, *SOURCES) if name in ON_NEW_AND_SEEDS
                     else SOURCES if name in ON_SEEDS else (None,))]
#: Files each variant's folder holds before the cases run: name -> the phase writing it.
SEEDS = {_seed_name(name, src): src for name, src in CASES if src}
SEEDS.update({_target_name(name, src): SOURCES[1 - SOURCES.index(src)]
              for name, src in CASES if name in ("copy_overwrite", "move_overwrite")})
SEEDS.update({f"{op}/{name}": SOURCES[i] for op in OPS if op.endswith(("_folder", "_listing"))
              for i, name in enumerate(TREE)})


# --- building the states --------------------------------------------------------------


def _seed(srv: LiveServer, phase: str) -> None:
    """Store the seeds of ``phase`` in every variant's folder, through the server."""
    def put(rel: str) -> None:
        r = requests.put(srv.url("alice", rel), data=payload(rel), auth=srv.auth("alice"),
                         timeout=60)
        assert r.status_code == 201, (rel, r.status_code, r.text[:300])

    folders = sorted({name.rpartition("/")[0] for name in SEEDS} - {""})
    for variant, _fast, _workers in VARIANTS:
        for folder in [variant] + [f"{variant}/{f}" for f in folders]:
            requests.request("MKCOL", srv.url("alice", folder), auth=srv.auth("alice"),
                             timeout=60)  # 405 the second time
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, [f"{v}/{name}" for v, _f, _w in VARIANTS
                            for name, p in SEEDS.items() if p == phase]))
    # user-key mode: quinn's keys are made at the first login
    assert requests.request("PROPFIND", srv.url("quinn"), auth=srv.auth("quinn"), headers={
        "Depth": "0"}, timeout=60).status_code == 207


def _copy(srv: LiveServer, root: Path) -> LiveServer:
    shutil.copytree(srv.root, root)
    twin = LiveServer(root, {})
    twin.users, twin._config_doc = dict(srv.users), copy.deepcopy(srv._config_doc)
    return twin


def seed_instance(template: LiveServer, root: Path, state: State) -> LiveServer:
    """A copy of the template with the seeds stored as ``state`` says (before ``after``)."""
    srv = _copy(template, root)
    for cmd in state.before:
        srv.run_cli(*cmd)
    srv.start()
    try:
        _seed(srv, "f0")
        if state.between:
            srv.stop()
            for cmd in state.between:
                srv.run_cli(*cmd)
            srv.start()
        _seed(srv, "f1")
    finally:
        srv.stop()
    return srv


def build_state(seeded: LiveServer, root: Path, state: State) -> LiveServer:
    srv = _copy(seeded, root)
    if state.after:
        state.after(srv, len(SEEDS) * len(VARIANTS))
    return srv


def serve_variants(srv: LiveServer, variants: list[tuple]) -> dict[str, LiveServer]:
    """One server per variant on the state's data dir, started together (each with its
    own config file; secret, data and DB are shared, as by the nodes of a cluster)."""
    servers = {}
    for variant, fast, workers in variants:
        twin = LiveServer(srv.root, {})
        twin.users, twin._config_doc = srv.users, copy.deepcopy(srv._config_doc)
        twin.config = str(srv.etc / f"{variant}.toml")
        twin.log_path = srv.root / f"{variant}.log"
        twin.write_config(server={"workers": workers, "fast_files": fast},
                          encryption={"secret_file": str(srv.etc / "secret")})
        servers[variant] = twin
    for twin in servers.values():
        twin.spawn()
    for twin in servers.values():
        twin.wait_ready()
    return servers


def on_disk_forms(srv: LiveServer) -> set[bool]:
    files = Path(srv.data_dir) / "files" / "alice"
    return {p.read_bytes().startswith(MAGIC) for p in files.rglob("*.bin")}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Callable[[State], LiveServer]:
    """A fresh instance (init, users) with the seeds stored, one per way of storing them;
    states that differ only in what happens afterwards start from copies of the same."""
    template = LiveServer(tmp_path_factory.mktemp("template"),
                          {"alice": None, "quinn": str(QUOTA)},
                          {"encryption": KDF, "storage": {"fsync": False},
                           "server": {"workers": 1}}).create()
    made: dict[str, LiveServer] = {}

    def get(state: State) -> LiveServer:
        key = repr((state.before, state.between))
        if key not in made:
            made[key] = seed_instance(template, tmp_path_factory.mktemp("seeded") / "i", state)
        return made[key]

    return get


@pytest.fixture(scope="module")
def running() -> Iterator[dict[str, dict[str, LiveServer]]]:
    """The servers of the state under test: {state: {variant: server}}."""
    current: dict[str, dict[str, LiveServer]] = {}
    yield current
    for servers in current.values():
        for srv in servers.values():
            srv.stop()


#: (state, variant) pairs. In maintenance every answer is the same 503, so two ways of
#: serving it (one of each path, one of each worker count) suffice.
SERVED = [(s, v) for s, v in itertools.product(STATES, VARIANTS)
          if not s.maintenance or v[0] in ("fast-w1", "dav-w2")]


@pytest.fixture(scope="module", params=SERVED, ids=[f"{s.name}-{v[0]}" for s, v in SERVED])
def served(request, seeded, running, tmp_path_factory) -> Ctx:
    """The state built once (at its first variant) and served every way at once."""
    state, (variant, _fast, workers) = request.param
    if state.name not in running:
        for name in list(running):  # one state at a time on the machine
            for srv in running.pop(name).values():
                srv.stop()
        srv = build_state(seeded(state), tmp_path_factory.mktemp("s") / state.name, state)
        forms = on_disk_forms(srv)
        assert forms == ({True, False} if state.mixed else {state.encrypts}), forms
        running[state.name] = serve_variants(srv, [v for s, v in SERVED if s is state])
    ctx = Ctx(running[state.name][variant], state, variant, workers)
    ctx.seeds = {f"{variant}/{n}": ctx.disk(f"{variant}/{n}") for n in SEEDS}
    return ctx


@pytest.mark.parametrize(("op", "src"), CASES, ids=[f"{n}-{s}" if s else n for n, s in CASES])
def test_operation(served: Ctx, op: str, src: str | None) -> None:
    if served.state.maintenance:
        _assert_refused_in_maintenance(served, op, src)
    else:
        OPS[op](served, src)
    assert served.srv.tmp_files() == []


def _assert_refused_in_maintenance(c: Ctx, op: str, src: str | None) -> None:
    """A killed job left maintenance on: every request is a 503 and the disk is as the
    job left it."""
    rel = c.rel(_seed_name(op, src) if src else "new.bin")
    method = {"put_new": "PUT", "put_empty": "PUT", "put_mtime": "PUT", "put_overwrite": "PUT",
              "put_content_range": "PUT",
              "copy": "COPY", "move": "MOVE", "copy_overwrite": "COPY",
              "move_overwrite": "MOVE", "quota_overwrite_refused": "PUT",
              "delete": "DELETE", "mkcol": "MKCOL",
              "lock_put_new": "LOCK", "lock_put_overwrite": "LOCK", "quota_refused": "PUT",
              "put_if_match": "PUT", "copy_folder": "COPY", "move_folder": "MOVE",
              "delete_folder": "DELETE", "propfind_listing": "PROPFIND",
              "get": "GET", "head": "HEAD", "range_get": "GET", "propfind": "PROPFIND",
              "chunked_upload": "MKCOL"}[op]
    r = c.req(method, rel, data=b"x" if method == "PUT" else None,
              headers={"Destination": c.url(rel + ".dst")})
    assert r.status_code == 503, (r.status_code, r.text[:300])
    assert "Retry-After" in r.headers
    assert c.disk(rel) == c.seeds.get(rel)


@pytest.mark.parametrize("fast", [True, False])
def test_fast_files_setting_decides_the_path(tmp_path, fast):
    """Guards the variants above: ``[server] fast_files`` really takes the direct path
    out of (or leaves it in) the served app."""
    from davserver.dav.app import make_server
    from davserver.dav.fastfiles import FastFiles
    from tests.instances import make_instance

    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir()
    conf.write_text(f"[server]\nfast_files = {'true' if fast else 'false'}\n")
    inst = make_instance(tmp_path)
    try:
        assert inst.config.fast_files is fast
        layers, app = [], make_server(inst).wsgi_app
        while app is not None:  # Guard -> NextcloudLayer -> FastFiles? -> WsgiDAV
            layers.append(app)
            app = getattr(app, "app", None)
        assert any(isinstance(a, FastFiles) for a in layers) is fast
    finally:
        inst.close()
