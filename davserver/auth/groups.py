"""Groups: local groups kept in the metadata DB (occ's group:* commands), and the
directory's groups when LDAP has a ``group_base`` (auth.ldap_groups).

Local membership is read from the DB on every question, so adding or removing a member
takes effect at the next request of every worker, without a restart; directory groups
follow the directory within its cache interval. A local group and a directory group of the
same name are one group (members of both).
"""

from __future__ import annotations

import re

from davserver.errors import Conflict, NotFound, UserError
from davserver.meta.db import MetaDB

_NAME_RE = re.compile(r"^[A-Za-z0-9_@ ][A-Za-z0-9_.@ -]{0,63}$")


def validate_group_name(name: str) -> str:
    if not _NAME_RE.match(name or "") or name.strip() != name:
        raise UserError(f"invalid group name {name!r}: use 1-64 letters, digits, space, "
                        "_ . @ - (not starting with . or -)")
    return name


class GroupService:
    def __init__(self, db: MetaDB, users) -> None:
        self.db = db
        self.users = users
        #: Called as (group, user, added) after a membership change (share keys follow).
        self.on_change = None
        #: Directory groups (auth.ldap_groups.LdapGroups), set by the instance.
        self.directory = None

    def _local_exists(self, name: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM local_groups WHERE name = ?", (name,)))

    def exists(self, name: str) -> bool:
        return self._local_exists(name) or (
            self.directory is not None and self.directory.exists(name))

    def require(self, name: str) -> str:
        if not self.exists(name):
            raise NotFound(f"group {name}")
        return name

    def add(self, name: str, display_name: str | None = None) -> None:
        validate_group_name(name)
        if self.exists(name):
            raise Conflict(f"group {name} exists already")
        with self.db.tx() as c:
            c.execute("INSERT INTO local_groups(name, display_name) VALUES(?, ?)",
                      (name, display_name))

    def delete(self, name: str) -> None:
        """Delete the group; shares with it go too (nobody could reach them any more)."""
        self._require_local(name)
        with self.db.tx() as c:
            c.execute("DELETE FROM local_group_members WHERE grp = ?", (name,))
            c.execute("DELETE FROM local_groups WHERE name = ?", (name,))
            c.execute("DELETE FROM share_mounts WHERE share_id IN "
                      "(SELECT id FROM shares WHERE share_type = 1 AND share_with = ?)", (name,))
            c.execute("DELETE FROM shares WHERE share_type = 1 AND share_with = ?", (name,))

    def _require_local(self, name: str) -> None:
        if not self._local_exists(name):
            if self.exists(name):
                raise UserError(f"group {name} is managed by the directory (LDAP)")
            raise NotFound(f"group {name}")

    def add_user(self, name: str, user: str) -> bool:
        """Add ``user`` to the group; False if they were a member already."""
        self._require_local(name)
        self.users.require(user)
        with self.db.tx() as c:
            cur = c.execute("INSERT OR IGNORE INTO local_group_members(grp, user) VALUES(?, ?)",
                            (name, user))
            added = cur.rowcount > 0
        if added and self.on_change is not None:
            self.on_change(name, user, True)
        return added

    def remove_user(self, name: str, user: str) -> None:
        self._require_local(name)
        with self.db.tx() as c:
            cur = c.execute("DELETE FROM local_group_members WHERE grp = ? AND user = ?",
                            (name, user))
            if cur.rowcount == 0:
                raise NotFound(f"{user} in group {name}")
        if self.on_change is not None:
            self.on_change(name, user, False)

    def members(self, name: str) -> list[str]:
        local = [r[0] for r in self.db.query(
            "SELECT user FROM local_group_members WHERE grp = ? ORDER BY user", (name,))]
        if self.directory is None:
            return local
        return sorted(set(local) | set(self.directory.members(name)))

    def groups_of(self, user: str) -> list[str]:
        kept = self.db.kept_for_layout("local_groups_of")  # asked several times per request
        found = kept.get(user)
        if found is None:
            found = kept[user] = tuple(r[0] for r in self.db.query(
                "SELECT grp FROM local_group_members WHERE user = ? ORDER BY grp", (user,)))
        local = list(found)
        if self.directory is None or not self._directory_user(user):
            return local
        return sorted(set(local) | set(self.directory.groups_of(user)))

    def _directory_user(self, user: str) -> bool:
        rec = self.users.get(user)
        return rec is not None and rec.backend == "ldap"

    def list(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {r[0]: [] for r in self.db.query(
            "SELECT name FROM local_groups ORDER BY name")}
        for grp, user in self.db.query(
                "SELECT grp, user FROM local_group_members ORDER BY grp, user"):
            out.setdefault(grp, []).append(user)
        if self.directory is not None:
            for name in self.directory.names():
                out[name] = self.members(name)
        return dict(sorted(out.items()))
