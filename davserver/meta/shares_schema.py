"""Tables of sharing: stable node IDs, shares, recipients' mount points, local groups.

Shares name their node by ``node_id``, not by path: ``nodes`` maps the ID to the owner's
storage path and is rewritten by every move (MetaDB.move_files), so an owner renaming or
moving a shared folder keeps the share. Node IDs are integers, as Nextcloud's file IDs
are, so the oc:fileid of a shared root can be this number.
"""

SHARES_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes(
    node_id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS shares(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id INTEGER NOT NULL,
    owner TEXT NOT NULL,
    initiator TEXT NOT NULL,
    share_type INTEGER NOT NULL,
    share_with TEXT NOT NULL,
    permissions INTEGER NOT NULL,
    expires REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shares_node ON shares(node_id);
CREATE INDEX IF NOT EXISTS shares_with ON shares(share_type, share_with);
CREATE TABLE IF NOT EXISTS share_mounts(
    share_id INTEGER NOT NULL,
    user TEXT NOT NULL,
    path TEXT NOT NULL,
    hidden INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(share_id, user)
);
CREATE INDEX IF NOT EXISTS share_mounts_user ON share_mounts(user);
CREATE TABLE IF NOT EXISTS share_key_pending(
    share_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    who TEXT NOT NULL DEFAULT '',
    PRIMARY KEY(share_id, kind, who)
);
CREATE TABLE IF NOT EXISTS team_folders(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    quota INTEGER,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS local_groups(name TEXT PRIMARY KEY, display_name TEXT);
CREATE TABLE IF NOT EXISTS local_group_members(
    grp TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY(grp, user)
);
CREATE INDEX IF NOT EXISTS local_group_members_user ON local_group_members(user);
"""
