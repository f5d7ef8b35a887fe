"""Key documents in the metadata database: the ``key_files`` table (keydocs_schema).

The same operations as the key storage directory (davserver.vault.keydocs), so several
nodes can share keys through PostgreSQL instead of a shared filesystem. Guarantees match
the directory's: a write replaces a whole document or nothing (one statement), a new
document's write fails if the name is taken, a batch of appends commits together. On
SQLite a write with ``fsync`` is synced before it returns (synchronous=FULL for that
statement), as the directory store fsyncs: a new file's key must be on disk before the
file that needs it is renamed in.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from davserver.errors import UserError

#: What the key storage root setting holds when the keys are in the database.
LOCATION = "db:"
_BATCH = 1000


def _upper(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (names are
    compared bytewise: BLOB order in SQLite, COLLATE "C" in PostgreSQL)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def _version() -> int:
    return secrets.randbits(62)


class DbKeyDocs:
    """Named key documents in the ``key_files`` table of ``db`` (a MetaDB or PgMetaDB)."""

    location = LOCATION
    sync_root = None

    def __init__(self, db, *, fsync: bool = True) -> None:
        self.db = db
        self.fsync = fsync

    def close(self) -> None:
        """Close the database when these documents were opened alone (open_offline)."""

    def describe(self) -> str:
        return "database"

    # --- writing ------------------------------------------------------------------------

    @contextmanager
    def _writer(self):
        """A connection to write on: the caller's open transaction if there is one (the
        write then commits with it), else one statement of its own, synced on SQLite."""
        c = self.db._conn()
        if c.in_transaction:
            yield c
            return
        sqlite = isinstance(c, sqlite3.Connection)
        if not sqlite:
            yield c  # autocommit: a committed statement is durable on PostgreSQL
            return
        if self.fsync:
            c.execute("PRAGMA synchronous=FULL")
        self.db._writers.acquire_write()
        try:
            yield c
        finally:
            self.db._writers.release()
            if self.fsync:
                c.execute("PRAGMA synchronous=NORMAL")

    def write(self, name: str, data: bytes) -> None:
        with self._writer() as c:
            c.execute("INSERT INTO key_files(name, content, version) VALUES(?, ?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET content = excluded.content, "
                      "version = excluded.version", (name, bytes(data), _version()))

    def write_new(self, name: str, data: bytes, *, flush: bool = True) -> None:
        """``flush`` is the directory store's: a row is durable when its transaction
        commits."""
        with self._writer() as c:
            cur = c.execute("INSERT INTO key_files(name, content, version) VALUES(?, ?, ?) "
                            "ON CONFLICT(name) DO NOTHING", (name, bytes(data), _version()))
            if cur.rowcount == 0:
                raise FileExistsError(name)

    def write_many(self, items: list[tuple[str, bytes]]) -> None:
        """Write (replace) several documents in one transaction: one sync for the batch
        (a move into the database copies a store of millions of keys)."""
        if not items:
            return
        sql = ("INSERT INTO key_files(name, content, version) VALUES(?, ?, ?) "
               "ON CONFLICT(name) DO UPDATE SET content = excluded.content, "
               "version = excluded.version")
        rows = [(n, bytes(d), _version()) for n, d in items]
        c = self.db._conn()
        if c.in_transaction:
            c.executemany(sql, rows)
            return
        sqlite = isinstance(c, sqlite3.Connection)
        if sqlite and self.fsync:
            c.execute("PRAGMA synchronous=FULL")
        try:
            with self.db.tx() as t:
                t.executemany(sql, rows)
        finally:
            if sqlite and self.fsync:
                c.execute("PRAGMA synchronous=NORMAL")

    def append_many(self, items: list[tuple[str, bytes]]) -> list[str]:
        """Append to existing documents in one transaction; the names that did not exist."""
        if not items:
            return []
        missing: list[str] = []
        c = self.db._conn()
        if c.in_transaction:
            self._append(c, items, missing)
        elif isinstance(c, sqlite3.Connection):
            if self.fsync:
                c.execute("PRAGMA synchronous=FULL")
            try:
                with self.db.tx() as t:
                    self._append(t, items, missing)
            finally:
                if self.fsync:
                    c.execute("PRAGMA synchronous=NORMAL")
        else:
            with self.db.tx() as t:
                self._append(t, items, missing)
        return missing

    @staticmethod
    def _append(c, items: list[tuple[str, bytes]], missing: list[str]) -> None:
        for name, data in items:
            row = c.execute("SELECT content FROM key_files WHERE name = ?", (name,)).fetchone()
            if row is None:
                missing.append(name)
                continue
            c.execute("UPDATE key_files SET content = ?, version = ? WHERE name = ?",
                      (bytes(row[0]) + bytes(data), _version(), name))

    def delete(self, name: str, *, prune: bool = False) -> bool:
        with self._writer() as c:
            return c.execute("DELETE FROM key_files WHERE name = ?", (name,)).rowcount > 0

    def remove_all(self) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM key_files")

    def cleanup(self) -> int:
        return 0  # nothing is left half-written by a transaction

    # --- reading ------------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        rows = self.db.query("SELECT content FROM key_files WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def exists(self, name: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM key_files WHERE name = ?", (name,)))

    def stamp(self, name: str) -> tuple | None:
        rows = self.db.query("SELECT version, length(content) FROM key_files WHERE name = ?",
                             (name,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def names(self, prefix: str = "") -> Iterator[str]:
        """Every document whose name starts with ``prefix``, in name order, read a batch
        at a time (a store of millions of files is never held at once)."""
        upper = _upper(prefix)
        last = None
        while True:
            sql = "SELECT name FROM key_files WHERE name >= ?"
            args: list = [prefix]
            if last is not None:
                sql += " AND name > ?"
                args.append(last)
            if upper is not None:
                sql += " AND name < ?"
                args.append(upper)
            rows = self.db.query(sql + f" ORDER BY name LIMIT {_BATCH}", args)
            for (name,) in rows:
                yield name
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def is_empty(self) -> bool:
        return not self.db.query("SELECT 1 FROM key_files LIMIT 1")

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM key_files")[0][0])


class _ReadOnlySqlite:
    """Just enough of a MetaDB to read a SQLite file without changing it (offline)."""

    def __init__(self, path: str) -> None:
        self._c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def query(self, sql: str, args=()) -> list[tuple]:
        return self._c.execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        self._c.close()


class _Owning(DbKeyDocs):
    def __init__(self, db) -> None:
        super().__init__(db, fsync=False)

    def close(self) -> None:
        self.db.close()


def open_offline(url_or_path: str, run_dir: str) -> DbKeyDocs:
    """The key documents (to read; close() when done) of the database at ``url_or_path``
    (a SQLite file, opened read-only, or a postgresql:// URL), for offline recovery: the
    schema version is not checked, an older database is read as it is."""
    if url_or_path.split("://", 1)[0].lower() in ("postgresql", "postgres") \
            and "://" in url_or_path:
        from davserver.meta.pg import PgMetaDB

        db = PgMetaDB(url_or_path, run_dir, check_version=False, pool_size=1)
        return _Owning(db)
    if url_or_path.startswith("sqlite:///"):
        url_or_path = url_or_path[len("sqlite://"):]
    if not os.path.isfile(url_or_path):
        raise UserError(f"database {url_or_path} not found")
    db = _ReadOnlySqlite(url_or_path)
    try:
        if not db.query("SELECT 1 FROM sqlite_master WHERE name = 'key_files'"):
            raise UserError(f"{url_or_path} holds no key store (no key_files table)")
    except sqlite3.DatabaseError as e:
        db.close()
        raise UserError(f"{url_or_path} is not a davserver database ({e})") from None
    except UserError:
        db.close()
        raise
    return _Owning(db)
