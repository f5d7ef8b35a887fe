"""Client side of the benchmark: a lean keep-alive HTTP client, RSS sampling, the figures.

The client is ``http.client`` with large buffers, not ``requests``: bodies are sent with
``sendall`` from a pre-generated random buffer (64 MiB, repeated) and read with
``readinto`` into a 4 MiB buffer, so the client spends almost no CPU per byte.
"""

from __future__ import annotations

import http.client
import multiprocessing as mp
import os
import random
import re
import statistics
import threading
import time
import urllib.parse

MiB = 1024 * 1024
PATTERN_SIZE = 64 * MiB
_PATTERN: bytes | None = None


def pattern() -> bytes:
    """64 MiB of random bytes, made once (deterministic so offsets can be checked)."""
    global _PATTERN
    if _PATTERN is None:
        rnd = random.Random(20240501)
        _PATTERN = rnd.randbytes(PATTERN_SIZE)
    return _PATTERN


def expected_byte(offset: int) -> int:
    return pattern()[offset % PATTERN_SIZE]


class BenchError(RuntimeError):
    pass


class Client:
    """A single keep-alive connection; reconnects when the server closes it."""

    def __init__(self, port: int, base: str, headers: dict, timeout: float = 600):
        self.port, self.base, self.headers, self.timeout = port, base, dict(headers), timeout
        self.conn: http.client.HTTPConnection | None = None

    def _c(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def url(self, rel: str) -> str:
        return self.base + urllib.parse.quote(rel)

    def request(self, method: str, rel: str, body: bytes | None = None,
                headers: dict | None = None, ok=(200, 201, 204, 207)) -> tuple[int, bytes, dict]:
        h = dict(self.headers)
        h.update(headers or {})
        for attempt in (0, 1):
            c = self._c()
            try:
                c.request(method, self.url(rel), body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                if r.will_close:
                    self.close()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt:
                    raise
        if ok and r.status not in ok:
            raise BenchError(f"{method} {rel}: HTTP {r.status} {data[:200]!r}")
        return r.status, data, dict(r.getheaders())

    def mkcol(self, rel: str) -> None:
        self.request("MKCOL", rel, ok=(201, 405))

    def put_stream(self, rel: str, size: int) -> None:
        """PUT ``size`` bytes of the repeated random pattern, with Content-Length."""
        self.close()
        c = self._c()
        c.putrequest("PUT", self.url(rel))
        for k, v in self.headers.items():
            c.putheader(k, v)
        c.putheader("Content-Length", str(size))
        c.putheader("Content-Type", "application/octet-stream")
        c.endheaders()
        mv = memoryview(pattern())
        left = size
        while left > 0:
            n = min(left, PATTERN_SIZE)
            c.send(mv[:n])
            left -= n
        r = c.getresponse()
        data = r.read()
        self.close()
        if r.status not in (200, 201, 204):
            raise BenchError(f"PUT {rel}: HTTP {r.status} {data[:200]!r}")

    def get_stream(self, rel: str, expect: int | None = None) -> int:
        """GET into a reused 4 MiB buffer; returns the byte count."""
        c = self._c()
        c.request("GET", self.url(rel), headers=self.headers)
        r = c.getresponse()
        if r.status != 200:
            data = r.read()
            self.close()
            raise BenchError(f"GET {rel}: HTTP {r.status} {data[:200]!r}")
        buf = bytearray(4 * MiB)
        total = 0
        while True:
            n = r.readinto(buf)
            if not n:
                break
            total += n
        if r.will_close:
            self.close()
        if expect is not None and total != expect:
            raise BenchError(f"GET {rel}: got {total} bytes, expected {expect}")
        return total


# -- resident memory of the server's process tree -------------------------------------------

def _children_map() -> dict[int, list[int]]:
    m: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rfind(")") + 2:].split()[1])
        m.setdefault(ppid, []).append(int(d))
    return m


