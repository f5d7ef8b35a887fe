"""The key store kept in the metadata database (``key_storage_root = "db:"``).

One row per key document, under the name the document has in a key storage directory
(``files/ab/ab12….json``, ``users/alice.json``) and with the same bytes, so moving the
store between a directory and the database is a copy, and every reader of key files
(``parse_key_file``, backups, offline recovery) reads both alike. ``version`` changes
with every write: what a file's inode and mtime tell caches in the directory store.
A new table, so every open adds it (no numbered migration needed, see schema_version).
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS key_files(
    name TEXT PRIMARY KEY,
    content BLOB NOT NULL,
    version INTEGER NOT NULL
);
"""
