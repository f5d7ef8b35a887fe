"""Large transfers with the clients users run: curl and rclone, beside bench's http.client.

http.client with 64 MiB ``sendall`` calls is the kindest possible client; curl sends from a
64 KiB buffer and rclone from its own, so a server that does well only with huge writes is
found out here. Each transfer is one process run, timed from start to exit (so rclone's
start-up, about 0.1 s, is in its figure for every server alike).

rclone talks to every server as a plain WebDAV remote (``vendor = other``): a single PUT
with Content-Length, no chunked Nextcloud upload, no modification-time PROPPATCH, and
``--no-check-dest`` so it does not list the folder first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from measure import PATTERN_SIZE, BenchError, mb_s, pattern

CLIENTS = ("curl", "rclone")


def available(client: str) -> bool:
    return shutil.which(client) is not None


def make_source(folder: str, size: int) -> str:
    """The upload source: ``size`` bytes of the bench pattern in a file (page-cached: it is
    read many times), so every client sends the same bytes http.client sends."""
    path = os.path.join(folder, f"upload-{size}.bin")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    mv = memoryview(pattern())
    with open(path + ".tmp", "wb") as f:
        left = size
        while left:
            n = min(left, PATTERN_SIZE)
            f.write(mv[:n])
            left -= n
    os.replace(path + ".tmp", path)
    return path


def _run(argv: list[str], env: dict | None = None, timeout: float = 1800) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=timeout)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError(f"{argv[0]} exit {r.returncode}: "
                         f"{(r.stderr or r.stdout).decode(errors='replace')[-300:]}")
    return secs, r.stdout.decode(errors="replace")


def _url(port: int, base: str, rel: str) -> str:
    return f"http://127.0.0.1:{port}{base}{rel}"


def _curl_auth(user: str | None, password: str | None) -> list[str]:
    return ["-u", f"{user}:{password}"] if user else []


def curl_put(port: int, base: str, user, password, rel: str, src: str, size: int) -> float:
    """MB/s of ``curl -T`` (it sends Expect: 100-continue, which cheroot answers)."""
    secs, out = _run(["curl", "-sS", "-T", src, *_curl_auth(user, password), "-o", "/dev/null",
                      "-w", "%{http_code} %{size_upload}", _url(port, base, rel)])
    code, sent = out.split()
    if code not in ("200", "201", "204") or int(float(sent)) != size:
        raise BenchError(f"curl PUT {rel}: HTTP {code}, {sent} bytes sent of {size}")
    return mb_s(size, secs)


def curl_get(port: int, base: str, user, password, rel: str, size: int) -> float:
    secs, out = _run(["curl", "-sS", *_curl_auth(user, password), "-o", "/dev/null",
                      "-w", "%{http_code} %{size_download}", _url(port, base, rel)])
    code, got = out.split()
    if code != "200" or int(float(got)) != size:
        raise BenchError(f"curl GET {rel}: HTTP {code}, {got} bytes of {size}")
    return mb_s(size, secs)


def _rclone_env(port: int, base: str, user, password) -> dict:
    env = dict(os.environ)
    env.update(RCLONE_CONFIG="/dev/null", RCLONE_WEBDAV_URL=_url(port, base, ""),
               RCLONE_WEBDAV_VENDOR="other")
    if user:
        obscured = subprocess.run(["rclone", "obscure", password], capture_output=True,
                                  text=True, check=True, timeout=30).stdout.strip()
        env.update(RCLONE_WEBDAV_USER=user, RCLONE_WEBDAV_PASS=obscured)
    return env


class Rclone:
    """rclone against one server; the environment (with the obscured password) is made once."""

    def __init__(self, port: int, base: str, user, password) -> None:
        self.env = _rclone_env(port, base, user, password)

    def put(self, rel: str, src: str, size: int) -> float:
        secs, _ = _run(["rclone", "copyto", "--no-check-dest", "--retries", "1",
                        "--low-level-retries", "1", src, f":webdav:{rel}"], env=self.env)
        return mb_s(size, secs)

    def get(self, rel: str, size: int) -> float:
        """``rclone cat`` into a pipe this process drains and counts (a read of 1 MiB per
        call costs it little CPU), so a short answer is caught."""
        t0 = time.perf_counter()
        p = subprocess.Popen(["rclone", "cat", "--retries", "1", "--low-level-retries", "1",
                              f":webdav:{rel}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=self.env)
        got, buf = 0, bytearray(1 << 20)
        assert p.stdout is not None
        while n := p.stdout.readinto(buf):
            got += n
        err = p.stderr.read() if p.stderr else b""
        rc = p.wait(600)
        secs = time.perf_counter() - t0
        if rc != 0 or got != size:
            raise BenchError(f"rclone cat {rel}: exit {rc}, {got} bytes of {size}: "
                             f"{err.decode(errors='replace')[-300:]}")
        return mb_s(size, secs)
