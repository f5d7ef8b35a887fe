"""Tables for Nextcloud clients: stable file IDs (oc:fileid).

A sync client remembers every item by its ID, and a rename must not look like a delete
plus an add (that would re-upload or re-download the item). The per-write crypto file ID
changes on every overwrite, so it cannot serve; this table gives each path a number that
follows the path through moves (see :func:`move_ids`), survives overwrites (rows are
keyed by path, and a write does not touch them) and is new for a copy (a new path) or
for a path re-created after a delete (the delete drops the row).

A file gets its ID in the transaction that indexes its first version (:func:`assign_id`),
so the PUT answer (OC-FileId) needs no write of its own; folders and files indexed before
this table existed get theirs when first asked for (PROPFIND, MKCOL answers).
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS nc_fileids(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    parent TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nc_fileids_parent ON nc_fileids(parent);
"""

_UNDER = "(path = ? OR substr(path, 1, length(?) + 1) = ? || '/')"


def _parent(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i >= 0 else ""


def assign_id(conn: sqlite3.Connection, path: str) -> None:
    """Give ``path`` an ID if it has none (a no-op for one that keeps its ID)."""
    conn.execute("INSERT INTO nc_fileids(path, parent) VALUES(?, ?) "
                 "ON CONFLICT(path) DO NOTHING", (path, _parent(path)))


def delete_ids(conn: sqlite3.Connection, path: str) -> None:
    """``path`` and everything below it are gone: their IDs go with them."""
    conn.execute(f"DELETE FROM nc_fileids WHERE {_UNDER}", (path, path, path))


def move_ids(conn: sqlite3.Connection, src: str, dst: str) -> None:
    """IDs follow a rename; whatever was at ``dst`` was replaced."""
    n = len(src)
    delete_ids(conn, dst)
    conn.execute(f"UPDATE nc_fileids SET path = ? || substr(path, ?), "
                 f"parent = ? || substr(parent, ?) WHERE {_UNDER}",
                 (dst, n + 1, dst, n + 1, src, src, src))
    conn.execute("UPDATE nc_fileids SET parent = ? WHERE path = ?", (_parent(dst), dst))

#: App passwords (Nextcloud login flow v2, ``user:add-app-password``) and the login flows
#: in progress. Only hashes of the passwords are kept; a finished flow holds its app
#: password sealed to a key pair derived from the client's poll token (the table holds
#: only its public half) until the client collects it.
APP_SCHEMA = """
CREATE TABLE IF NOT EXISTS app_passwords(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS app_passwords_user ON app_passwords(user);
CREATE TABLE IF NOT EXISTS login_flows(
    poll_hash BLOB PRIMARY KEY,
    flow_hash BLOB NOT NULL UNIQUE,
    client TEXT NOT NULL,
    created REAL NOT NULL,
    public BLOB NOT NULL,
    user TEXT,
    sealed BLOB
);
"""
