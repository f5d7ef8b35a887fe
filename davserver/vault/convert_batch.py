"""encrypt-all / decrypt-all of small files in batches: one flush of the disk per batch.

Why: converted one at a time, every small file costs its own durable commit (fsync of
the key file and its folder, of the blob and its folder, a pending row, an index
transaction), so the job waited on the disk's flush latency thousands of times a second.
Here a batch of files goes through the same commit protocol as :meth:`Vault._commit`,
each step done for the whole batch at once:

1. each file is read and written to a temp blob in its other form (no flush);
2. the commit locks of all its paths are taken, and a file committed meanwhile by
   someone else is left out (Conflict, as in the single-file path);
3. one transaction adds every pending row (synced when an encrypted version is replaced);
4. the key files are written (no flush each);
5. one ``syncfs`` of the blobs' and the key store's file systems: keys and blobs durable;
6. the renames, then one ``syncfs``: the new names durable;
7. one index transaction for the batch (rows, pending rows removed, folder ETags,
   old keys doomed), then the old keys deleted.

So the crash guarantees are the single file's: every file is wholly old or wholly new,
its key durable before its rename, and :meth:`Vault.recover` finishes (renamed) or rolls
back (not renamed) each file of a batch interrupted anywhere, by its pending row.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from davserver.crypto import keywrap
from davserver.errors import Conflict, DavServerError, StorageNotFound
from davserver.meta.db import FileRecord
from davserver.vault.files import RawFile, Upload

log = logging.getLogger("davserver.convert")

#: Files of at most this many bytes are converted in batches (larger ones one by one,
#: where a flush per file is small next to their bytes).
SMALL_BYTES = 1 << 20
#: A batch closes at this many files or bytes, whichever comes first.
BATCH_FILES = 256
BATCH_BYTES = 32 << 20


def supported(vault) -> bool:
    """Batches need a storage that commits many blobs at once (local files)."""
    return bool(getattr(vault.storage, "batch_commit", False))


def batches(files: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    out: list[list[tuple[str, int]]] = []
    cur: list[tuple[str, int]] = []
    size = 0
    for path, n in files:
        if cur and (len(cur) >= BATCH_FILES or size + n > BATCH_BYTES):
            out.append(cur)
            cur, size = [], 0
        cur.append((path, n))
        size += n
    if cur:
        out.append(cur)
    return out


@dataclass
class Outcome:
    """What happened to one file of a batch: converted (``bytes``), skipped, or failed."""

    path: str
    size: int
    bytes: int = 0
    skipped: bool = False
    gone: bool = False
    error: str | None = None


@dataclass
class _Item:
    outcome: Outcome
    up: Upload
    rec: FileRecord | None
    mtime: float
    marker: bytes | None = None
    plain: bool = True
    durable_marker: bool = False


def _prepare(vault, path: str, size: int, encrypt: bool) -> _Item | Outcome:
    """Read one file and write its other form to a temp blob (not yet flushed)."""
    out = Outcome(path, size)
    try:
        src = vault.open_read(path)
    except StorageNotFound:
        out.gone = True
        return out
    try:
        if isinstance(src, RawFile) != encrypt:
            out.skipped = True
            return out
        rec = vault.db.get_file(path)  # after open_read, which indexes files found by hand
        data = src.read()
    finally:
        src.close()
    if rec is not None:
        mtime = rec.mtime
    else:
        e = vault.storage.stat(path)
        mtime = e.mtime if e else 0.0
    up = vault.begin_write(path, encrypt=encrypt)
    try:
        up.write(data)
        if up._stream is not None:
            up._stream.finish()
    except BaseException:
        up.abort()
        raise
    return _Item(out, up, rec, mtime)


def convert_batch(vault, files: list[tuple[str, int]], *, encrypt: bool) -> list[Outcome]:
    """Convert ``files`` (path, stored size) with one durable commit for all of them.

    A per-file problem (unreadable file, missing key, a commit by someone else) fails
    that file only; anything else (a full disk) aborts the batch, leaves every file in
    its old form, and is raised."""
    results: list[Outcome] = []
    items: list[_Item] = []
    try:
        for path, size in files:
            try:
                got = _prepare(vault, path, size, encrypt)
            except DavServerError as err:
                log.error("could not %s %s: %s", "encrypt" if encrypt else "decrypt",
                          path, err)
                got = Outcome(path, size, error=str(err))
            if isinstance(got, Outcome):
                results.append(got)
            else:
                items.append(got)
        if items:
            _commit(vault, items)
    except BaseException:
        for it in items:
            it.up.abort()
        raise
    return results + [it.outcome for it in items]


def _commit(vault, items: list[_Item]) -> None:
    db, keys = vault.db, vault.keys
    with contextlib.ExitStack() as locks:
        for it in sorted(items, key=lambda i: i.up.path):
            locks.enter_context(vault.commit_locks.hold(it.up.path))
        live: list[_Item] = []
        for it in items:
            old = db.get_file(it.up.path)
            if (old.generation if old else 0) != (it.rec.generation if it.rec else 0):
                it.up.abort()
                it.outcome.error = str(Conflict(
                    f"{it.up.path} changed while it was being converted; run the job again"))
                continue
            it.rec = old
            if it.up.file_id is not None:
                it.marker, it.plain = it.up.file_id, False
            elif old is not None and old.encrypted:
                it.marker, it.plain = keywrap.new_file_id(), True
            it.durable_marker = old is not None and old.encrypted
            live.append(it)
        if not live:
            return
        marked = [it for it in live if it.marker is not None]
        db.add_pending_many([(it.marker, it.up.path, it.plain) for it in marked],
                            durable=any(it.durable_marker for it in marked))
        try:
            for it in live:
                if not it.plain:
                    keys.wrap_new(it.up.file_id, it.up._data_key, it.up._recipients,
                                  flush=False)
            errors = vault.storage.commit_many(
                [it.up._blob for it in live],
                flush_also=(keys.docs.sync_root,) if keys.fsync and keys.docs.sync_root
                else ())
        except BaseException:
            # Ctrl-C among the renames: a file renamed in keeps its key and pending row
            # (recover() finishes it); the others are rolled back.
            _undo(vault, [it for it in marked if not getattr(it.up._blob, "published", False)])
            raise
        done = []
        for it, err in zip(live, errors, strict=True):
            if err is None:
                done.append(it)
            else:
                it.outcome.error = f"could not store: {err}"
                if it.marker is not None:
                    _undo(vault, [it])
        # A failure from here on leaves the pending rows: recover() finishes these files.
        vault.storage.flush_names()
        _index(vault, done)
    for it in live:
        it.up._data_key = None


def _undo(vault, items: list[_Item]) -> None:
    """Roll back commits whose blob was not renamed in: keys and pending rows."""
    for it in items:
        if not it.plain:
            vault.keys.delete(it.marker)
        vault.db.remove_pending(it.marker)


def _index(vault, done: list[_Item]) -> None:
    """One index transaction for every file renamed in, then the old keys deleted."""
    if not done:
        return
    doomed: list[bytes] = []
    parents: dict[str, str] = {}
    with vault.db.tx() as c:
        for it in done:
            path, old = it.up.path, it.rec
            rec = FileRecord(path, it.up.file_id, (old.generation + 1) if old else 1,
                             it.up.size, it.mtime)
            vault.db.put_file(rec, conn=c)
            if it.marker is not None:
                vault.db.remove_pending(it.marker, conn=c)
            if old is not None and old.file_id not in (None, it.up.file_id):
                doomed.append(old.file_id)
            parents.setdefault(path.rsplit("/", 1)[0], path)
            it.outcome.bytes = it.up.size
        for path in parents.values():
            vault.db.touch_dirs(path, conn=c)
        vault.db.doom_keys(doomed, conn=c)
    vault._delete_doomed(doomed)
