"""change-key-storage-root: copy, verify, switch, remove — resumable at every step.

The job's target is recorded in the DB before anything is copied, so a re-run after a
crash continues with the same target (and refuses a different one). Files are copied with
atomic writes and compared byte for byte before the DB is switched; only then is the old
copy removed. At any instant one complete key store is the one the DB names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable

from davserver.durable import write_atomic
from davserver.errors import DavServerError, UserError
from davserver.meta import settings

S_KEY_ROOT = settings.KEY_ROOT
S_JOB = settings.JOB_KEY_ROOT


def _files(root: str) -> list[str]:
    out = []
    for d, _dirs, names in os.walk(root):
        for n in names:
            if not n.startswith(".tmp-"):
                out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def change_key_storage_root(db, current: str, target: str, *, fsync: bool = True,
                            settle_seconds: float = 2.5,
                            progress: Callable[[int, int], None] | None = None) -> dict:
    target = os.path.abspath(target)
    job = db.get_setting(S_JOB)
    if job:
        state = json.loads(job)
        if state["target"] != target:
            raise UserError(f"an unfinished move to {state['target']} exists; re-run with that "
                            "directory to finish it")
        source = state["source"]
    else:
        source = os.path.abspath(current)
        if target == source:
            # Also the re-run of a move that finished but was killed before it said so.
            return {"source": source, "target": target, "key_files": len(_files(target)),
                    "already": True}
        if os.path.commonpath([source, target]) in (source, target):
            raise UserError("the new key storage root must not be inside the old one or "
                            "contain it")
        if os.path.exists(target) and os.listdir(target):
            raise UserError(f"{target} is not empty; choose an empty or new directory")
        db.set_setting(S_JOB, json.dumps({"source": source, "target": target}))
    os.makedirs(target, mode=0o700, exist_ok=True)
    switched = (db.get_setting(S_KEY_ROOT) or "") == target
    if not switched:
        names = _files(source)
        for rel in names:
            src, dst = os.path.join(source, rel), os.path.join(target, rel)
            if not os.path.exists(dst) or _digest(dst) != _digest(src):
                with open(src, "rb") as f:
                    write_atomic(dst, f.read(), fsync=fsync)
            if progress:
                progress(1, os.path.getsize(src))
        missing = [r for r in names if not os.path.exists(os.path.join(target, r))
                   or _digest(os.path.join(target, r)) != _digest(os.path.join(source, r))]
        if missing:
            raise DavServerError(f"verification failed for {len(missing)} key files; "
                                 "nothing was switched, re-run to retry")
        db.set_setting(S_KEY_ROOT, target)
    if os.path.exists(source):
        # Running servers re-read the root within settle_seconds; anything they wrote to
        # the old root meanwhile is carried over before the old root goes.
        time.sleep(settle_seconds)
        for rel in _files(source):
            dst = os.path.join(target, rel)
            if not os.path.exists(dst):
                with open(os.path.join(source, rel), "rb") as f:
                    write_atomic(dst, f.read(), fsync=fsync)
        shutil.rmtree(source)
    copied = len(_files(target))
    db.delete_setting(S_JOB)
    return {"source": source, "target": target, "key_files": copied}
