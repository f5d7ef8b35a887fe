"""The server pins glibc's mmap threshold so big transfer buffers go back to the system
(memory flat in file size; the figures are in bench/s3_bench.py, not here)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from davserver import malloc_tuning


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threshold_is_pinned_on_glibc():
    assert malloc_tuning.pin_mmap_threshold() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_big_buffers_leave_the_process():
    """After a pinned process has allocated and freed 8 MiB buffers from several threads
    (as S3 multipart uploads do), its resident size is back near where it started."""
    code = """
import threading, sys
from davserver import malloc_tuning
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) >> 10
pin = sys.argv[1] == "pin"
if pin:
    malloc_tuning.pin_mmap_threshold()
start = rss()
def churn():
    for i in range(15):
        keep = [bytearray(8 << 20) for _ in range(3)]
        for b in keep:
            b[::4096] = b"x" * len(b[::4096])
        small = [bytes(1000) for _ in range(200)]  # interleaved small allocations
        del keep
threads = [threading.Thread(target=churn) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(rss() - start)
"""
    grown = int(subprocess.run([sys.executable, "-c", code, "pin"], capture_output=True,
                               text=True, check=True).stdout)
    assert grown < 32, f"{grown} MiB kept after the buffers were freed"
