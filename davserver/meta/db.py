"""SQLite metadata store (the embedded default).

What lives here and why: the file index (path -> file ID, generation, plaintext size) is
what lets us refuse a swapped or rolled-back file; the pending table makes a commit that
spans storage, key store and DB crash-safe; properties and locks must survive restarts.
Keys never live here: the key store is a directory of files that an offline recovery can
read without this database.

One connection per thread (SQLite connections are not shareable), WAL journal so readers
never block the writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from davserver.meta import (
    chunkstage_schema,
    keydocs_schema,
    layout_schema,
    mounts_schema,
    nextcloud_schema,
    objects_schema,
    schema_version,
)
from davserver.meta.interprocess import ChangeCounter, SharedRWLock
from davserver.meta.shares_schema import SHARES_SCHEMA

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    backend TEXT NOT NULL DEFAULT 'local',
    display_name TEXT,
    email TEXT,
    quota_bytes INTEGER,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    parent TEXT NOT NULL,
    file_id BLOB,
    generation INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_parent ON files(parent);
CREATE INDEX IF NOT EXISTS files_owner ON files(owner);
CREATE INDEX IF NOT EXISTS files_file_id ON files(file_id);
CREATE TABLE IF NOT EXISTS pending(
    file_id BLOB PRIMARY KEY,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    plain INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS doomed_keys(file_id BLOB PRIMARY KEY);
CREATE TABLE IF NOT EXISTS usage(owner TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON files BEGIN
    INSERT INTO usage(owner, bytes) VALUES(new.owner, new.size)
    ON CONFLICT(owner) DO UPDATE SET bytes = bytes + new.size;
END;
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON files BEGIN
    UPDATE usage SET bytes = bytes - old.size WHERE owner = old.owner;
END;
CREATE TRIGGER IF NOT EXISTS usage_update AFTER UPDATE OF size, owner ON files BEGIN
    UPDATE usage SET bytes = bytes - old.size WHERE owner = old.owner;
    INSERT INTO usage(owner, bytes) VALUES(new.owner, new.size)
    ON CONFLICT(owner) DO UPDATE SET bytes = bytes + new.size;
END;
CREATE TABLE IF NOT EXISTS props(
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY(path, name)
);
CREATE TABLE IF NOT EXISTS locks(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures(key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, at);
CREATE TABLE IF NOT EXISTS dir_etags(
    path TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    etag TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dir_etags_parent ON dir_etags(parent);
CREATE TABLE IF NOT EXISTS web_sessions(
    token_hash BLOB PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    key_locked INTEGER NOT NULL DEFAULT 0,
    expires REAL NOT NULL
);
"""

#: Tables of later features, one module each (davserver/meta/*_schema.py), so features
#: built side by side do not edit one string. Every statement is idempotent.
SCHEMA_PARTS: list[str] = [objects_schema.SCHEMA, nextcloud_schema.SCHEMA,
                            nextcloud_schema.APP_SCHEMA, SHARES_SCHEMA, mounts_schema.SCHEMA,
                            chunkstage_schema.SCHEMA, keydocs_schema.SCHEMA,
                            layout_schema.SCHEMA]  # last: its triggers name the others


class FileRecord(NamedTuple):
    """One indexed file. ``file_id`` is None for a plaintext (not yet encrypted) file.
    A NamedTuple (immutable, and quick to make: a listing makes one per row)."""

    path: str
    file_id: bytes | None
    generation: int
    size: int
    mtime: float

    @property
    def encrypted(self) -> bool:
        return self.file_id is not None


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str | None
    backend: str
    display_name: str | None
    email: str | None
    quota_bytes: int | None
    is_admin: bool
    created: float


