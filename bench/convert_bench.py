#!/usr/bin/env python3
"""encrypt-all / decrypt-all throughput: large files in MB/s, small files in files/s.

Makes a fresh instance (master-key mode, fsync on as in production) in a scratch folder,
places N large files of M MiB and K small 4 KiB files (and optionally bench/run's
mixed tree) in a home as plaintext (as if
written before encryption was enabled), then times the conversion both ways, once for the
large set and once for the small set. The conversion runs in this process through
vault.convert (what the CLI runs, minus its maintenance-mode settle sleep).

    python3 bench/convert_bench.py --large 2 --large-mib 512 --small 5000 \
        [--mixed-mib 2048] [--dir /tmp]

Large files are read from the page cache (they were just written); the figure is the
conversion's own speed, bounded by AES-GCM, copies and the durable writes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

from davserver import config as config_mod  # noqa: E402
from davserver.instance import Instance, init_instance  # noqa: E402
from davserver.vault import convert  # noqa: E402

MiB = 1 << 20


def _instance(root: str) -> Instance:
    conf = os.path.join(root, "etc", "davserver.toml")
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf, "w") as f:
        f.write("[encryption]\nkdf_time_cost = 1\nkdf_memory_kib = 1024\n"
                "kdf_parallelism = 1\n")
    cfg = config_mod.load(conf, os.path.join(root, "data"))
    cfg.fsync = True
    init_instance(cfg, admin_password="adminpass1")
    inst = Instance(cfg)
    inst.users.add("bench", "benchpass1")
    return inst


def _place_mixed(inst: Instance, folder: str, total: int) -> tuple[int, int]:
    """bench/run's encrypt-all tree: a quarter of the bytes in one file, a quarter in
    four, a quarter in 1 MiB files, a fifth in 64 KiB files, the rest in 4 KiB files."""
    from measure import make_mixed_tree

    inst.vault.make_dir(f"bench/{folder}")
    got = make_mixed_tree(os.path.join(inst.config.data_dir, "files", "bench", folder), total)
    os.sync()
    return got


def _place(inst: Instance, folder: str, count: int, size: int) -> None:
    inst.vault.make_dir(f"bench/{folder}")
    base = os.path.join(inst.config.data_dir, "files", "bench", folder)
    block = os.urandom(min(size, 4 * MiB))
    for i in range(count):
        with open(os.path.join(base, f"f{i:06d}.bin"), "wb") as f:
            left = size
            while left > 0:
                f.write(block[:left])
                left -= len(block)
    os.sync()


def _timed(inst: Instance, encrypt: bool, args) -> tuple[float, float, int, int]:
    kw = {} if args.workers is None else {"workers": args.workers}
    if args.batch_workers is not None:
        kw["batch_workers"] = args.batch_workers
    t0, c0 = time.perf_counter(), os.times()
    rep = convert.convert_all(inst.vault, ["bench"], encrypt=encrypt, **kw)
    secs, c1 = time.perf_counter() - t0, os.times()
    assert not rep.failed, rep.failed
    return secs, (c1.user - c0.user) + (c1.system - c0.system), rep.converted, rep.bytes


def _run_set(name: str, count: int, size: int, args) -> None:
    root = tempfile.mkdtemp(prefix=f"convbench-{name}-", dir=args.dir)
    try:
        inst = _instance(root)
        if name == "mixed":
            _place_mixed(inst, name, size)
        else:
            _place(inst, name, count, size)
        for encrypt in (True, False):
            secs, cpu, n, nbytes = _timed(inst, encrypt, args)
            verb = "encrypt-all" if encrypt else "decrypt-all"
            # CPU seconds (user + system, all threads): on a shared machine the wall time
            # also counts other processes' turns on the cores.
            print(f"{name:5s} {verb}: {n} files, {nbytes / MiB:.0f} MiB in {secs:.2f} s = "
                  f"{nbytes / 1e6 / secs:.0f} MB/s, {n / secs:.0f} files/s; "
                  f"CPU {cpu:.2f} s", flush=True)
        inst.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=2, help="number of large files")
    ap.add_argument("--large-mib", type=int, default=512, help="size of each large file")
    ap.add_argument("--small", type=int, default=5000, help="number of 4 KiB files")
    ap.add_argument("--mixed-mib", type=int, default=0,
                    help="also a tree of mixed file sizes (bench/run's encrypt-all figure)")
    ap.add_argument("--workers", type=int, default=None, help="override convert workers")
    ap.add_argument("--batch-workers", type=int, default=None,
                    help="override convert batch workers (0: no batches)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: system temp)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    if args.large:
        _run_set("large", args.large, args.large_mib * MiB, args)
    if args.small:
        _run_set("small", args.small, 4096, args)
    if args.mixed_mib:
        _run_set("mixed", 0, args.mixed_mib * MiB, args)


if __name__ == "__main__":
    main()
