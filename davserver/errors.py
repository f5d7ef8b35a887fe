"""Errors every layer may raise, each with the HTTP status and CLI exit code it maps to.

Why one module: the DAV adapter, the web pages and the CLI all translate the same failures,
so the translation lives next to the classes (``HTTP_STATUS`` / ``EXIT_CODE``) and nowhere
else. The docstring of each class is the message users see; it never says which
cryptographic check failed, so a forger learns nothing from it.
"""

from __future__ import annotations

import errno
import sqlite3
import sys


class DavServerError(Exception):
    """failed: {detail}"""

    HTTP_STATUS = 500
    EXIT_CODE = 1

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        template = " ".join((self.__doc__ or "{detail}").strip().split("\n\n")[0].split())
        try:
            return template.format(detail=self.detail)
        except (KeyError, IndexError):
            return self.detail or template


class IntegrityError(DavServerError):
    """stored data failed authentication{detail}"""

    HTTP_STATUS = 500
    EXIT_CODE = 3

    def __init__(self, detail: str = "") -> None:
        super().__init__(f": {detail}" if detail else "")


class FormatError(DavServerError):
    """not a davserver encrypted file or unsupported format: {detail}"""

    HTTP_STATUS = 500
    EXIT_CODE = 3


class KeyNotFound(DavServerError):
    """no key for file {detail} in the key store (run encryption:fix-key-location)"""

    HTTP_STATUS = 500
    EXIT_CODE = 4


class WrongPassword(DavServerError):
    """wrong password{detail}"""

    HTTP_STATUS = 403
    EXIT_CODE = 5


class VersionMismatch(DavServerError):
    """stored file does not match the index (swapped or rolled back): {detail}"""

    HTTP_STATUS = 500
    EXIT_CODE = 6


class QuotaExceeded(DavServerError):
    """quota exceeded: {detail}"""

    HTTP_STATUS = 507
    EXIT_CODE = 7


class NotFound(DavServerError):
    """not found: {detail}"""

    HTTP_STATUS = 404
    EXIT_CODE = 2


class Conflict(DavServerError):
    """conflict: {detail}"""

    HTTP_STATUS = 409
    EXIT_CODE = 8


class UserError(DavServerError):
    """{detail}"""

    HTTP_STATUS = 400
    EXIT_CODE = 2


class StorageError(DavServerError):
    """storage failed: {detail}"""

    HTTP_STATUS = 500
    EXIT_CODE = 9


class StorageFull(StorageError):
    """the server's storage is full{detail}"""

    HTTP_STATUS = 507


class StorageNotFound(StorageError, NotFound):
    """not found in storage: {detail}"""

    HTTP_STATUS = 404


class StorageUnavailable(StorageError):
    """the storage backend is unavailable; try again later{detail}

    Raised by remote backends (S3, WebDAV) once their retries are used up or a call timed
    out: the store is down or slow, not the request wrong. HTTP answers 503 with
    ``Retry-After`` so clients back off and retry instead of reporting a server bug.
    """

    HTTP_STATUS = 503
    EXIT_CODE = 11
    RETRY_AFTER = 30

    def __init__(self, detail: str = "") -> None:
        super().__init__(f" ({detail})" if detail else "")


class StorageChanged(StorageUnavailable):
    """the storage backend is unavailable; try again later{detail}

    An object replaced between two reads of one download (the store refused the second
    read by ETag). Before anything was sent the vault opens the new version instead;
    after, the client's retry does.
    """

    RETRY_AFTER = 1


class MaintenanceMode(DavServerError):
    """server is in maintenance mode{detail}"""

    HTTP_STATUS = 503
    EXIT_CODE = 10


class NameTooLong(UserError):
    """a file or folder name is too long for the server's storage"""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def known(e: BaseException) -> DavServerError | None:
    """The DavServerError that ``e`` is or stands for, else None (a bug: log and 500).

    A full disk or quota is StorageFull wherever it shows: as OSError from a data, key or
    temp file, or as SQLite's SQLITE_FULL from the index, so the client gets 507 and the
    CLI one line instead of a traceback.
    """
    if isinstance(e, DavServerError):
        return e
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        return StorageFull()
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
        return NameTooLong()
    if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return StorageFull()
    if _database_unreachable(e):
        return DatabaseUnavailable(type(e).__name__)
    return None


class DatabaseUnavailable(DavServerError):
    """metadata database is not reachable; try again shortly"""

    HTTP_STATUS = 503
    EXIT_CODE = 9  # like storage or shared state unavailable
    RETRY_AFTER = 10


def _database_unreachable(e: BaseException) -> bool:
    """A lost, refused or exhausted PostgreSQL connection (psycopg is loaded only when
    database.url names PostgreSQL)."""
    psycopg = sys.modules.get("psycopg")
    pool = sys.modules.get("psycopg_pool")
    return bool((psycopg is not None and isinstance(e, psycopg.OperationalError))
                or (pool is not None and isinstance(e, pool.PoolTimeout)))