def parent_of(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i >= 0 else ""


def owner_of(path: str) -> str:
    return path.split("/", 1)[0]


def _under(column: str) -> str:
    """SQL for 'column is path or below path' without LIKE (names may contain % and _)."""
    return f"({column} = ? OR substr({column}, 1, length(?) + 1) = ? || '/')"


class _KeptAnswers:
    """Answers a process keeps while a version stays the same; a new version starts
    afresh. Version and answers are one attribute, so a thread never pairs one version
    with another version's answers."""

    MAX = 10000  # answers kept per version

    def __init__(self) -> None:
        self._kept: tuple[object, dict] = ((), {})

    def for_version(self, version: object) -> dict:
        at, kept = self._kept
        if at != version:
            kept = {}
            self._kept = (version, kept)
        return kept

    @classmethod
    def keep(cls, kept: dict, key, answer) -> None:
        if len(kept) < cls.MAX:
            kept[key] = answer


class MetaDB:
    def __init__(self, path: str, *, durable_markers: bool = True,
                 check_version: bool = True) -> None:
        """``durable_markers``: a commit's pending row is on disk before the commit goes
        on (the instance's ``fsync`` setting); see :meth:`add_pending`. ``check_version``:
        refuse a database at another schema version (only ``davserver upgrade`` opens
        one without)."""
        self.path = path
        self.durable_markers = durable_markers
        self._local = threading.local()
        # Bumped after every settings change, by any process using this data directory.
        run = self.run_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "run")
        self._settings_changes = ChangeCounter(os.path.join(run, "settings.version"))
        # Bumped after every write to users or login_failures. Every request reads a user
        # row and the throttle's failure counts; between such writes (rare) each process
        # answers both from memory, for at most ACCOUNTS_TTL (other nodes sharing the DB
        # bump no counter here). The counter is read before a query whose answer is kept
        # and bumped after the commit, so a kept answer is never older than its version.
        self._account_changes = ChangeCounter(os.path.join(run, "accounts.version"))
        # Writers of this data directory queue here, in the kernel, before BEGIN IMMEDIATE.
        # Left to SQLite, a writer that finds the database locked polls it with sleeps of
        # up to 100 ms: with 4 clients uploading through 2 worker processes, most of a
        # small PUT's time went to those sleeps. flock wakes the next writer at once.
        self._writers = SharedRWLock(os.path.join(run, "db.write.lock"))
        self._user_rows = _KeptAnswers()  # name -> UserRecord | None
        self._clean_keys = _KeptAnswers()  # throttle key -> True: no failures on record
        self._layout_answers: dict[str, _KeptAnswers] = {}  # see kept_for_layout
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.open_schema(check=check_version)

    # --- schema (versions and migrations: davserver.meta.schema_version) --------------

    def schema_version(self) -> int | None:
        """The stored schema version; None for an empty database."""
        c = self._conn()
        if not c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                         "AND name = 'settings'").fetchone():
            return None
        return schema_version.read_version(c)

    def open_schema(self, *, check: bool = True) -> None:
        """Create a new database at the current version, or add the tables of features
        added since (CREATE ... IF NOT EXISTS) to one at the current version."""
        found = self.schema_version()
        c = self._conn()
        if found is None:
            # Tables and version stamp in one transaction: a process opening the file
            # meanwhile sees either nothing or a complete database at the current version.
            try:
                c.executescript(
                    "BEGIN IMMEDIATE;\n" + "\n".join([SCHEMA, *SCHEMA_PARTS])
                    + f"\nINSERT INTO settings(key, value) VALUES("
                    f"'{schema_version.VERSION_KEY}', '{schema_version.CURRENT}') "
                    "ON CONFLICT(key) DO NOTHING;\nCOMMIT;")
            finally:
                if c.in_transaction:
                    c.execute("ROLLBACK")
        elif found == schema_version.CURRENT:
            c.executescript(SCHEMA)
            for part in SCHEMA_PARTS:
                c.executescript(part)
        elif check:
            raise schema_version.out_of_date(found)

    def run_ddl(self, conn: sqlite3.Connection, sql: str) -> None:
        """One migration statement (SQLite dialect) inside ``conn``'s transaction."""
        conn.execute(sql)

    def run_native_postgresql(self, conn: sqlite3.Connection, sql: str) -> None:
        """A PostgreSQL-only migration step: nothing to do on SQLite."""

    # --- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
        return c

    class _Tx:
        def __init__(self, conn: sqlite3.Connection, writers: SharedRWLock) -> None:
            self.conn = conn
            self.writers = writers

        def __enter__(self) -> sqlite3.Connection:
            self.writers.acquire_write()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.writers.release()
                raise
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                if exc_type is not None:
                    self._rollback()
                    return
                try:
                    self.conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full) can leave the transaction open and its
                    # write lock held: every process's next write would wait on this thread.
                    self._rollback()
                    raise
            finally:
                self.writers.release()

        def _rollback(self) -> None:
            # After some errors (SQLITE_FULL, SQLITE_IOERR) SQLite has rolled back already;
            # a second ROLLBACK would fail and hide the error that matters.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def tx(self) -> MetaDB._Tx:
        return MetaDB._Tx(self._conn(), self._writers)

    def query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        return self._conn().execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def backup_to(self, dest: str) -> None:
        """Consistent online snapshot (SQLite backup API)."""
        target = sqlite3.connect(dest)
        try:
            self._conn().backup(target)
        finally:
            target.close()

    # --- settings ----------------------------------------------------------------------

    def layout_version(self) -> int:
        """Changes with every change to shares, groups or mounts (meta.layout_schema)."""
        return self.query("SELECT v FROM layout_version WHERE id = 1")[0][0]

    def kept_for_layout(self, name: str) -> dict:
        """A dict of answers named ``name`` that stays valid while the layout version
        does (see meta.layout_schema); a new version starts it afresh."""
        kept = self._layout_answers.get(name)
        if kept is None:
            kept = self._layout_answers[name] = _KeptAnswers()
        return kept.for_version(self.layout_version())

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        rows = self.query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    @property
    def settings_version(self) -> int:
        """Changes whenever a process of this node changed a setting (one pread)."""
        return self._settings_changes.value()

    def set_setting(self, key: str, value: str) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO settings(key, value) VALUES(?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
        self._settings_changes.bump()

    def delete_setting(self, key: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM settings WHERE key = ?", (key,))
        self._settings_changes.bump()

    # --- users -------------------------------------------------------------------------

    _USER_COLS = "name, password_hash, backend, display_name, email, quota_bytes, is_admin, created"

    def _user(self, row: tuple) -> UserRecord:
        return UserRecord(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7])

    def add_user(self, name: str, password_hash: str | None, *, backend: str = "local",
                 is_admin: bool = False, quota_bytes: int | None = None) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO users(name, password_hash, backend, quota_bytes, is_admin, created) "
                "VALUES(?, ?, ?, ?, ?, ?)",
                (name, password_hash, backend, quota_bytes, int(is_admin), time.time()),
            )
        self._account_changes.bump()

    ACCOUNTS_TTL = 1.0  # seconds a change made by another node may take to be seen here

    def _accounts_version(self) -> tuple[int, int]:
        return self._account_changes.value(), int(time.monotonic() / self.ACCOUNTS_TTL)

    def get_user(self, name: str) -> UserRecord | None:
        kept = self._user_rows.for_version(self._accounts_version())
        if name in kept:
            return kept[name]
        rows = self.query(f"SELECT {self._USER_COLS} FROM users WHERE name = ?", (name,))
        user = self._user(rows[0]) if rows else None
        _KeptAnswers.keep(kept, name, user)
        return user

    def list_users(self) -> list[UserRecord]:
        return [self._user(r) for r in self.query(f"SELECT {self._USER_COLS} FROM users "
                                                  "ORDER BY name")]

    def update_user(self, name: str, **fields) -> None:
        allowed = {"password_hash", "display_name", "email", "quota_bytes", "is_admin"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad user fields {sorted(fields)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE users SET {sets} WHERE name = ?", (*fields.values(), name))
        self._account_changes.bump()

    def delete_user(self, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM users WHERE name = ?", (name,))
            c.execute(f"DELETE FROM files WHERE {_under('path')}", (name, name, name))
            c.execute(f"DELETE FROM props WHERE {_under('path')}", (name, name, name))
        self._account_changes.bump()

    # --- file index --------------------------------------------------------------------

    _FILE_COLS = "path, file_id, generation, size, mtime"

    def get_file(self, path: str) -> FileRecord | None:
        rows = self.query(f"SELECT {self._FILE_COLS} FROM files WHERE path = ?", (path,))
        return FileRecord(*rows[0]) if rows else None

    def children(self, parent: str) -> dict[str, FileRecord]:
        rows = self.query(f"SELECT {self._FILE_COLS} FROM files WHERE parent = ?", (parent,))
        return {r[0].rsplit("/", 1)[-1]: FileRecord(*r) for r in rows}

    def files_by_id(self, file_id: bytes) -> list[FileRecord]:
        rows = self.query(f"SELECT {self._FILE_COLS} FROM files WHERE file_id = ?", (file_id,))
        return [FileRecord(*r) for r in rows]

    def iter_files(self, under: str | None = None) -> Iterator[FileRecord]:
        if under is None:
            rows = self.query(f"SELECT {self._FILE_COLS} FROM files ORDER BY path")
        else:
            rows = self.query(f"SELECT {self._FILE_COLS} FROM files WHERE {_under('path')} "
                              "ORDER BY path", (under, under, under))
        for r in rows:
            yield FileRecord(*r)

    def put_file(self, rec: FileRecord, *, conn: sqlite3.Connection | None = None) -> None:
        sql = ("INSERT INTO files(path, owner, parent, file_id, generation, size, mtime) "
               "VALUES(?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
               "file_id = excluded.file_id, generation = excluded.generation, "
               "size = excluded.size, mtime = excluded.mtime")
        args = (rec.path, owner_of(rec.path), parent_of(rec.path), rec.file_id,
                rec.generation, rec.size, rec.mtime)
        if conn is not None:
            conn.execute(sql, args)
            nextcloud_schema.assign_id(conn, rec.path)
        else:
            with self.tx() as c:
                c.execute(sql, args)
                nextcloud_schema.assign_id(c, rec.path)

    def delete_files(self, path: str, *, conn: sqlite3.Connection | None = None) -> None:
        """Forget ``path`` and everything below it."""
        if conn is None:
            with self.tx() as c:
                self.delete_files(path, conn=c)
            return
        conn.execute(f"DELETE FROM files WHERE {_under('path')}", (path, path, path))
        conn.execute(f"DELETE FROM dir_etags WHERE {_under('path')}", (path, path, path))
        nextcloud_schema.delete_ids(conn, path)
        conn.execute(f"DELETE FROM nodes WHERE {_under('path')}", (path, path, path))

    def move_files(self, src: str, dst: str, *, conn: sqlite3.Connection) -> None:
        n = len(src)
        conn.execute(f"DELETE FROM files WHERE {_under('path')}", (dst, dst, dst))
        conn.execute(
            f"UPDATE files SET path = ? || substr(path, ?), parent = ? || substr(parent, ?), "
            f"owner = ? WHERE {_under('path')}",
            (dst, n + 1, dst, n + 1, owner_of(dst), src, src, src),
        )
        # The moved root's parent is the destination's parent, not a rewrite of the old one.
        conn.execute("UPDATE files SET parent = ? WHERE path = ?", (parent_of(dst), dst))
        conn.execute(f"DELETE FROM dir_etags WHERE {_under('path')}", (dst, dst, dst))
        conn.execute(
            f"UPDATE dir_etags SET path = ? || substr(path, ?), parent = ? || substr(parent, ?) "
            f"WHERE {_under('path')}", (dst, n + 1, dst, n + 1, src, src, src))
        conn.execute("UPDATE dir_etags SET parent = ? WHERE path = ?", (parent_of(dst), dst))
        nextcloud_schema.move_ids(conn, src, dst)
        # Node IDs (shares point at them) follow the move.
        conn.execute(f"DELETE FROM nodes WHERE {_under('path')}", (dst, dst, dst))
        conn.execute(f"UPDATE nodes SET path = ? || substr(path, ?) WHERE {_under('path')}",
                     (dst, n + 1, src, src, src))

    # --- folder ETags (change when anything below changes, for sync clients) ------------

    def touch_dirs(self, path: str, *, conn: sqlite3.Connection | None = None) -> None:
        """New ETags for every folder above ``path`` (up to the home)."""
        if conn is None:
            with self.tx() as c:
                self.touch_dirs(path, conn=c)
            return
        etag = f"{time.time_ns():x}"
        d = parent_of(path)
        while d:
            conn.execute("INSERT INTO dir_etags(path, parent, etag) VALUES(?, ?, ?) "
                         "ON CONFLICT(path) DO UPDATE SET etag = excluded.etag",
                         (d, parent_of(d), etag))
            d = parent_of(d)

    def dir_etag(self, path: str) -> str | None:
        rows = self.query("SELECT etag FROM dir_etags WHERE path = ?", (path,))
        return rows[0][0] if rows else None

    def child_dir_etags(self, parent: str) -> dict[str, str]:
        rows = self.query("SELECT path, etag FROM dir_etags WHERE parent = ?", (parent,))
        return {p.rsplit("/", 1)[-1]: e for p, e in rows}

    def usage(self, owner: str) -> int:
        """Plaintext bytes stored by ``owner``: kept by triggers on the file index, so a
        PROPFIND asking for quota costs one row, not a sum over every file."""
        rows = self.query("SELECT bytes FROM usage WHERE owner = ?", (owner,))
        return int(rows[0][0]) if rows else 0

    # --- pending commits ---------------------------------------------------------------

    def add_pending(self, file_id: bytes, path: str, *, plain: bool = False,
                    durable: bool = True) -> None:
        """Announce a commit; ``plain`` marks a plaintext version replacing an encrypted
        one (then ``file_id`` is just a random marker). One statement: its own transaction.

        The DB runs with synchronous=NORMAL: a commit survives a crash of the process but
        may be lost with power. A row that replaces an encrypted version must not be: the
        commit's rename is made durable right after, and a file on disk that the index
        does not expect, with no pending row, is refused as swapped or rolled back. So with
        ``durable_markers`` and ``durable`` this one transaction is synced (one fsync of
        the WAL), whatever the filesystem does with the WAL's blocks, which SQLite
        overwrites in place after a checkpoint. For a path the index does not hold yet,
        a lost row costs at most a key file that ``clean-orphaned-keys`` finds (if the
        power failed before the rename) and the caller passes ``durable=False``.
        """
        sync = self.durable_markers and durable
        c = self._conn()
        if sync:
            c.execute("PRAGMA synchronous=FULL")
        self._writers.acquire_write()
        try:
            c.execute("INSERT INTO pending(file_id, path, created, plain) VALUES(?, ?, ?, ?)",
                      (file_id, path, time.time(), int(plain)))
        finally:
            self._writers.release()
            if sync:
                c.execute("PRAGMA synchronous=NORMAL")

    def add_pending_many(self, rows: list[tuple[bytes, str, bool]], *,
                         durable: bool) -> None:
        """:meth:`add_pending` for a batch of commits (file ID, path, plain): one
        transaction, synced once when ``durable`` (see there)."""
        sync = self.durable_markers and durable
        c = self._conn()
        if sync:
            c.execute("PRAGMA synchronous=FULL")
        try:
            now = time.time()
            with self.tx() as tx:
                tx.executemany(
                    "INSERT INTO pending(file_id, path, created, plain) VALUES(?, ?, ?, ?)",
                    [(f, p, now, int(plain)) for f, p, plain in rows])
        finally:
            if sync:
                c.execute("PRAGMA synchronous=NORMAL")

    def pending_for(self, path: str, *, plain: bool = False) -> list[bytes]:
        return [r[0] for r in self.query(
            "SELECT file_id FROM pending WHERE path = ? AND plain = ?", (path, int(plain)))]

    def list_pending(self) -> list[tuple[bytes, str, bool]]:
        return [(r[0], r[1], bool(r[2]))
                for r in self.query("SELECT file_id, path, plain FROM pending")]

    def remove_pending(self, file_id: bytes, *, conn: sqlite3.Connection | None = None) -> None:
        (conn or self._conn()).execute("DELETE FROM pending WHERE file_id = ?", (file_id,))

    # --- keys to delete (recorded with the index change that makes them unused) --------

    def doom_keys(self, file_ids: list[bytes], *, conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO doomed_keys(file_id) VALUES(?) ON CONFLICT DO NOTHING",
                         [(f,) for f in file_ids])

    def doomed_keys(self) -> list[bytes]:
        return [r[0] for r in self.query("SELECT file_id FROM doomed_keys")]

    def forget_doomed(self, file_ids: list[bytes]) -> None:
        for i in range(0, len(file_ids), 500):  # one statement (and transaction) per batch
            batch = file_ids[i:i + 500]
            self._conn().execute(
                f"DELETE FROM doomed_keys WHERE file_id IN ({','.join('?' * len(batch))})",
                batch)

    # --- dead properties ---------------------------------------------------------------

    def get_props(self, path: str) -> dict[str, bytes]:
        return {r[0]: r[1] for r in self.query("SELECT name, value FROM props WHERE path = ?",
                                               (path,))}

    def set_prop(self, path: str, name: str, value: bytes) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO props(path, name, value) VALUES(?, ?, ?) "
                      "ON CONFLICT(path, name) DO UPDATE SET value = excluded.value",
                      (path, name, value))

    def remove_prop(self, path: str, name: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM props WHERE path = ? AND name = ?", (path, name))

    def remove_props(self, path: str, *, tree: bool = False) -> None:
        with self.tx() as c:
            if tree:
                c.execute(f"DELETE FROM props WHERE {_under('path')}", (path, path, path))
            else:
                c.execute("DELETE FROM props WHERE path = ?", (path,))

    def copy_props(self, src: str, dst: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM props WHERE path = ?", (dst,))
            c.execute("INSERT INTO props(path, name, value) SELECT ?, name, value FROM props "
                      "WHERE path = ?", (dst, src))

    def move_props(self, src: str, dst: str, *, conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            with self.tx() as c:
                self.move_props(src, dst, conn=c)
            return
        n = len(src)
        conn.execute(f"DELETE FROM props WHERE {_under('path')}", (dst, dst, dst))
        conn.execute(f"UPDATE props SET path = ? || substr(path, ?) WHERE {_under('path')}",
                     (dst, n + 1, src, src, src))

    # --- lock storage (key/value, used by dav.lockstore) -------------------------------

    def kv_set(self, key: str, value: bytes) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO locks(key, value) VALUES(?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def kv_delete(self, key: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM locks WHERE key = ?", (key,))

    def kv_items(self) -> dict[str, bytes]:
        return dict(self.query("SELECT key, value FROM locks"))

    def kv_clear(self) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM locks")

    # --- failed logins (auth.throttle) -------------------------------------------------

    def failure_counts(self, keys, since: float) -> dict[str, tuple[int, float]]:
        """key -> (failures since ``since``, time of the oldest of them)."""
        clean = self._clean_keys.for_version(self._accounts_version())
        if all(k in clean for k in keys):
            return {}  # none then, and none written since: time only ages failures out
        rows = self.query(
            f"SELECT key, count(*), min(at) FROM login_failures WHERE key IN "
            f"({','.join('?' * len(keys))}) AND at > ? GROUP BY key", (*keys, since))
        counts = {k: (n, oldest) for k, n, oldest in rows}
        for k in keys:
            if k not in counts:
                _KeptAnswers.keep(clean, k, True)
        return counts

    def add_failures(self, keys, at: float, *, keep: int, since: float) -> None:
        with self.tx() as c:
            for key in keys:
                c.execute("INSERT INTO login_failures(key, at) VALUES(?, ?)", (key, at))
                c.execute("DELETE FROM login_failures WHERE key = ? AND (at <= ? OR at NOT IN "
                          "(SELECT at FROM login_failures WHERE key = ? ORDER BY at DESC "
                          "LIMIT ?))", (key, since, key, keep))
        self._account_changes.bump()

    def clear_failures(self, keys) -> None:
        marks = ",".join("?" * len(keys))
        if self.query(f"SELECT 1 FROM login_failures WHERE key IN ({marks}) LIMIT 1", keys):
            self._conn().execute(f"DELETE FROM login_failures WHERE key IN ({marks})",
                                 tuple(keys))  # written only when there is something to clear
            self._account_changes.bump()

    # --- web sessions (in the DB so any node can serve any request) --------------------

    def add_session(self, token_hash: bytes, user: str, csrf: str, key_locked: bool,
                    expires: float) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM web_sessions WHERE expires < ?", (time.time(),))
            c.execute("INSERT INTO web_sessions(token_hash, user, csrf, key_locked, expires) "
                      "VALUES(?, ?, ?, ?, ?)", (token_hash, user, csrf, int(key_locked), expires))

    def get_session(self, token_hash: bytes) -> tuple[str, str, bool] | None:
        rows = self.query("SELECT user, csrf, key_locked FROM web_sessions "
                          "WHERE token_hash = ? AND expires > ?", (token_hash, time.time()))
        return (rows[0][0], rows[0][1], bool(rows[0][2])) if rows else None

    def update_session(self, token_hash: bytes, *, key_locked: bool) -> None:
        with self.tx() as c:
            c.execute("UPDATE web_sessions SET key_locked = ? WHERE token_hash = ?",
                      (int(key_locked), token_hash))

    def delete_session(self, token_hash: bytes) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash,))

    def delete_user_sessions(self, user: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM web_sessions WHERE user = ?", (user,))
