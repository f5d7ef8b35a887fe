"""Where the state lives that every node of a cluster must share: the metadata database
URL and the Redis connection.

Without ``redis.url`` nothing here is used and a node keeps WebDAV locks, login failures
and job locks in its own data directory, as a single server always has. redis-py is
imported only when a Redis URL is configured, so a single-node install does not need it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from davserver.errors import DavServerError, UserError

#: Seconds a client is told to wait when the shared state service does not answer.
RETRY_AFTER = 10

#: Lua for "delete the key if it still holds my token": a holder never frees a lease
#: that expired and was taken by another (WebDAV lock mutex, job lock, commit locks).
RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class SharedStateUnavailable(DavServerError):
    """shared state service (Redis) is not reachable; try again shortly"""

    HTTP_STATUS = 503
    EXIT_CODE = 9  # like storage or directory unavailable (docs/ADMIN.md)


def sqlite_path(database_url: str, data_dir: str) -> str:
    """The SQLite file ``database.url`` names: empty means ``<data_dir>/davserver.db``."""
    url = database_url.strip()
    if not url:
        return os.path.join(data_dir, "davserver.db")
    if url.startswith("sqlite:///"):
        url = url[len("sqlite://"):]
    return os.path.abspath(os.path.join(data_dir, os.path.expanduser(url)))


def check_database_url(database_url: str) -> None:
    """Refuse URLs this version cannot serve, instead of silently using SQLite."""
    scheme = database_url.split(":", 1)[0].lower() if "://" in database_url else ""
    if scheme.startswith("postgresql+"):
        raise UserError(f"unsupported database.url scheme {scheme!r}: write postgresql://"
                        " (davserver talks to PostgreSQL with psycopg itself)")
    if scheme and scheme not in ("sqlite", "postgresql", "postgres"):
        raise UserError(f"unsupported database.url scheme {scheme!r}: use a SQLite file path "
                        "or a postgresql:// URL")


_clients: dict[tuple[int, str], object] = {}
_clients_guard = threading.Lock()


def redis_client(url: str):
    """One redis-py client (its own connection pool) per URL and process; worker
    processes forked from the master must not share the master's sockets."""
    key = (os.getpid(), url)
    with _clients_guard:
        client = _clients.get(key)
        if client is None:
            try:
                import redis
            except ImportError:
                raise UserError("redis.url is set but redis-py is not installed "
                                "(pip install 'davserver[redis]')") from None
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3,
                                          health_check_interval=30)
            _clients[key] = client
        return client


@contextlib.contextmanager
def unavailable_as_503() -> Iterator[None]:
    """Turn redis-py's connection failures into SharedStateUnavailable (HTTP 503 +
    Retry-After, CLI one line). Redis holds no file data, so the worst a failure between
    two commands leaves is a lock entry of a LOCK the client was told failed; it expires
    with that lock's timeout."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as e:
        raise SharedStateUnavailable(type(e).__name__) from None
