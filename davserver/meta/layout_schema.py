"""A version number of "who sees what where": shares, their mount points, shared nodes,
groups, team folders and external storage mounts.

Every request asks which shares and mounts a user has (to route its path), which costs
several queries and, for mounts, opening their sealed configurations. Those answers
change rarely, so processes keep them while this number stays the same. Triggers bump it
inside the transaction of any change to those tables, whichever process, node or tool
makes the change, so a kept answer can never outlive a revoked share: no code path has
to remember to invalidate anything.
"""

from __future__ import annotations

_TABLES = ("shares", "share_mounts", "nodes", "local_groups", "local_group_members",
           "team_folders", "mounts")


def _triggers() -> str:
    out = []
    for table in _TABLES:
        for event in ("INSERT", "UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS layout_{table}_{event.lower()} AFTER {event} "
                f"ON {table} BEGIN UPDATE layout_version SET v = v + 1 WHERE id = 1; END;")
    return "\n".join(out)


SCHEMA = """
CREATE TABLE IF NOT EXISTS layout_version(id INTEGER PRIMARY KEY CHECK (id = 1),
                                          v INTEGER NOT NULL);
INSERT INTO layout_version(id, v) VALUES(1, 0) ON CONFLICT(id) DO NOTHING;
""" + _triggers()
