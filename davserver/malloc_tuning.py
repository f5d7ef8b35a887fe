"""Keep the server's memory flat in the size of the files it moves.

Large transfers allocate and free buffers of megabytes (S3 multipart parts, read-ahead
windows) from several threads. glibc serves such buffers with mmap at first, but after
the first one is freed it raises its mmap threshold to that size (the "dynamic"
threshold), so later buffers come from the threads' heap arenas, and freed arena memory
mostly stays with the process: a worker that sent a 256 MiB file to S3 kept ~70 MiB more
than one that sent 64 MiB (bench/s3_bench.py). Fixing the threshold turns the dynamic
behaviour off: buffers of 1 MiB and more are mapped and unmapped each time, and the
process returns to its idle size after every transfer. The cost, one mmap/munmap per big
buffer, is lost in the network and crypto time of moving a megabyte.

Only glibc has ``mallopt``; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("davserver.malloc")

_M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 20


def pin_mmap_threshold(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (call before serving); True if it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; memory may grow with file size")
    return ok
