"""Where key documents live: a directory (the key storage root) or the metadata database.

Every key document has a relative name (``master-<kid>.json``, ``files/ab/ab12….json``,
``users/alice.json``, ``shares/3/v1.json``, ``app-passwords/alice/7.json``) and the same
bytes in either store, so the key store, user keys, share keys, app passwords, backups,
offline recovery and the move between stores are written once against this interface.
The directory keeps today's durability exactly (durable.py: atomic replace, in-place
creation of new names, batched appends with one syncfs); the database store is
davserver.meta.keydocs_db. The key storage root setting selects: a path, or ``db:``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Protocol

from davserver.durable import TMP_PREFIX, append_many, write_atomic, write_new
from davserver.errors import UserError
from davserver.meta.keydocs_db import LOCATION as DB_LOCATION
from davserver.meta.keydocs_db import DbKeyDocs

_DB_SPELLINGS = ("db:", "database")  # a bare "db" stays a directory name


class KeyDocs(Protocol):
    location: str  # an absolute directory, or "db:"
    fsync: bool
    #: the directory a batch of write_new(flush=False) is made durable by syncing (its
    #: file system); None where each write is durable when it returns (the database)
    sync_root: str | None

    def describe(self) -> str: ...
    def get(self, name: str) -> bytes | None: ...
    def exists(self, name: str) -> bool: ...
    def stamp(self, name: str) -> tuple | None: ...
    def names(self, prefix: str = "") -> Iterator[str]: ...
    def write(self, name: str, data: bytes) -> None: ...
    def write_new(self, name: str, data: bytes, *, flush: bool = True) -> None: ...
    def write_many(self, items: list[tuple[str, bytes]]) -> None: ...
    def append_many(self, items: list[tuple[str, bytes]]) -> list[str]: ...
    def delete(self, name: str, *, prune: bool = False) -> bool: ...
    def remove_all(self) -> None: ...
    def cleanup(self) -> int: ...
    def is_empty(self) -> bool: ...


def is_db(location: str) -> bool:
    return location.strip().lower() in _DB_SPELLINGS


def canonical(location: str) -> str:
    """``db:`` for the database (any accepted spelling), else the absolute directory."""
    if is_db(location):
        return DB_LOCATION
    if not location.strip():
        raise UserError("the key storage root is empty: give a directory or db:")
    return os.path.abspath(location)


def open_keydocs(location: str, db, *, fsync: bool = True) -> KeyDocs:
    """The store a key storage root setting names; ``db``: the instance's MetaDB."""
    if is_db(location):
        if db is None:
            raise UserError("the keys are in the database: give its URL (--database-url)")
        return DbKeyDocs(db, fsync=fsync)
    return DirKeyDocs(location, fsync=fsync)


def _check(name: str) -> list[str]:
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad key document name {name!r}")
    return parts


class DirKeyDocs:
    """Key documents as files under ``root`` (the key storage directory)."""

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = self.location = self.sync_root = os.path.abspath(root)
        self.fsync = fsync
        os.makedirs(self.root, mode=0o700, exist_ok=True)  # makedirs' mode: the leaf only
        os.makedirs(os.path.join(self.root, "files"), mode=0o700, exist_ok=True)

    def describe(self) -> str:
        return self.root

    def path(self, name: str) -> str:
        return os.path.join(self.root, *_check(name))

    def get(self, name: str) -> bytes | None:
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def stamp(self, name: str) -> tuple | None:
        try:
            st = os.stat(self.path(name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self.path(name), data, fsync=self.fsync)

    def write_new(self, name: str, data: bytes, *, flush: bool = True) -> None:
        write_new(self.path(name), data, fsync=self.fsync and flush)

    def write_many(self, items: list[tuple[str, bytes]]) -> None:
        for name, data in items:  # each replaced atomically, as write()
            self.write(name, data)

    def append_many(self, items: list[tuple[str, bytes]]) -> list[str]:
        by_path = {self.path(n): n for n, _d in items}
        gone = append_many([(self.path(n), d) for n, d in items], fsync=self.fsync)
        return [by_path[p] for p in gone]

    def delete(self, name: str, *, prune: bool = False) -> bool:
        """``prune``: also remove the document's folder once empty (a share's versions)."""
        path = self.path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        if prune:
            try:
                os.rmdir(os.path.dirname(path))
            except OSError:
                pass
        return True

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=False)

    def cleanup(self) -> int:
        """Remove temp files that a crash left behind in write_atomic."""
        n = 0
        for d, _dirs, names in os.walk(self.root):
            for name in names:
                if name.startswith(TMP_PREFIX):
                    try:
                        os.unlink(os.path.join(d, name))
                        n += 1
                    except FileNotFoundError:
                        pass
        return n

    def names(self, prefix: str = "") -> Iterator[str]:
        """Documents whose name starts with ``prefix``, a folder at a time (sorted within
        it); folders that cannot hold such names are not entered (``master-`` does not
        walk files/)."""
        start = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *start.split("/")) if start else self.root
        for d, dirs, files in os.walk(top):
            rel = os.path.relpath(d, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            dirs[:] = sorted(x for x in dirs if (rel + x + "/").startswith(prefix)
                             or prefix.startswith(rel + x + "/"))
            yield from sorted(rel + n for n in files
                              if not n.startswith(TMP_PREFIX) and (rel + n).startswith(prefix))

    def is_empty(self) -> bool:
        return next(self.names(), None) is None


def location_is_empty(location: str, db) -> bool:
    """Whether a move may target ``location``: an empty or missing directory (nothing
    created in it to find out), or a database whose key_files table is empty."""
    if is_db(location):
        return DbKeyDocs(db, fsync=False).is_empty()
    return not os.path.exists(location) or not os.listdir(location)
