"""The external-storage mounts table (``files_external:*``).

``config`` holds the backend's settings, credentials included, sealed with a key derived
from the instance secret: a copy of the DB alone does not give access to the stores.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS mounts(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mount_point TEXT NOT NULL,
    backend TEXT NOT NULL,
    auth TEXT NOT NULL,
    config BLOB NOT NULL,
    options TEXT NOT NULL,
    users TEXT NOT NULL,
    groups TEXT NOT NULL
);
-- filesystem_check_changes = never: the listing as the server last saw it
-- (davserver/vault/mount_listing.py).
CREATE TABLE IF NOT EXISTS mount_listing(
    path TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    listed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mount_listing_parent ON mount_listing(parent);
"""
