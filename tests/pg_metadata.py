"""Run marked tests against PostgreSQL metadata as well as SQLite (``@pytest.mark.pg``).

One PostgreSQL cluster per test session (started only when a marked test runs); each
instance gets a schema of its own in it (``search_path`` set in the URL), which costs a
``CREATE SCHEMA`` instead of a database or a cluster per test.
"""

from __future__ import annotations

import itertools
import os
import urllib.parse

_numbers = itertools.count(1)


def new_schema(dsn: str) -> str:
    """A fresh, empty schema; the URL that makes it the connection's search_path."""
    import psycopg

    name = f"t{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
        c.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={urllib.parse.quote(f'-csearch_path={name}')}"


def drop_schema(dsn: str, url: str) -> None:
    """Close this process's pools on ``url`` and drop its schema."""
    import psycopg

    from davserver.meta import pg

    for key in [k for k in pg._pools if k[1] == url]:
        pg._pools.pop(key)[0].close()
    name = urllib.parse.unquote(url).rsplit("search_path=", 1)[1]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