def _pss(pid: int) -> int | None:
    """Proportional set size: shared pages count once over all processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tree_rss(pid: int) -> int:
    """Memory (bytes) of pid and all its descendants: the sum of their PSS, which for
    several worker processes counts the pages they share once (VmRSS would count them
    once per process); VmRSS where smaps_rollup is missing."""
    kids = _children_map()
    todo, total, seen = [pid], 0, set()
    while todo and len(seen) < 10000:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        pss = _pss(p)
        if pss is not None:
            total += pss
            todo.extend(kids.get(p, []))
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        todo.extend(kids.get(p, []))
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by pid and all its descendants: the cost of
    a transfer on the server side, which a loaded machine disturbs far less than its
    wall-clock time."""
    kids = _children_map()
    todo, total, seen = [pid], 0, set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
        todo.extend(kids.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the tree's memory (tree_rss) every 50 ms while the ``with`` block runs."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = tree_rss(self.pid)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        self.peak = max(self.peak, tree_rss(self.pid))


# -- figures ---------------------------------------------------------------------------------

def mb_s(nbytes: int, secs: float) -> float:
    return nbytes / 1e6 / secs


def big_put(cl: Client, rel: str, size: int, pid: int) -> tuple[float, int, float]:
    """Returns (MB/s, peak RSS bytes, start wall time)."""
    cl.request("DELETE", rel, ok=(200, 204, 404))
    t_wall = time.time()
    with RssSampler(pid) as rs:
        t0 = time.perf_counter()
        cl.put_stream(rel, size)
        dt = time.perf_counter() - t0
    return mb_s(size, dt), rs.peak, t_wall


def big_get(cl: Client, rel: str, size: int, pid: int) -> tuple[float, int]:
    with RssSampler(pid) as rs:
        t0 = time.perf_counter()
        cl.get_stream(rel, expect=size)
        dt = time.perf_counter() - t0
    return mb_s(size, dt), rs.peak


def parallel_get(port: int, base: str, headers: dict, rels: list[str], size: int,
                 pid: int) -> tuple[float, int]:
    """All GETs at once on separate connections (threads; readinto releases the GIL)."""
    errors: list[BaseException] = []
    go = threading.Event()

    def one(rel: str) -> None:
        c = Client(port, base, headers)
        try:
            go.wait(30)
            c.get_stream(rel, expect=size)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    ts = [threading.Thread(target=one, args=(r,), daemon=True) for r in rels]
    for t in ts:
        t.start()
    with RssSampler(pid) as rs:
        t0 = time.perf_counter()
        go.set()
        for t in ts:
            t.join(1800)
        dt = time.perf_counter() - t0
    if errors:
        raise BenchError(f"parallel GET failed: {errors[0]!r}")
    if any(t.is_alive() for t in ts):
        raise BenchError("parallel GET did not finish within 30 min")
    return mb_s(size * len(rels), dt), rs.peak


def _small_worker(port, base, headers, rel_dir, idx, count, data, start_evt, put_done, q):
    try:
        cl = Client(port, base, headers)
        cl.request("OPTIONS", rel_dir + "/", ok=None)  # open the connection, warm auth
        start_evt.wait(60)
        t0 = time.monotonic()
        for i in range(count):
            cl.request("PUT", f"{rel_dir}/c{idx}_{i}.bin", body=data)
        t1 = time.monotonic()
        # Every client starts its GETs when the last one has finished its PUTs: a server
        # that finished some clients' PUTs early must not have the others' PUTs counted
        # in its GET time.
        put_done.wait(1800)
        t1 = max(t1, time.monotonic())
        for i in range(count):
            _s, body, _h = cl.request("GET", f"{rel_dir}/c{idx}_{i}.bin", ok=(200,))
            if body != data:
                raise BenchError(f"GET {rel_dir}/c{idx}_{i}.bin returned other content")
        t2 = time.monotonic()
        cl.close()
        q.put((idx, t0, t1, t2, None))
    except BaseException as e:  # noqa: BLE001 - sent to parent
        put_done.abort()  # the others stop waiting for this one
        q.put((idx, 0.0, 0.0, 0.0, repr(e)))


def small_ops(port: int, base: str, headers: dict, rel_dir: str, total: int,
              clients: int) -> tuple[float, float]:
    """``total`` 4 KiB PUTs then the same GETs, split over ``clients`` processes.

    Returns (PUT ops/s, GET ops/s), each = total ops / (last end - first start). The
    GETs start together once every client has finished its PUTs.
    """
    data = os.urandom(4096)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_evt = ctx.Event()
    put_done = ctx.Barrier(clients)
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    procs = [ctx.Process(target=_small_worker, daemon=True,
                         args=(port, base, headers, rel_dir, i, per[i], data, start_evt,
                               put_done, q))
             for i in range(clients)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start_evt.set()
    results = []
    try:
        for _ in procs:
            results.append(q.get(timeout=1800))
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    errs = [r[4] for r in results if r[4]]
    if errs:
        raise BenchError(f"small ops failed: {errs[0]}")
    t0 = min(r[1] for r in results)
    t1 = max(r[2] for r in results)
    # GET phase: from the release of the barrier to the last worker finishing
    g0 = min(r[2] for r in results)
    g1 = max(r[3] for r in results)
    return total / (t1 - t0), total / (g1 - g0)


def create_files_via_server(port: int, base: str, headers: dict, rel_dir: str,
                            names: list[str], data: bytes, clients: int = 4) -> None:
    """PUT many small files using several processes (setup, not timed)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def work(chunk):
        try:
            cl = Client(port, base, headers)
            for n in chunk:
                cl.request("PUT", f"{rel_dir}/{n}", body=data)
            cl.close()
            q.put(None)
        except BaseException as e:  # noqa: BLE001
            q.put(repr(e))

    chunks = [names[i::clients] for i in range(clients)]
    procs = [ctx.Process(target=work, args=(c,), daemon=True) for c in chunks]
    for p in procs:
        p.start()
    errs = []
    try:
        for _ in procs:
            e = q.get(timeout=3600)
            if e:
                errs.append(e)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    if errs:
        raise BenchError(f"creating files failed: {errs[0]}")


PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?>\n<d:propfind xmlns:d="DAV:"><d:prop>'
                 b"<d:getlastmodified/><d:getcontentlength/><d:resourcetype/><d:getetag/>"
                 b"</d:prop></d:propfind>")
_RESP_RE = re.compile(rb"<(?:[A-Za-z0-9_]+:)?response[\s>]")


def propfind(cl: Client, rel_dir: str, expect_members: int) -> float:
    t0 = time.perf_counter()
    _s, body, _h = cl.request("PROPFIND", rel_dir + "/", body=PROPFIND_BODY,
                              headers={"Depth": "1", "Content-Type": "application/xml"},
                              ok=(207,))
    dt = time.perf_counter() - t0
    n = len(_RESP_RE.findall(body))
    if n < expect_members + 1:
        raise BenchError(f"PROPFIND {rel_dir}: {n} responses, expected {expect_members + 1}")
    return dt


def range_gets(cl: Client, rel: str, size: int, n: int, empty_rel: str,
               seed: int = 7) -> tuple[float, float]:
    """Median ms of n 1-byte Range GETs at random offsets, and of n GETs of an empty file."""
    rnd = random.Random(seed)
    offsets = [rnd.randrange(size) for _ in range(n)]
    times = []
    for off in offsets:
        t0 = time.perf_counter()
        s, body, _h = cl.request("GET", rel, headers={"Range": f"bytes={off}-{off}"},
                                 ok=(206,))
        times.append(time.perf_counter() - t0)
        if len(body) != 1 or body[0] != expected_byte(off):
            raise BenchError(f"Range GET {rel} @{off}: got {body[:8]!r}, expected "
                             f"{bytes([expected_byte(off)])!r}")
    empties = []
    for _ in range(n):
        t0 = time.perf_counter()
        _s, body, _h = cl.request("GET", empty_rel, ok=(200,))
        empties.append(time.perf_counter() - t0)
        if body:
            raise BenchError(f"GET {empty_rel}: expected an empty body")
    return statistics.median(times) * 1000, statistics.median(empties) * 1000


def first_vs_cached(port: int, base: str, headers: dict, n_cached: int = 20) -> tuple[float,
                                                                                        float]:
    """ms of the first authenticated request after a (re)start, and median of the next ones.

    The request is PROPFIND Depth 0 on the user's root folder, on a fresh connection.
    """
    cl = Client(port, base, headers)
    hdr = {"Depth": "0", "Content-Type": "application/xml"}
    t0 = time.perf_counter()
    cl.request("PROPFIND", "", body=PROPFIND_BODY, headers=hdr, ok=(207,))
    first = time.perf_counter() - t0
    times = []
    for _ in range(n_cached):
        t0 = time.perf_counter()
        cl.request("PROPFIND", "", body=PROPFIND_BODY, headers=hdr, ok=(207,))
        times.append(time.perf_counter() - t0)
    cl.close()
    return first * 1000, statistics.median(times) * 1000


MIXED_CLASSES = [  # (fraction of the total bytes, file size)
    (0.25, None),  # one file holding a quarter of the total
    (0.25, "quarter/4"),
    (0.25, MiB),
    (0.20, 64 * 1024),
    (0.05, 4096),
]


def make_mixed_tree(root: str, total: int) -> tuple[int, int]:
    """Write ``total`` bytes of plaintext files of mixed sizes; returns (files, bytes)."""
    pat = pattern()
    files = nbytes = 0
    for ci, (frac, size) in enumerate(MIXED_CLASSES):
        budget = int(total * frac)
        if size is None:
            size = budget
        elif size == "quarter/4":
            size = max(1, budget // 4)
        count = max(1, budget // size)
        d = os.path.join(root, f"class{ci}")
        os.makedirs(d, exist_ok=True)
        for i in range(count):
            with open(os.path.join(d, f"f{i}.bin"), "wb") as f:
                left, off = size, (i * 4099) % PATTERN_SIZE
                while left > 0:
                    chunk = pat[off:off + min(left, PATTERN_SIZE - off)]
                    f.write(chunk)
                    left -= len(chunk)
                    off = 0
            files += 1
            nbytes += size
    return files, nbytes
