#!/usr/bin/env python3
"""The machine's ceilings, so each bench figure can be read as a fraction of its limit.

- AES-256-GCM per core: sealing 256 KiB chunks (davserver's chunk size) in one thread;
- disk write with fsync: one large file written in 1 MiB blocks, then fsync;
- durable small files: 4 KiB files created as a commit does (temp, fsync, rename, fsync
  of the folder), by 1 and by 16 threads (the journal commits concurrent flushes together);
- loopback copy: bytes through one TCP connection on 127.0.0.1 (1 MiB sends, recv_into).

    bench/ceilings.py [--dir /tmp] [--mib 512]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MiB = 1 << 20


def aes_gcm_mbs(seconds: float = 1.0) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, nonce, data = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(256 << 10)
    aead.encrypt(nonce, data, b"")
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        aead.encrypt(nonce, data, b"")
        n += 1
    return n * len(data) / 1e6 / (time.perf_counter() - t0)


def disk_write_mbs(folder: str, size: int) -> float:
    path = os.path.join(folder, "ceiling.bin")
    block = os.urandom(MiB)
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(size // MiB):
            f.write(block)
        os.fsync(f.fileno())
    secs = time.perf_counter() - t0
    os.unlink(path)
    return size / 1e6 / secs


def _durable_file(folder: str, i: int, data: bytes) -> None:
    tmp, final = os.path.join(folder, f".t{i}"), os.path.join(folder, f"f{i}")
    with open(tmp, "wb", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_files_per_s(folder: str, threads: int, count: int) -> float:
    d = tempfile.mkdtemp(dir=folder)
    data = os.urandom(4096)
    t0 = time.perf_counter()
    if threads == 1:
        for i in range(count):
            _durable_file(d, i, data)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: _durable_file(d, i, data), range(count)))
    secs = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return count / secs


def loopback_mbs(size: int) -> float:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got = [0]

    def sink() -> None:
        conn, _ = srv.accept()
        buf = bytearray(MiB)
        while n := conn.recv_into(buf):
            got[0] += n
        conn.close()

    t = threading.Thread(target=sink)
    t.start()
    block = os.urandom(MiB)
    c = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    for _ in range(size // MiB):
        c.sendall(block)
    c.shutdown(socket.SHUT_WR)
    t.join()
    secs = time.perf_counter() - t0
    c.close()
    srv.close()
    return got[0] / 1e6 / secs


def measure(folder: str, mib: int, quick: bool = False) -> dict[str, float]:
    n = 10 if quick else 1
    return {
        "AES-256-GCM seal, one core (MB/s)": aes_gcm_mbs(),
        f"disk write {mib} MiB + fsync (MB/s)": disk_write_mbs(folder, mib * MiB),
        "durable 4 KiB files, 1 thread (files/s)": durable_files_per_s(folder, 1, 200 // n),
        "durable 4 KiB files, 16 threads (files/s)": durable_files_per_s(folder, 16,
                                                                         2000 // n),
        "loopback TCP copy (MB/s)": loopback_mbs(2048 // n * MiB),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--mib", type=int, default=512)
    args = ap.parse_args()
    for k, v in measure(args.dir, args.mib).items():
        print(f"{k:45s} {v:10.0f}")


if __name__ == "__main__":
    main()
