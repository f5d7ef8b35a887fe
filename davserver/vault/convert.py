"""encrypt-all and decrypt-all: convert every file, resumable, each file exactly once.

Why no separate checkpoint file: the state of each file *is* the checkpoint. A file is
converted through the vault's atomic commit (temp blob, rename, index), so at any instant
it is wholly plaintext or wholly ciphertext, and the header sniff tells which. A re-run
after Ctrl-C or SIGKILL first lets the vault finish or roll back the one commit that was
in flight, then skips what is done. Nothing is deleted before its replacement is durable.

The job runs in maintenance mode so no client writes while files change form; the
previous mode is remembered in the DB so a run killed half-way and re-run restores it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from davserver.crypto import header as hdr
from davserver.errors import DavServerError, StorageNotFound
from davserver.meta import settings
from davserver.meta.db import FileRecord
from davserver.vault import convert_batch
from davserver.vault.files import pump

log = logging.getLogger("davserver.convert")

Progress = Callable[[int, int], None]  # (files done, bytes done) increments

S_MAINT = settings.MAINTENANCE
S_MAINT_JOB = settings.MAINTENANCE_JOB
S_MAINT_BEFORE = settings.MAINTENANCE_BEFORE


#: Running servers (every worker process, every node) re-read settings within 1 s; waiting
#: a bit longer after switching maintenance on means none of them admits new requests.
SETTLE_SECONDS = 2.2


def set_maintenance(db, on: bool, settle_seconds: float = SETTLE_SECONDS) -> None:
    """Switch maintenance mode; switching it on returns once every server honours it."""
    was_on = db.get_setting(S_MAINT, "0") == "1"
    db.set_setting(S_MAINT, "1" if on else "0")
    if on and not was_on:
        time.sleep(settle_seconds)


@contextlib.contextmanager
def maintenance_for(db, job: str, settle_seconds: float = SETTLE_SECONDS) -> Iterator[None]:
    """Maintenance mode for the duration of ``job``; restores what was there before."""
    running = db.get_setting(S_MAINT_JOB)
    if running and running != job:
        raise DavServerError(f"another job ({running}) did not finish; re-run it first")
    if not running:
        if db.get_setting(S_MAINT_BEFORE) is None:
            db.set_setting(S_MAINT_BEFORE, db.get_setting(S_MAINT, "0"))
        was_on = db.get_setting(S_MAINT, "0") == "1"
        db.set_setting(S_MAINT, "1")
        if not was_on:
            # Running servers see the switch within their settings cache (1 s): the job
            # counts as started, and converts, only once no server admits new writes. A
            # long upload admitted earlier cannot revert a conversion either: commits
            # check the generation they read (see _rewrite).
            time.sleep(settle_seconds)
        db.set_setting(S_MAINT_JOB, job)
    try:
        yield
    finally:
        # Also on Ctrl-C: every file is in one piece, so the server can have them back.
        # Only SIGKILL leaves maintenance on, until the job is re-run.
        db.set_setting(S_MAINT, db.get_setting(S_MAINT_BEFORE, "0") or "0")
        db.delete_setting(S_MAINT_JOB)
        db.delete_setting(S_MAINT_BEFORE)


@dataclass
class ConvertReport:
    converted: int = 0
    skipped: int = 0
    bytes: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"converted": self.converted, "skipped": self.skipped, "bytes": self.bytes,
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


def _is_encrypted(vault, path: str) -> bool:
    return hdr.is_encrypted(vault.head(path))


def plan(vault, users: list[str]) -> list[tuple[str, int]]:
    """Every regular file of ``users`` with its stored size (for progress totals)."""
    out = []
    for user in users:
        if vault.storage.stat(user) is None:
            continue
        for key, e in vault.storage.walk(user):
            if not e.is_dir:
                out.append((key, e.size))
    return out


def count_forms(vault, users: list[str]) -> tuple[int, int]:
    """(encrypted, plaintext) files in storage, by header sniff (nothing decrypted)."""
    enc = plain = 0
    for path, _size in plan(vault, users):
        try:
            if _is_encrypted(vault, path):
                enc += 1
            else:
                plain += 1
        except StorageNotFound:
            continue
    return enc, plain


#: Bytes read and written per step when a large file is rewritten: 16 AEAD chunks per
#: call, a quarter of the system calls and page-cache work of 1 MiB steps (1 GiB file,
#: fsync on: encrypt-all 0.64-0.98 -> 1.1-1.3 GB/s, decrypt-all 0.81 -> 0.97-1.0 GB/s).
REWRITE_BLOCK = 4 << 20


def _rewrite(vault, path: str, *, encrypt: bool, mtime: float) -> int:
    """Re-store ``path`` in the other form through the atomic commit; returns bytes.

    The commit is refused if a client committed to the path meanwhile (a long upload
    admitted before maintenance mode), so a conversion never reverts fresh data."""
    src = vault.open_read(path)
    rec = vault.db.get_file(path)  # after open_read, which indexes files found by hand
    try:
        up = vault.begin_write(path, encrypt=encrypt)
        pump(src, up, REWRITE_BLOCK)
    finally:
        src.close()
    done: FileRecord = up.commit(mtime=mtime, expect_generation=rec.generation if rec else 0)
    return done.size


#: Files converted at once. Each commit is made durable on its own (blob, key file,
#: renames, index row), so one converter waits on the disk's flush latency for every file;
#: many in flight let the filesystem journal commit their flushes together, and the AEAD,
#: reads and writes release the GIL, so large files use both cores.
WORKERS = 16


#: Batches of small files converted at once (vault.convert_batch): two keep the disk
#: busy with one batch's flush while the other is read and encrypted.
BATCH_WORKERS = 2


def convert_all(vault, users: list[str], *, encrypt: bool,
                progress: Progress | None = None, workers: int = WORKERS,
                batch_workers: int = BATCH_WORKERS) -> ConvertReport:
    vault.recover()
    report = ConvertReport()
    lock = threading.Lock()

    stop = threading.Event()  # set by an error that is not one file's (a full disk)

    def record(size: int, *, done: int = 0, skipped: bool = False,
               failed: tuple[str, str] | None = None) -> None:
        with lock:
            if failed:
                report.failed.append(failed)
            elif skipped:
                report.skipped += 1
            else:
                report.converted += 1
                report.bytes += done
            if progress:
                progress(1, size)

    def one(path: str, size: int) -> None:
        if stop.is_set():
            return
        done = skipped = 0
        failed = None
        try:
            if _is_encrypted(vault, path) == encrypt:
                skipped = 1
            else:
                rec = vault.db.get_file(path)
                e = vault.storage.stat(path)
                mtime = rec.mtime if rec else (e.mtime if e else 0.0)
                done = _rewrite(vault, path, encrypt=encrypt, mtime=mtime)
        except StorageNotFound:
            return  # removed while we ran
        except DavServerError as err:
            log.error("could not %s %s: %s", "encrypt" if encrypt else "decrypt", path, err)
            failed = (path, str(err))
        except BaseException:
            stop.set()
            raise
        record(size, done=done, skipped=bool(skipped), failed=failed)

    def batch(files: list[tuple[str, int]]) -> None:
        if stop.is_set():
            return
        try:
            outcomes = convert_batch.convert_batch(vault, files, encrypt=encrypt)
        except BaseException:
            stop.set()
            raise
        for o in outcomes:
            if not o.gone:
                record(o.size, done=o.bytes, skipped=o.skipped,
                       failed=(o.path, o.error) if o.error else None)

    files = plan(vault, users)
    small: list[tuple[str, int]] = []
    if convert_batch.supported(vault) and batch_workers > 0:
        small = [f for f in files if f[1] <= convert_batch.SMALL_BYTES]
        files = [f for f in files if f[1] > convert_batch.SMALL_BYTES]
    _run(stop, workers, [(one, f) for f in files])
    _run(stop, batch_workers, [(batch, (b,)) for b in convert_batch.batches(small)])
    return report


def _run(stop: threading.Event, workers: int, calls: list) -> None:
    """Run ``fn(*args)`` for each (fn, args) on ``workers`` threads; the first error that
    is not one file's stops the rest and is raised."""
    if workers <= 1 or len(calls) <= 1:
        for fn, args in calls:
            fn(*args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert") as pool:
        # Each task in a copy of this context: the identities of acting_as (user-key
        # mode: the recovery key) are context variables, which threads do not inherit.
        pending = [pool.submit(contextvars.copy_context().run, fn, *args)
                   for fn, args in calls]
        try:
            for f in pending:
                f.result()  # re-raises what is not a per-file failure (a full disk, ...)
        except BaseException:
            stop.set()  # Ctrl-C too: the files in flight finish or roll back, no more start
            for f in pending:
                f.cancel()
            raise
