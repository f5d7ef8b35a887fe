#!/usr/bin/env python3
"""Nextcloud import speed: MB/s of plaintext per core for binary signed data (NC >= 25).

Builds one large file in Nextcloud's format with the test encoder (tests/nc_format.py:
AES-256-CTR, binary, signed, RC4 share key, wrapped key files, master-key mode), then times

  decrypt   content.decrypt_file into a sink: parse, MAC check and AES of every block
  import    the whole import:nextcloud --decrypt-to path (keys, version search, temp file,
            fsync, rename) through the service the CLI calls

and prints CPU seconds and MB/s (per core = plaintext bytes / CPU time of this process; the
work is single-threaded). The issue asks for at least 100 MB/s per core.

    bench/nextcloud_import.py            # 256 MiB
    SIZE_MB=1024 bench/nextcloud_import.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from davserver.nextcloud import content, importer  # noqa: E402
from tests.nc_format import NcData, Variant  # noqa: E402

MIB = 1 << 20


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    size = int(os.environ.get("SIZE_MB", "256")) * MIB
    work = Path(tempfile.mkdtemp(prefix="nc-bench-"))
    try:
        d = NcData(work / "nc")
        master = d.add_master()
        plain = os.urandom(MIB) * (size // MIB)
        t0 = time.perf_counter()
        path = d.add_file("alice", "big.bin", plain, [master], Variant())
        print(f"built {size / MIB:.0f} MiB Nextcloud file ({path.stat().st_size} bytes on "
              f"disk) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        del plain
        src = importer.open_source(str(d.datadir), str(d.config_path), ["alice"])
        item = importer.plan(src, ["alice"])[0]
        opened = importer.open_item(src, item)

        wall, cpu = timed(lambda: content.decrypt_file(str(path), opened.info, opened.key,
                                                       opened.version, lambda _b: None))
        print(f"decrypt  {size / MIB:.0f} MiB: wall {wall:.2f} s = {size / MIB / wall:.0f} MB/s,"
              f" cpu {cpu:.2f} s = {size / MIB / cpu:.0f} MB/s per core")

        out = work / "out"
        wall, cpu = timed(lambda: importer.run_import(src, ["alice"],
                                                      importer.DirTarget(str(out))))
        assert (out / "alice" / "big.bin").stat().st_size == size
        print(f"import   {size / MIB:.0f} MiB: wall {wall:.2f} s = {size / MIB / wall:.0f} MB/s,"
              f" cpu {cpu:.2f} s = {size / MIB / cpu:.0f} MB/s per core")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
