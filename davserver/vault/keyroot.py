"""change-key-storage-root: copy, verify, switch, remove — resumable at every step.

The source and the target are key storage directories or the metadata database (``db:``,
vault.keydocs), in any combination but the same: one protocol moves keys into the
database for several nodes and back out to a directory.

The job's target is recorded in the DB before anything is copied, so a re-run after a
crash continues with the same target (and refuses a different one). Documents are copied
with atomic writes and compared byte for byte before the DB is switched; only then is the
old copy removed. At any instant one complete key store is the one the DB names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from davserver.errors import DavServerError, UserError
from davserver.meta import settings
from davserver.vault.keydocs import KeyDocs, canonical, is_db, location_is_empty, open_keydocs

S_KEY_ROOT = settings.KEY_ROOT
S_JOB = settings.JOB_KEY_ROOT

#: Documents copied per write_many: one transaction (and sync) each into the database.
COPY_BATCH = 256


def _shown(location: str) -> str:
    return "the database" if is_db(location) else location


def _differs(source: KeyDocs, target: KeyDocs, name: str, data: bytes | None = None) -> bool:
    if data is None:
        data = source.get(name)
    return target.get(name) != data


def change_key_storage_root(db, current: str, target: str, *, fsync: bool = True,
                            settle_seconds: float = 2.5,
                            progress: Callable[[int, int], None] | None = None) -> dict:
    """Move the key store from ``current`` to ``target`` (a directory or ``db:``)."""
    target = canonical(target)
    job = db.get_setting(S_JOB)
    if job:
        state = json.loads(job)
        if state["target"] != target:
            raise UserError(f"an unfinished move to {_shown(state['target'])} exists; re-run "
                            "with that target to finish it")
        source = state["source"]
    else:
        source = canonical(current)
        if target == source:
            # Also the re-run of a move that finished but was killed before it said so.
            docs = open_keydocs(target, db, fsync=fsync)
            return {"source": source, "target": target,
                    "key_files": sum(1 for _ in docs.names()), "already": True}
        if not is_db(source) and not is_db(target) \
                and os.path.commonpath([source, target]) in (source, target):
            raise UserError("the new key storage root must not be inside the old one or "
                            "contain it")
        if not location_is_empty(target, db):
            raise UserError(f"{_shown(target)} is not empty; choose an empty or new directory"
                            if not is_db(target) else
                            "the database already holds key documents (key_files); a "
                            "move into it needs it empty")
        db.set_setting(S_JOB, json.dumps({"source": source, "target": target}))
    dst = open_keydocs(target, db, fsync=fsync)
    switched = (db.get_setting(S_KEY_ROOT) or "") == target
    src_exists = is_db(source) or os.path.exists(source)
    if not switched:
        src = open_keydocs(source, db, fsync=fsync)
        names = list(src.names())
        batch: list[tuple[str, bytes]] = []
        sizes: list[int] = []

        def flush() -> None:
            dst.write_many(batch)
            for size in sizes:
                if progress:
                    progress(1, size)
            batch.clear()
            sizes.clear()

        for name in names:
            data = src.get(name)
            if data is None:
                continue  # deleted meanwhile (the servers keep running)
            if _differs(src, dst, name, data):
                batch.append((name, data))
            sizes.append(len(data))
            if len(sizes) >= COPY_BATCH:
                flush()
        flush()
        missing = [n for n in names if src.exists(n) and _differs(src, dst, n)]
        if missing:
            raise DavServerError(f"verification failed for {len(missing)} key files; "
                                 "nothing was switched, re-run to retry")
        db.set_setting(S_KEY_ROOT, target)
    if src_exists:
        src = open_keydocs(source, db, fsync=fsync)
        # Running servers re-read the root within settle_seconds; anything they wrote to
        # the old store meanwhile is carried over before the old store goes.
        time.sleep(settle_seconds)
        for name in src.names():
            if not dst.exists(name):
                data = src.get(name)
                if data is not None:
                    dst.write(name, data)
        src.remove_all()
    copied = sum(1 for _ in dst.names())
    db.delete_setting(S_JOB)
    return {"source": source, "target": target, "key_files": copied}
