#!/usr/bin/env python3
"""Soak: many clients doing mixed WebDAV work against one davserver node for minutes.

Why: the unit and integration tests each run one request pattern for a moment; leaks (memory,
file descriptors, lock entries), lost updates and races between workers only show after
thousands of overlapping requests. This script starts one node (bench/servers.py), runs
``--clients`` threads for ``--minutes``, each in its own folder (where it knows exactly what
must exist) plus a shared folder where all of them contend for the same few names, then
reads every file that must still exist back and checks its hash.

Every client remembers, for each of its files, the seed and size the content was generated
from (content is regenerated for checks, so 50 clients do not hold their files in memory).
In the shared folder the final content of a name must be one of the versions somebody
wrote, whole: never a mix, never a torn write.

While it runs, the RSS (sum over the server's processes) and the open file descriptors are
sampled every ``--sample`` seconds; the report gives the least-squares slope per minute.

    bench/soak.py                               # 50 clients x 10 minutes
    bench/soak.py --clients 5 --minutes 0.2     # smoke run (tests/test_soak_smoke.py)

Exit status: 0 no error and every file verified, 1 otherwise. The Markdown report goes to
``--results``/soak-<UTC ts>.md (and stdout); ``--json`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field

from defusedxml import ElementTree

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402  (bench/ is not a package)

MAX_SIZE = 1 << 20
SHARED_NAMES = 6
MAX_OWN_FILES = 12
DAV_NS = "{DAV:}"

OPS = (  # (name, weight)
    ("put", 22), ("get", 18), ("range", 10), ("propfind", 10), ("move", 6), ("copy", 6),
    ("delete", 6), ("mkcol", 3), ("lock", 5), ("shared_put", 6), ("shared_get", 6),
    ("shared_lock", 2),
)


def content(seed: int, size: int) -> bytes:
    """The bytes a (seed, size) pair stands for; regenerated instead of kept in memory."""
    return random.Random(seed).randbytes(size)


def answer_text(body: bytes) -> str:
    """The readable part of an error page (WsgiDAV's HTML or an XML error), shortened."""
    text = re.sub(r"<head>.*?</head>|<[^>]+>", " ", body.decode("utf-8", "replace"), flags=re.S)
    return " ".join(text.split())[:300]


def random_size(rng: random.Random, lo: int = 1, hi: int = MAX_SIZE) -> int:
    """lo .. hi bytes (default 1 B .. 1 MiB), log-uniform so small files (the common
    case) dominate."""
    return max(lo, min(hi, int(2 ** rng.uniform(math.log2(lo), math.log2(hi)))))


@dataclass
class Stats:
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # per op, for p50/p99

    def count(self, op: str, seconds: float = 0.0) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            self.seconds.setdefault(op, []).append(seconds)

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """(p50, p99) in milliseconds per operation."""
        out = {}
        with self.lock:
            for op, xs in sorted(self.seconds.items()):
                xs = sorted(xs)
                out[op] = (round(xs[len(xs) // 2] * 1000, 1),
                           round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 1))
        return out

    def error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)
        print(f"soak: ERROR {msg}", file=sys.stderr, flush=True)


class SharedVersions:
    """Every (seed, size) ever written to each shared name: what a reader may legally see."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, dict[str, tuple[int, int]]] = {}

    def add(self, name: str, seed: int, size: int) -> None:
        digest = hashlib.sha256(content(seed, size)).hexdigest()
        with self._lock:
            self._by_name.setdefault(name, {})[digest] = (seed, size)

    def legal(self, name: str, body: bytes) -> bool:
        with self._lock:
            return hashlib.sha256(body).hexdigest() in self._by_name.get(name, {})


class Conn:
    """One keep-alive HTTP connection, reopened after errors or a server-side close."""

    def __init__(self, port: int, auth: dict) -> None:
        self.port = port
        self.auth = auth
        self.c: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        h = dict(self.auth)
        h.update(headers or {})
        for attempt in (1, 2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if hdrs.get("connection", "").lower() == "close":
                    self.close()
                return r.status, hdrs, data
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                # a keep-alive connection the server closed while idle: retry once on a
                # fresh one; a second failure is a real error
                self.close()
                if attempt == 2:
                    raise ConnectionError(f"{method} {path}: {e!r}") from e
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None


class Client(threading.Thread):
    """One simulated user session working in ``c<N>/`` and in ``shared/``."""

    def __init__(self, n: int, base: str, port: int, auth: dict, stop_at: float,
                 stats: Stats, shared: SharedVersions, seed: int,
                 sizes: tuple[int, int] = (1, MAX_SIZE)) -> None:
        super().__init__(name=f"soak-client-{n}", daemon=True)
        self.n = n
        self.base = base
        self.folder = f"c{n}/"
        self.conn = Conn(port, auth)
        self.stop_at = stop_at
        self.stats = stats
        self.shared = shared
        self.rng = random.Random(seed)
        self.sizes = sizes
        self.files: dict[str, tuple[int, int]] = {}  # rel path -> (seed, size)
        self.dirs: set[str] = {self.folder}
        self.counter = 0

    # -- helpers -------------------------------------------------------------------------
    def url(self, rel: str) -> str:
        return urllib.parse.quote(self.base + rel)

    def new_name(self, ext: str = ".bin") -> str:
        self.counter += 1
        d = self.rng.choice(sorted(self.dirs))
        return f"{d}f{self.counter}{ext}"

    def expect(self, op: str, status: int, ok: tuple[int, ...], what: str, body: bytes) -> bool:
        if status in ok:
            return True
        self.stats.error(f"client {self.n} {op} {what}: HTTP {status} (expected {ok}) "
                         f"{answer_text(body)}")
        return False

    def new_seed(self) -> int:
        return self.rng.getrandbits(63)

    # -- operations ----------------------------------------------------------------------
    def op_put(self) -> None:
        if self.files and (len(self.files) >= MAX_OWN_FILES or self.rng.random() < 0.3):
            rel = self.rng.choice(sorted(self.files))  # overwrite
            ok = (204, 201)
        else:
            rel = self.new_name()
            ok = (201,)
        seed, size = self.new_seed(), random_size(self.rng, *self.sizes)
        st, _, body = self.conn.request("PUT", self.url(rel), content(seed, size))
        if self.expect("PUT", st, ok, rel, body):
            self.files[rel] = (seed, size)

    def _pick_file(self) -> str | None:
        return self.rng.choice(sorted(self.files)) if self.files else None

    def op_get(self) -> None:
        rel = self._pick_file()
        if rel is None:
            return self.op_put()
        st, _, body = self.conn.request("GET", self.url(rel))
        if self.expect("GET", st, (200,), rel, body) and body != content(*self.files[rel]):
            self.stats.error(f"client {self.n} GET {rel}: content differs "
                             f"({len(body)} bytes, expected {self.files[rel][1]})")

    def op_range(self) -> None:
        rel = self._pick_file()
        if rel is None:
            return self.op_put()
        seed, size = self.files[rel]
        start = self.rng.randrange(size)
        end = self.rng.randrange(start, size)
        st, hdrs, body = self.conn.request("GET", self.url(rel),
                                           headers={"Range": f"bytes={start}-{end}"})
        want = content(seed, size)[start:end + 1]
        if size == 1 and st == 200:  # a range covering the whole file may answer 200
            want = content(seed, size)
        if self.expect("Range GET", st, (206, 200), f"{rel} {start}-{end}", body) \
                and body != want:
            self.stats.error(f"client {self.n} Range GET {rel} bytes={start}-{end}: "
                             f"content differs (HTTP {st}, {len(body)} bytes)")

    def op_propfind(self) -> None:
        d = self.rng.choice(sorted(self.dirs))
        st, _, body = self.conn.request(
            "PROPFIND", self.url(d), b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop>'
            b"<getcontentlength/><resourcetype/><getetag/></prop></propfind>",
            {"Depth": "1", "Content-Type": "application/xml"})
        if not self.expect("PROPFIND", st, (207,), d, body):
            return
        try:
            listed = self._parse_listing(body)
        except Exception as e:  # noqa: BLE001 - reported, not raised
            self.stats.error(f"client {self.n} PROPFIND {d}: unparseable answer {e!r}")
            return
        want = {rel[len(d):]: size for rel, (_, size) in self.files.items()
                if rel.startswith(d) and "/" not in rel[len(d):]}
        want.update({sub[len(d):].rstrip("/"): -1 for sub in self.dirs
                     if sub.startswith(d) and sub != d and "/" not in sub[len(d):-1]})
        if listed != want:
            self.stats.error(f"client {self.n} PROPFIND {d}: listing differs: "
                             f"got {sorted(listed.items())[:8]} want {sorted(want.items())[:8]}")

    def _parse_listing(self, body: bytes) -> dict[str, int]:
        """name -> size (-1 for a folder) of the members of the listed folder."""
        root = ElementTree.fromstring(body)
        out: dict[str, int] = {}
        responses = root.findall(f"{DAV_NS}response")
        for r in responses[1:]:  # the first is the folder itself
            href = urllib.parse.unquote(r.findtext(f"{DAV_NS}href") or "")
            name = href.rstrip("/").rsplit("/", 1)[-1]
            is_dir = r.find(f".//{DAV_NS}resourcetype/{DAV_NS}collection") is not None
            length = r.findtext(f".//{DAV_NS}getcontentlength")
            out[name] = -1 if is_dir else int(length or -2)
        return out

    def _dest_header(self, rel: str) -> dict:
        return {"Destination": f"http://127.0.0.1:{self.conn.port}{self.url(rel)}",
                "Overwrite": "T"}

    def op_move(self) -> None:
        rel = self._pick_file()
        if rel is None:
            return self.op_put()
        dest = self.new_name()
        st, _, body = self.conn.request("MOVE", self.url(rel), headers=self._dest_header(dest))
        if self.expect("MOVE", st, (201,), f"{rel} -> {dest}", body):
            self.files[dest] = self.files.pop(rel)

    def op_copy(self) -> None:
        rel = self._pick_file()
        if rel is None or len(self.files) >= MAX_OWN_FILES:
            return self.op_get()
        dest = self.new_name()
        st, _, body = self.conn.request("COPY", self.url(rel), headers=self._dest_header(dest))
        if self.expect("COPY", st, (201,), f"{rel} -> {dest}", body):
            self.files[dest] = self.files[rel]

    def op_delete(self) -> None:
        subdirs = sorted(self.dirs - {self.folder})
        if subdirs and self.rng.random() < 0.15:
            d = self.rng.choice(subdirs)
            st, _, body = self.conn.request("DELETE", self.url(d))
            if self.expect("DELETE", st, (204, 200), d, body):
                self.dirs = {x for x in self.dirs if not x.startswith(d)}
                self.files = {k: v for k, v in self.files.items() if not k.startswith(d)}
            return
        rel = self._pick_file()
        if rel is None:
            return self.op_put()
        st, _, body = self.conn.request("DELETE", self.url(rel))
        if self.expect("DELETE", st, (204, 200), rel, body):
            del self.files[rel]
            st, _, body = self.conn.request("GET", self.url(rel))
            self.expect("GET after DELETE", st, (404,), rel, body)

    def op_mkcol(self) -> None:
        if len(self.dirs) >= 4:
            return self.op_propfind()
        self.counter += 1
        d = f"{self.folder}d{self.counter}/"
        st, _, body = self.conn.request("MKCOL", self.url(d))
        if self.expect("MKCOL", st, (201,), d, body):
            self.dirs.add(d)

    def _lock(self, rel: str) -> tuple[int, str | None, bytes]:
        st, hdrs, body = self.conn.request(
            "LOCK", self.url(rel),
            b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
            b"<locktype><write/></locktype><owner>soak</owner></lockinfo>",
            {"Timeout": "Second-60", "Content-Type": "application/xml", "Depth": "0"})
        return st, hdrs.get("lock-token"), body

    def op_lock(self) -> None:
        """LOCK, PUT with the token, a PUT without it refused, UNLOCK."""
        rel = self._pick_file()
        if rel is None:
            return self.op_put()
        st, token, body = self._lock(rel)
        if not self.expect("LOCK", st, (200,), rel, body) or not token:
            if st == 200:
                self.stats.error(f"client {self.n} LOCK {rel}: no Lock-Token header")
            return
        seed, size = self.new_seed(), random_size(self.rng, *self.sizes)
        st, _, body = self.conn.request("PUT", self.url(rel), content(seed, size),
                                        {"If": f"({token})"})
        if self.expect("PUT with lock", st, (204, 201), rel, body):
            self.files[rel] = (seed, size)
        st, _, body = self.conn.request("PUT", self.url(rel), b"not allowed")
        self.expect("PUT without token", st, (423,), rel, body)
        st, _, body = self.conn.request("UNLOCK", self.url(rel), headers={"Lock-Token": token})
        self.expect("UNLOCK", st, (204, 200), rel, body)

    def op_shared_put(self) -> None:
        name = f"shared/s{self.rng.randrange(SHARED_NAMES)}.bin"
        seed, size = self.new_seed(), random_size(self.rng, *self.sizes) // 4 + 1
        self.shared.add(name, seed, size)  # before the PUT: a reader may see it at once
        st, _, body = self.conn.request("PUT", self.url(name), content(seed, size))
        # 423: another client holds a lock on it right now (shared_lock): legal contention
        self.expect("shared PUT", st, (201, 204, 423), name, body)

    def op_shared_get(self) -> None:
        name = f"shared/s{self.rng.randrange(SHARED_NAMES)}.bin"
        st, _, body = self.conn.request("GET", self.url(name))
        if self.expect("shared GET", st, (200, 404), name, body) and st == 200 \
                and not self.shared.legal(name, body):
            self.stats.error(f"client {self.n} shared GET {name}: content is no version "
                             f"anybody wrote ({len(body)} bytes)")

    def op_shared_lock(self) -> None:
        name = f"shared/s{self.rng.randrange(SHARED_NAMES)}.bin"
        self.shared.add(name, 0, 0)  # a LOCK on an unmapped name creates it empty (RFC 4918)
        st, token, body = self._lock(name)
        if st == 423:
            return  # somebody else holds it: contention, as intended
        if not self.expect("shared LOCK", st, (200, 201), name, body) or not token:
            return
        seed, size = self.new_seed(), random_size(self.rng, *self.sizes) // 4 + 1
        self.shared.add(name, seed, size)
        st, _, body = self.conn.request("PUT", self.url(name), content(seed, size),
                                        {"If": f"({token})"})
        self.expect("shared PUT with lock", st, (201, 204), name, body)
        st, _, body = self.conn.request("UNLOCK", self.url(name), headers={"Lock-Token": token})
        self.expect("shared UNLOCK", st, (204, 200), name, body)

    # -- loop ----------------------------------------------------------------------------
    def run(self) -> None:
        names = [n for n, _ in OPS]
        weights = [w for _, w in OPS]
        st, _, body = self.conn.request("MKCOL", self.url(self.folder))
        self.expect("MKCOL", st, (201,), self.folder, body)
        while time.monotonic() < self.stop_at:
            op = self.rng.choices(names, weights)[0]
            t0 = time.perf_counter()
            try:
                getattr(self, f"op_{op}")()
            except Exception as e:  # noqa: BLE001 - every failure is counted, the run goes on
                self.stats.error(f"client {self.n} {op}: {e!r}")
                self.conn.close()
            self.stats.count(op, time.perf_counter() - t0)

    def verify(self) -> int:
        """Read back every file this client must have; return how many were checked."""
        checked = 0
        for rel, (seed, size) in sorted(self.files.items()):
            try:
                st, _, body = self.conn.request("GET", self.url(rel))
            except Exception as e:  # noqa: BLE001
                self.stats.error(f"verify {rel}: {e!r}")
                continue
            if st != 200:
                self.stats.error(f"verify {rel}: lost (HTTP {st})")
            elif hashlib.sha256(body).digest() != hashlib.sha256(content(seed, size)).digest():
                self.stats.error(f"verify {rel}: corrupted ({len(body)} bytes, "
                                 f"expected {size})")
            else:
                checked += 1
        self.conn.close()
        return checked


def run_clients(clients: list[Client], stop_at: float, stats: Stats) -> None:
    """Run the clients to ``stop_at``; one still busy 5 minutes later is a hang."""
    for c in clients:
        c.start()
    for c in clients:
        c.join(max(0.0, stop_at - time.monotonic()) + 300)
        if c.is_alive():
            stats.error(f"client {c.n} still busy 5 minutes after the end (hang)")


# -- resource sampling -------------------------------------------------------------------
def process_tree(root_pid: int) -> list[int]:
    """root_pid and all its descendants (from /proc; the node forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def sample(root_pid: int) -> tuple[int, int, int]:
    """(RSS bytes summed, open fds summed, process count) of the server's process tree."""
    rss = fds = n = 0
    for pid in process_tree(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
            count = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        rss += int(m.group(1)) * 1024 if m else 0
        fds += count
        n += 1
    return rss, fds, n


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value units per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return sxy / sxx * 60.0


class Sampler(threading.Thread):
    def __init__(self, pid: int, every: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid = pid
        self.every = every
        self.samples: list[tuple[float, int, int, int]] = []  # (t, rss, fds, procs)
        self.done = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            rss, fds, n = sample(self.pid)
            self.samples.append((time.monotonic() - self.t0, rss, fds, n))
            if self.done.wait(self.every):
                return


# -- main --------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    workdir = tempfile.mkdtemp(prefix="davserver-soak-", dir=args.workdir)
    node = servers.DavServer(workdir, mode=args.mode, workers=args.workers)
    try:
        node.prepare()
        node.start()
        auth = node.auth_headers()
        stats = Stats()
        shared = SharedVersions()
        setup = Conn(node.port, auth)
        st, _, body = setup.request("MKCOL", urllib.parse.quote(node.base + "shared/"))
        if st != 201:
            stats.error(f"MKCOL shared/: HTTP {st} {body[:200]!r}")
        setup.close()
        sampler = Sampler(node.pid, args.sample)
        sampler.start()
        t0 = time.monotonic()
        stop_at = t0 + args.minutes * 60
        clients = [Client(i, node.base, node.port, auth, stop_at, stats, shared,
                          seed=args.seed * 1000 + i) for i in range(args.clients)]
        run_clients(clients, stop_at, stats)
        elapsed = time.monotonic() - t0
        sampler.done.set()
        sampler.join(30)
        verified = expected = 0
        for c in clients:
            expected += len(c.files)
            verified += c.verify()
        shared_checked = 0
        check = Conn(node.port, auth)
        for i in range(SHARED_NAMES):
            name = f"shared/s{i}.bin"
            st, _, body = check.request("GET", urllib.parse.quote(node.base + name))
            if st == 200:
                if shared.legal(name, body):
                    shared_checked += 1
                else:
                    stats.error(f"verify {name}: content is no version anybody wrote")
            elif st != 404:
                stats.error(f"verify {name}: HTTP {st}")
        check.close()
        final = sample(node.pid)
        alive = node.proc is not None and node.proc.poll() is None
        if not alive:
            stats.error(f"the server exited during the run: {node.log_tail()}")
        log_tail = node.log_tail(4000)
    finally:
        node.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    samples = sampler.samples
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    result = {
        "clients": args.clients,
        "minutes": args.minutes,
        "elapsed_s": round(elapsed, 1),
        "ops": sum(stats.ops.values()),
        "ops_by_kind": dict(sorted(stats.ops.items())),
        "ops_per_s": round(sum(stats.ops.values()) / elapsed, 1) if elapsed else 0,
        "errors": len(stats.errors),
        "first_errors": stats.errors[:20],
        "files_expected": expected,
        "files_verified": verified,
        "shared_verified": shared_checked,
        "samples": len(samples),
        "server_processes": final[2],
        "rss_mib_first": round(samples[0][1] / 2**20, 1) if samples else 0,
        "rss_mib_last": round(final[0] / 2**20, 1),
        "rss_mib_max": round(max((s[1] for s in samples), default=0) / 2**20, 1),
        "fds_first": samples[0][2] if samples else 0,
        "fds_last": final[1],
        "fds_max": max((s[2] for s in samples), default=0),
        "rss_slope_mib_per_min": round(slope_per_minute(
            [(t, r / 2**20) for t, r, _, _ in samples]), 3),
        "rss_slope_second_half_mib_per_min": round(slope_per_minute(
            [(t, r / 2**20) for t, r, _, _ in half]), 3),
        "fd_slope_per_min": round(slope_per_minute([(t, f) for t, _, f, _ in samples]), 3),
        "fd_slope_second_half_per_min": round(slope_per_minute(
            [(t, f) for t, _, f, _ in half]), 3),
        "server_log_tail": log_tail if stats.errors else "",
        "series": [(round(t, 1), round(r / 2**20, 1), f) for t, r, f, _ in samples],
    }
    result["ok"] = result["errors"] == 0 and verified == expected
    return result


def report(result: dict, args: argparse.Namespace) -> str:
    r = result
    lines = [
        f"# Soak: {r['clients']} clients x {r['minutes']} min, one davserver node "
        f"({args.mode}-key, workers={args.workers or 'default'})",
        "",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPU cores (shared with other work)",
        "",
        f"**Result: {'PASS' if r['ok'] else 'FAIL'}**",
        "",
        "| figure | value |",
        "|---|---|",
        f"| operations | {r['ops']} ({r['ops_per_s']}/s over {r['elapsed_s']} s) |",
        f"| errors | {r['errors']} |",
        f"| own files read back and hash-checked | {r['files_verified']} of "
        f"{r['files_expected']} |",
        f"| shared names checked (a whole written version) | {r['shared_verified']} of "
        f"{SHARED_NAMES} (others deleted/never written) |",
        f"| server processes | {r['server_processes']} |",
        f"| RSS sum first / last / max (MiB) | {r['rss_mib_first']} / {r['rss_mib_last']} / "
        f"{r['rss_mib_max']} |",
        f"| RSS slope, whole run / second half (MiB per min) | {r['rss_slope_mib_per_min']} / "
        f"{r['rss_slope_second_half_mib_per_min']} |",
        f"| open fds first / last / max | {r['fds_first']} / {r['fds_last']} / "
        f"{r['fds_max']} |",
        f"| fd slope, whole run / second half (per min) | {r['fd_slope_per_min']} / "
        f"{r['fd_slope_second_half_per_min']} |",
        f"| samples | {r['samples']} (every {args.sample} s) |",
        "",
        "Operations by kind: " + ", ".join(f"{k} {v}" for k, v in r["ops_by_kind"].items()),
        "",
    ]
    if r["first_errors"]:
        lines += ["## First errors", "", "```", *r["first_errors"], "```", ""]
    if r["server_log_tail"]:
        lines += ["## Server log tail", "", "```", r["server_log_tail"], "```", ""]
    lines += ["## RSS (MiB) and open fds over time", "", "| t (s) | RSS MiB | fds |",
              "|---|---|---|"]
    step = max(1, len(r["series"]) // 40)
    lines += [f"| {t} | {m} | {f} |" for t, m, f in r["series"][::step]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sample", type=float, default=5.0, help="seconds between RSS/fd samples")
    p.add_argument("--mode", choices=("master", "user"), default="master")
    p.add_argument("--workers", type=int, default=0, help="server processes (0: default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", default=None, help="parent of the temporary data dir")
    p.add_argument("--results", default=os.path.join(servers.HERE, "results"))
    p.add_argument("--json", default=None, help="also write the figures here as JSON")
    p.add_argument("--keep", action="store_true", help="keep the data dir")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except servers.StartError as e:
        print(f"soak: failed to start the server: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - a crash of the harness itself is a failure too
        traceback.print_exc()
        return 1
    text = report(result, args)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.md")
    with open(path, "w") as f:
        f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(text)
    print(f"soak: report written to {path}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
