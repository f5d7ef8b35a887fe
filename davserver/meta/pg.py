"""PostgreSQL metadata store (``database.url = "postgresql://..."``), for several nodes.

Same interface as :class:`davserver.meta.db.MetaDB`, whose methods it inherits: the
modules' SQL runs unchanged through a thin adapter (:class:`PgConnection`) that looks like
the part of ``sqlite3.Connection`` they use, with the text translated once per string
(davserver.meta.pg_dialect). Connections come from a psycopg_pool pool per process and URL;
psycopg prepares a statement on the server after ``prepare_threshold`` uses.

Transactions keep ``tx()``'s meaning. SQLite's ``BEGIN IMMEDIATE`` makes every writing
transaction the only writer of the database, and the commit protocol (vault.files), the
share and mount services and the object namespace check-then-write inside one on that
promise. Here every ``tx()`` starts by taking one transaction-level advisory lock, which
gives the same promise across all nodes, on PostgreSQL's default READ COMMITTED;
statements outside ``tx()`` run in autocommit, as on SQLite. Within a ``tx()`` the
thread's queries (``db.query``, ``db._conn()``) go to the transaction's connection, as
they go to the thread's one connection on SQLite.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from decimal import Decimal

from davserver.errors import DatabaseUnavailable, UserError
from davserver.meta import pg_dialect, schema_version
from davserver.meta.db import SCHEMA, SCHEMA_PARTS, MetaDB, _KeptAnswers
from davserver.meta.interprocess import ChangeCounter

#: pg_advisory_xact_lock key of the writer lock ("davs" in ASCII).
WRITER_LOCK = 0x64617673

DEFAULT_POOL_SIZE = 10
DEFAULT_PREPARE_THRESHOLD = 2


def _down(e: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable(type(e).__name__)


def _recheck(pool) -> None:
    """One pooled connection was found dead (PostgreSQL restarted): test the idle others
    now and replace the dead ones, so each does not cost a client one more 503."""
    try:
        pool.check()
    except Exception:  # noqa: BLE001 - still down: the next request answers 503 again
        pass


def _lost():
    """The exceptions that mean the server is gone or unreachable: HTTP 503 + Retry-After,
    CLI exit 9, never a traceback."""
    psycopg, psycopg_pool = _psycopg()
    return (psycopg.OperationalError, psycopg_pool.PoolTimeout)


def _psycopg():
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise UserError("database.url is a PostgreSQL URL but psycopg is not installed "
                        "(pip install 'davserver[pg]')") from None
    return psycopg, psycopg_pool


# --- pools (one per process and URL: forked workers must not share sockets) ------------

_pools: dict[tuple[int, str], list] = {}  # -> [pool, users]
_pools_guard = threading.Lock()


def _configure(conn) -> None:
    """Sums over BIGINT columns come back as NUMERIC; the modules expect ints, as SQLite
    gives them."""
    psycopg, _ = _psycopg()

    class IntNumeric(psycopg.adapt.Loader):
        def load(self, data):
            d = Decimal(bytes(data).decode())
            return int(d) if d == d.to_integral_value() else float(d)

    conn.adapters.register_loader("numeric", IntNumeric)


def _acquire_pool(url: str, size: int, prepare_threshold: int | None):
    _, psycopg_pool = _psycopg()
    key = (os.getpid(), url)
    with _pools_guard:
        entry = _pools.get(key)
        if entry is None:
            pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=max(1, size), open=False, timeout=30,
                kwargs={"autocommit": True, "prepare_threshold": prepare_threshold,
                        "connect_timeout": 10},
                configure=_configure, name="davserver-meta")
            try:
                pool.open(wait=True, timeout=15)
            except Exception as e:
                pool.close()
                raise DatabaseUnavailable(f"{type(e).__name__}: {e}") from None
            entry = _pools[key] = [pool, 0]
        entry[1] += 1
        return entry[0]


def _release_pool(url: str) -> None:
    key = (os.getpid(), url)
    with _pools_guard:
        entry = _pools.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _pools[key]
            entry[0].close()


# --- the adapter -----------------------------------------------------------------------

class PgCursor:
    """The rows of one statement, fetched at once (the connection may go back to the pool
    before the caller reads them)."""

    __slots__ = ("_rows", "rowcount", "lastrowid")

    def __init__(self, cur, returns_key: bool) -> None:
        self.rowcount = cur.rowcount
        self._rows = cur.fetchall() if cur.description is not None else []
        self.lastrowid = None
        if returns_key:
            self.lastrowid = self._rows[0][0] if self._rows else None
            self._rows = []

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


class PgConnection:
    """What the modules call on a ``tx()`` connection, on one psycopg connection."""

    def __init__(self, conn) -> None:
        self.raw = conn

    def execute(self, sql: str, args: Iterable = ()) -> PgCursor:
        text, returns_key = pg_dialect.statement(sql)
        try:
            return PgCursor(self.raw.execute(text, tuple(args)), returns_key)
        except _lost() as e:
            raise _down(e) from e

    def executemany(self, sql: str, rows: Iterable) -> PgCursor:
        text, _ = pg_dialect.statement(sql)
        try:
            with self.raw.cursor() as cur:
                cur.executemany(text, [tuple(r) for r in rows])
                return PgCursor(cur, False)
        except _lost() as e:
            raise _down(e) from e

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != 0  # 0: idle


class _AutoCommit:
    """``db._conn()`` outside a transaction: each statement on a pooled connection, in
    autocommit, as a statement outside BEGIN is on SQLite."""

    in_transaction = False

    def __init__(self, pool) -> None:
        self._pool = pool

    def execute(self, sql: str, args: Iterable = ()) -> PgCursor:
        try:
            with self._pool.connection() as c:
                return PgConnection(c).execute(sql, args)
        except DatabaseUnavailable:
            _recheck(self._pool)
            raise
        except _lost() as e:
            _recheck(self._pool)
            raise _down(e) from e

    def executemany(self, sql: str, rows: Iterable) -> PgCursor:
        try:
            with self._pool.connection() as c, c.transaction():
                return PgConnection(c).executemany(sql, rows)
        except DatabaseUnavailable:
            _recheck(self._pool)
            raise
        except _lost() as e:
            _recheck(self._pool)
            raise _down(e) from e


class PgMetaDB(MetaDB):
    def __init__(self, url: str, run_dir: str, *, durable_markers: bool = True,
                 check_version: bool = True, pool_size: int = DEFAULT_POOL_SIZE,
                 prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD) -> None:
        """``run_dir``: this node's lock and change-counter files (the data dir's run/)."""
        self.path = url
        self.url = url
        self.run_dir = run_dir
        self.durable_markers = durable_markers
        self._local = threading.local()
        self._settings_changes = ChangeCounter(os.path.join(run_dir, "settings.version"))
        self._account_changes = ChangeCounter(os.path.join(run_dir, "accounts.version"))
        self._user_rows = _KeptAnswers()
        self._clean_keys = _KeptAnswers()
        self._layout_answers: dict[str, _KeptAnswers] = {}  # see MetaDB.kept_for_layout
        self._size = pool_size
        self._prepare = prepare_threshold
        self._pool_ref = None
        self._pool_guard = threading.Lock()
        self.open_schema(check=check_version)

    @property
    def _pool(self):
        pool = self._pool_ref
        if pool is None:
            with self._pool_guard:
                if self._pool_ref is None:
                    self._pool_ref = _acquire_pool(self.url, self._size, self._prepare)
                pool = self._pool_ref
        return pool

    # --- connections -------------------------------------------------------------------

    def _conn(self):
        tx = getattr(self._local, "tx", None)
        return tx if tx is not None else _AutoCommit(self._pool)

    class _PgTx:
        def __init__(self, db: PgMetaDB) -> None:
            self.db = db

        def __enter__(self) -> PgConnection:
            if getattr(self.db._local, "tx", None) is not None:
                raise RuntimeError("nested MetaDB.tx()")  # SQLite refuses it too
            self._cm = self.db._pool.connection()
            try:
                raw = self._cm.__enter__()
            except _lost() as e:
                raise _down(e) from e
            try:
                raw.execute("BEGIN")
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            except BaseException as e:
                self._cm.__exit__(type(e), e, e.__traceback__)
                if isinstance(e, _lost()):
                    _recheck(self.db._pool)
                    raise _down(e) from e
                raise
            self.conn = PgConnection(raw)
            self.db._local.tx = self.conn
            return self.conn

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db._local.tx = None
            raw = self.conn.raw
            try:
                if exc_type is None:
                    raw.execute("COMMIT")
                elif not raw.closed:
                    raw.execute("ROLLBACK")
            except BaseException as e:
                self._cm.__exit__(type(e), e, e.__traceback__)  # the pool checks the conn
                if isinstance(e, _lost()):
                    _recheck(self.db._pool)
                    raise _down(e) from e
                raise
            self._cm.__exit__(exc_type, exc, tb)
            if exc_type is DatabaseUnavailable:
                _recheck(self.db._pool)

    def tx(self) -> PgMetaDB._PgTx:
        return PgMetaDB._PgTx(self)

    def query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        with self._pool_guard:
            if self._pool_ref is not None:
                self._pool_ref = None
                _release_pool(self.url)

    def backup_to(self, dest: str) -> None:
        raise UserError("the metadata is in PostgreSQL: back it up with pg_dump "
                        "(docs/DEPLOY.md), then back up the key store and secret")

    # --- schema ------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        c = self._conn()
        if c.execute("SELECT to_regclass('settings')").fetchone()[0] is None:
            return None
        return schema_version.read_version(c)

    def open_schema(self, *, check: bool = True) -> None:
        """As MetaDB's. The DDL runs only when a table is missing (a new database, or a
        feature's table added since): re-creating the usage triggers takes a lock that
        would stall every node's requests for each command an admin runs."""
        parts = (SCHEMA, *SCHEMA_PARTS)
        statements = [s for part in parts for s in pg_dialect.schema(part)]
        wanted = [t for part in parts for t in pg_dialect.tables(part)]
        with self.tx() as c:  # the writer lock: nodes starting together take turns
            found = self.schema_version()
            if found is not None and found != schema_version.CURRENT:
                if check:
                    raise schema_version.out_of_date(found)
                return
            have = c.raw.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename = ANY(%s)", (wanted,)).fetchone()[0]
            if have < len(set(wanted)):
                for sql in statements:
                    c.raw.execute(sql)
            if found is None:
                for sql in pg_dialect.PG_FUNCTIONS:
                    c.raw.execute(sql)
                c.execute(schema_version.stamp_sql(),
                          (schema_version.VERSION_KEY, str(schema_version.CURRENT)))

    def run_ddl(self, conn: PgConnection, sql: str) -> None:
        for statement in pg_dialect.schema(sql):
            conn.raw.execute(statement)

    def run_native_postgresql(self, conn: PgConnection, sql: str) -> None:
        conn.raw.execute(sql)

    # --- what SQLite does with PRAGMAs -------------------------------------------------

    def add_pending_many(self, rows: list[tuple[bytes, str, bool]], *,
                         durable: bool) -> None:
        import time

        now = time.time()
        with self.tx() as c:
            for file_id, path, plain in rows:
                c.execute("INSERT INTO pending(file_id, path, created, plain) "
                          "VALUES(?, ?, ?, ?)", (file_id, path, now, int(plain)))

    def add_pending(self, file_id: bytes, path: str, *, plain: bool = False,
                    durable: bool = True) -> None:
        """A committed row is durable on PostgreSQL (synchronous_commit), so no PRAGMA."""
        import time

        self._conn().execute(
            "INSERT INTO pending(file_id, path, created, plain) VALUES(?, ?, ?, ?)",
            (file_id, path, time.time(), int(plain)))
