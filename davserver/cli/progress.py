"""Progress bars for long jobs (tqdm): files, bytes and ETA on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm


@contextlib.contextmanager
def progress_bar(what: str, total_files: int, total_bytes: int,
                 quiet: bool = False) -> Iterator:
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
               file=sys.stderr, disable=quiet, dynamic_ncols=True, mininterval=0.5)
    state = {"files": 0}

    def advance(files: int, nbytes: int) -> None:
        state["files"] += files
        bar.set_postfix_str(f"{state['files']}/{total_files} files", refresh=False)
        bar.update(nbytes)

    try:
        yield advance
    finally:
        bar.close()
