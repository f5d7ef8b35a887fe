"""Team folders (Nextcloud's group folders): folders owned by the instance, not a user.

A team folder is stored under ``.gf-<id>`` (a name no user can have: user names cannot
start with a dot), so renaming it changes one row and nothing in storage or the key store:
its files, their file IDs and their keys stay where they are (Nextcloud's groupfolders
loses keys on rename, issue #3733; here there is nothing to lose). Each group given access
is a group share of that folder, so permissions, the recipients' view and, in user-key
mode, the share keys are exactly those of shares (vault.shares, vault.sharewraps); the
recovery key always holds the share keys of a team folder, as no user owns it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from davserver.errors import Conflict, NotFound, UserError
from davserver.meta.db import MetaDB
from davserver.vault.files import Vault
from davserver.vault.shares import GROUP, Share, ShareService

PREFIX = ".gf-"


def owner_name(folder_id: int) -> str:
    return f"{PREFIX}{int(folder_id)}"


def is_team_owner(name: str) -> bool:
    return name.startswith(PREFIX)


def validate_folder_name(name: str) -> str:
    if not name or name != name.strip() or "/" in name or "\\" in name or "\x00" in name \
            or name in (".", "..") or len(name) > 200:
        raise UserError(f"invalid team folder name {name!r}: no '/', not '.' or '..'")
    return name


@dataclass(frozen=True)
class TeamFolder:
    id: int
    name: str
    quota: int | None
    groups: dict[str, int]  # group -> permission bits

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "quota": self.quota, "groups": self.groups}


class TeamFolderService:
    def __init__(self, db: MetaDB, vault: Vault, shares: ShareService, groups) -> None:
        self.db = db
        self.vault = vault
        self.shares = shares
        self.groups = groups

    def _shares(self, folder_id: int) -> list[Share]:
        return [s for s in self.shares.shares_of_node(owner_name(folder_id))]

    def get(self, folder_id: int) -> TeamFolder:
        rows = self.db.query("SELECT id, name, quota FROM team_folders WHERE id = ?",
                             (int(folder_id),))
        if not rows:
            raise NotFound(f"team folder {folder_id}")
        fid, name, quota = rows[0]
        return TeamFolder(fid, name, quota,
                          {s.share_with: s.permissions for s in self._shares(fid)})

    def list(self) -> list[TeamFolder]:
        return [self.get(r[0]) for r in self.db.query("SELECT id FROM team_folders ORDER BY id")]

    def owners(self) -> list[str]:
        """Storage names of all team folders (for whole-instance jobs: encrypt-all)."""
        return [owner_name(r[0]) for r in self.db.query("SELECT id FROM team_folders ORDER BY id")]

    def name_of(self, owner: str) -> str | None:
        if not is_team_owner(owner) or not owner[len(PREFIX):].isdigit():
            return None
        rows = self.db.query("SELECT name FROM team_folders WHERE id = ?",
                             (int(owner[len(PREFIX):]),))
        return rows[0][0] if rows else None

    def quota_of(self, owner: str) -> int | None:
        if not owner[len(PREFIX):].isdigit():
            return None
        rows = self.db.query("SELECT quota FROM team_folders WHERE id = ?",
                             (int(owner[len(PREFIX):]),))
        return rows[0][0] if rows else None

    def create(self, name: str) -> TeamFolder:
        validate_folder_name(name)
        if self.db.query("SELECT 1 FROM team_folders WHERE name = ?", (name,)):
            raise Conflict(f"a team folder named {name!r} exists already")
        with self.db.tx() as c:
            fid = c.execute("INSERT INTO team_folders(name, created) VALUES(?, ?)",
                            (name, time.time())).lastrowid
        try:
            self.vault.make_dir(owner_name(fid))
        except BaseException:
            with self.db.tx() as c:
                c.execute("DELETE FROM team_folders WHERE id = ?", (fid,))
            raise
        return self.get(fid)

    def set_group(self, folder_id: int, group: str, permissions: int) -> TeamFolder:
        """Give a group access (or change its permissions)."""
        self.get(folder_id)
        self.groups.require(group)
        existing = [s for s in self._shares(folder_id) if s.share_with == group]
        if existing:
            self.shares.update(existing[0].id, permissions=permissions)
        else:
            self.shares.create_instance_share(owner_name(folder_id), GROUP, group,
                                              permissions)
        return self.get(folder_id)

    def remove_group(self, folder_id: int, group: str) -> TeamFolder:
        existing = [s for s in self._shares(folder_id) if s.share_with == group]
        if not existing:
            raise NotFound(f"group {group} in team folder {folder_id}")
        self.shares.remove(existing[0].id)
        return self.get(folder_id)

    def set_quota(self, folder_id: int, quota: int | None) -> TeamFolder:
        self.get(folder_id)
        with self.db.tx() as c:
            c.execute("UPDATE team_folders SET quota = ? WHERE id = ?", (quota, int(folder_id)))
        return self.get(folder_id)

    def rename(self, folder_id: int, name: str) -> TeamFolder:
        """Only the name changes: storage path, file IDs and keys stay as they are."""
        validate_folder_name(name)
        self.get(folder_id)
        if self.db.query("SELECT 1 FROM team_folders WHERE name = ? AND id != ?",
                         (name, int(folder_id))):
            raise Conflict(f"a team folder named {name!r} exists already")
        with self.db.tx() as c:
            c.execute("UPDATE team_folders SET name = ? WHERE id = ?", (name, int(folder_id)))
        return self.get(folder_id)

    def delete(self, folder_id: int) -> None:
        """Delete the folder with its files, keys and shares."""
        self.get(folder_id)
        for s in self._shares(folder_id):
            self.shares.remove(s.id)
        if self.vault.storage.stat(owner_name(folder_id)) is not None:
            self.vault.delete(owner_name(folder_id))
        with self.db.tx() as c:
            c.execute("DELETE FROM team_folders WHERE id = ?", (int(folder_id),))
