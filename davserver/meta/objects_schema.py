"""Tables of the object namespace (davserver.storage.by_id): where a store's blobs are
named by ID, folders and names live here."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS object_names(
    path TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    is_dir INTEGER NOT NULL,
    blob TEXT,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS object_names_parent ON object_names(parent);
CREATE TABLE IF NOT EXISTS object_blobs_pending(
    blob TEXT PRIMARY KEY,
    doomed INTEGER NOT NULL,
    created REAL NOT NULL
);
"""
