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
"""
