"""Open the metadata store that ``database.url`` names: SQLite (the default) or PostgreSQL.

The one place that chooses; everything else holds a MetaDB and does not know which.
psycopg is imported only for a PostgreSQL URL, so a single-node install does not need it.
"""

from __future__ import annotations

import os

from davserver.meta import shared_state
from davserver.meta.db import MetaDB


def is_postgres(url: str) -> bool:
    scheme = url.split(":", 1)[0].lower() if "://" in url else ""
    return scheme in ("postgresql", "postgres")


def open_metadb(url: str, data_dir: str, *, durable_markers: bool = True,
                check_version: bool = True, pool_size: int = 10,
                prepare_threshold: int | None = 2) -> MetaDB:
    if is_postgres(url):
        from davserver.meta.pg import PgMetaDB

        return PgMetaDB(url, os.path.join(data_dir, "run"), durable_markers=durable_markers,
                        check_version=check_version, pool_size=pool_size,
                        prepare_threshold=prepare_threshold)
    return MetaDB(shared_state.sqlite_path(url, data_dir), durable_markers=durable_markers,
                  check_version=check_version)


def metadb_exists(url: str, data_dir: str) -> bool:
    """Whether the database holds a davserver instance (its tables exist)."""
    if not is_postgres(url):
        return os.path.exists(shared_state.sqlite_path(url, data_dir))
    from davserver.meta.pg import _psycopg

    psycopg, _ = _psycopg()
    try:
        with psycopg.connect(url, connect_timeout=10, autocommit=True) as c:
            return c.execute("SELECT to_regclass('settings')").fetchone()[0] is not None
    except psycopg.OperationalError as e:
        from davserver.errors import DatabaseUnavailable

        raise DatabaseUnavailable(str(e).splitlines()[0] if str(e) else "") from None
