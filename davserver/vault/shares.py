"""Shares: who may reach another user's file or folder, with which permissions, and where
it appears in the recipient's tree.

One service for every entry point (CLI, OCS API, DAV, settings pages), so the rules hold
whatever the way in:

* A share names its node by a stable node ID (``nodes`` table, rewritten by every move),
  so the owner renaming or moving a shared folder keeps the share working.
* Permissions are Nextcloud's bits (read 1, update 2, create 4, delete 8, share 16). A
  re-share needs the share bit and never grants more than the re-sharer holds.
* A recipient sees each share as a mount point under ``sharing.share_folder``; the mount
  is made the first time the recipient's tree is resolved (so a group member added later
  gets it at their next request), named like the node, "name (2)" on a clash. Renaming
  or removing a mount point changes only the recipient's view.
* Paths of other users that are not shared with the caller do not exist for them (404),
  so nothing leaks about names; a shared path that forbids an action answers 403.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from davserver.errors import DavServerError, NotFound, UserError
from davserver.meta.db import MetaDB, parent_of
from davserver.vault.files import Node, Vault, storage_path

READ, UPDATE, CREATE, DELETE, SHARE = 1, 2, 4, 8, 16
ALL = READ | UPDATE | CREATE | DELETE | SHARE
#: A file cannot hold children: Nextcloud never grants create or delete on a shared file.
FILE_MASK = READ | UPDATE | SHARE
PERMISSION_NAMES = {"read": READ, "update": UPDATE, "create": CREATE, "delete": DELETE,
                    "share": SHARE, "all": ALL}
USER, GROUP = 0, 1
TYPE_NAMES = {USER: "user", GROUP: "group"}


class ShareForbidden(DavServerError):
    """not allowed: {detail}"""

    HTTP_STATUS = 403
    EXIT_CODE = 2


def parse_permissions(text: str | int | None, default: int = READ) -> int:
    """'read,update' or '3' -> bits; read is always included (a share is for reading)."""
    if text is None or text == "":
        return default
    if isinstance(text, int) or str(text).isdigit():
        bits = int(text)
        if bits < 1 or bits > ALL:
            raise UserError(f"invalid permissions {text!r}: a number from 1 to 31")
        return bits | READ
    bits = 0
    for word in str(text).split(","):
        w = word.strip().lower()
        if w not in PERMISSION_NAMES:
            raise UserError(f"unknown permission {w!r} (use {', '.join(PERMISSION_NAMES)})")
        bits |= PERMISSION_NAMES[w]
    return bits | READ


def permission_words(bits: int) -> str:
    return ",".join(n for n, b in PERMISSION_NAMES.items() if n != "all" and bits & b)


def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """'YYYY-MM-DD' -> the share works through that day (UTC) and expires at its end."""
    if text is None or text == "":
        return None
    try:
        day = dt.date.fromisoformat(str(text)[:10])
    except ValueError:
        raise UserError(f"invalid expiry date {text!r} (use YYYY-MM-DD)") from None
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(),
                              tzinfo=dt.UTC).timestamp()
    if end <= (time.time() if now is None else now):
        raise UserError(f"expiry date {text} is in the past")
    return end


def clean_rel(rel: str) -> str:
    """A path inside a home, normalised; '..', '.' and NUL are refused, not resolved."""
    parts = [p for p in (rel or "").replace("\\", "/").split("/") if p]
    if any(p in (".", "..") or "\x00" in p for p in parts):
        raise UserError(f"invalid path {rel!r}: '.' and '..' are not allowed")
    return "/".join(parts)


@dataclass(frozen=True)
class Share:
    id: int
    node_id: int
    owner: str
    initiator: str
    share_type: int
    share_with: str
    permissions: int
    expires: float | None
    created: float
    #: The node's storage path now ("<owner>/<path>"); None if the node is gone.
    spath: str | None

    @property
    def rel(self) -> str:
        return self.spath.split("/", 1)[1] if self.spath and "/" in self.spath else ""

    def as_dict(self) -> dict:
        return {"id": self.id, "owner": self.owner, "initiator": self.initiator,
                "type": TYPE_NAMES[self.share_type], "share_with": self.share_with,
                "path": "/" + self.rel, "node_id": self.node_id,
                "permissions": permission_words(self.permissions),
                "permission_bits": self.permissions,
                "expires": (dt.datetime.fromtimestamp(self.expires - 1, dt.UTC)
                            .date().isoformat() if self.expires else None)}


@dataclass(frozen=True)
class Mount:
    share: Share
    #: Where the recipient sees it, relative to their home ("Photos", "Shared/Photos").
    path: str


@dataclass(frozen=True)
class Target:
    """What a path in a user's tree stands for."""

    spath: str
    permissions: int
    mount: Mount | None = None

    @property
    def is_mount_root(self) -> bool:
        return self.mount is not None and self.spath == self.mount.share.spath


_SHARE_COLS = ("s.id, s.node_id, s.owner, s.initiator, s.share_type, s.share_with, "
               "s.permissions, s.expires, s.created, n.path")


def _home_rel(user: str, spath: str | None) -> str:
    return spath.split("/", 1)[1] if spath and "/" in spath else ""


class ShareService:
    def __init__(self, db: MetaDB, vault: Vault, users, groups, *,
                 share_folder: str = "/") -> None:
        self.db = db
        self.vault = vault
        self.users = users
        self.groups = groups
        self.share_folder = clean_rel(share_folder)
        #: Key work in user-key mode (vault.sharewraps.ShareWraps), set by the instance.
        self.keywork = None
        #: owner name -> team folder name (None: not a team folder); set by the instance.
        self.team_name = lambda owner: None
        #: Lists a folder of a user's own tree (the instance puts external storage mount
        #: points in); None: the vault's listing.
        self.lister: Callable[[str], list[Node]] | None = None
        #: Set by the instance so that external storage mounts count as the user's own
        #: tree: the storage path of ``rel`` in ``user``'s tree, and its inverse; a stat
        #: that reaches mounted stores; a check that refuses sharing a storage path (a
        #: mount with enable_sharing off).
        self.own_path: Callable[[str, str], str] = storage_path
        self.own_rel: Callable[[str, str | None], str] = _home_rel
        self.node_stat: Callable[[str], Node | None] = vault.stat
        self.may_share: Callable[[str, str], None] = lambda spath, rel: None

    # --- nodes -------------------------------------------------------------------------

    def node_id(self, spath: str) -> int:
        """The stable ID of a node, made on first use (a shared root)."""
        with self.db.tx() as c:
            c.execute("INSERT INTO nodes(path) VALUES(?) ON CONFLICT DO NOTHING", (spath,))
            return c.execute("SELECT node_id FROM nodes WHERE path = ?", (spath,)).fetchone()[0]

    # --- shares ------------------------------------------------------------------------

    def _rows(self, where: str, args: tuple = ()) -> list[Share]:
        rows = self.db.query(f"SELECT {_SHARE_COLS} FROM shares s LEFT JOIN nodes n "
                             f"ON n.node_id = s.node_id WHERE {where} ORDER BY s.id", args)
        return [Share(*r) for r in rows]

    def get(self, share_id: int) -> Share:
        found = self._rows("s.id = ?", (int(share_id),))
        if not found or found[0].spath is None:
            raise NotFound(f"share {share_id}")
        return found[0]

    def list(self, *, user: str | None = None, include_expired: bool = True) -> list[Share]:
        """All shares, or those a user made, owns or received (directly or by group)."""
        if user is None:
            out = self._rows("n.path IS NOT NULL")
        else:
            groups = self.groups.groups_of(user)
            marks = ",".join("?" * len(groups)) or "NULL"
            out = self._rows(
                "n.path IS NOT NULL AND (s.owner = ? OR s.initiator = ? OR "
                "(s.share_type = 0 AND s.share_with = ?) OR "
                f"(s.share_type = 1 AND s.share_with IN ({marks})))",
                (user, user, user, *groups))
        if not include_expired:
            now = time.time()
            out = [s for s in out if s.expires is None or s.expires > now]
        return out

    def shares_of_node(self, spath: str) -> list[Share]:
        return self._rows("n.path = ?", (spath,))

    def create(self, initiator: str, rel: str, share_type: int, share_with: str, *,
               permissions: int = READ, expires: float | None = None) -> Share:
        """Share the node at ``rel`` in ``initiator``'s tree (their own file, or one
        shared with them that they may re-share). Everything is checked before anything
        is written, so a refusal leaves nothing behind."""
        self.users.require(initiator)
        rel = clean_rel(rel)
        if not rel:
            raise UserError("the home folder itself cannot be shared")
        target = self.resolve(initiator, rel)
        self.may_share(target.spath, rel)
        node = self.node_stat(target.spath)
        if node is None:
            raise NotFound(f"{rel} in the files of {initiator}")
        owner = target.spath.split("/", 1)[0]
        if owner.startswith("~"):  # an external storage mount: shared as its user's
            owner = target.mount.share.owner if target.mount is not None else initiator
        if target.mount is not None and not target.permissions & SHARE:
            raise ShareForbidden(f"{initiator} may not re-share {rel} (no share permission)")
        if permissions & ~target.permissions:
            raise ShareForbidden(
                f"cannot grant {permission_words(permissions & ~target.permissions)} on "
                f"{rel}: {initiator} holds only {permission_words(target.permissions)}")
        if not node.is_dir:
            permissions &= FILE_MASK
        if share_type == USER:
            self.users.require(share_with)
            if share_with in (initiator, owner):
                raise UserError(f"{rel} cannot be shared with its own "
                                f"{'owner' if share_with == owner else 'sharer'}")
        elif share_type == GROUP:
            self.groups.require(share_with)
        else:
            raise UserError(f"unknown share type {share_type!r} (0 user, 1 group)")
        if expires is not None and expires <= time.time():
            raise UserError("the expiry date is in the past")
        node_id = self.node_id(target.spath)
        with self.db.tx() as c:
            dup = c.execute("SELECT id FROM shares WHERE node_id = ? AND share_type = ? AND "
                            "share_with = ?", (node_id, share_type, share_with)).fetchone()
            if dup:
                raise UserError(f"{rel} is already shared with {share_with} (share {dup[0]})")
            cur = c.execute(
                "INSERT INTO shares(node_id, owner, initiator, share_type, share_with, "
                "permissions, expires, created) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (node_id, owner, initiator, share_type, share_with, permissions, expires,
                 time.time()))
            share_id = cur.lastrowid
            if self.keywork is not None:
                self.keywork.share_planned(c, share_id)
        share = self.get(share_id)
        try:
            if share_type == USER:
                self.mounts(share_with)  # the mount point is named now, as Nextcloud does
            if self.keywork is not None:
                self.keywork.share_created(share)
        except BaseException:
            self._delete_row(share)  # nothing half-created
            raise
        return share

    def create_instance_share(self, spath: str, share_type: int, share_with: str,
                              permissions: int) -> Share:
        """A share of a node the instance owns (a team folder root); see teamfolders."""
        node_id = self.node_id(spath)
        with self.db.tx() as c:
            share_id = c.execute(
                "INSERT INTO shares(node_id, owner, initiator, share_type, share_with, "
                "permissions, expires, created) VALUES(?, ?, '', ?, ?, ?, NULL, ?)",
                (node_id, spath.split("/", 1)[0], share_type, share_with, permissions | READ,
                 time.time())).lastrowid
            if self.keywork is not None:
                self.keywork.share_planned(c, share_id)
        share = self.get(share_id)
        if self.keywork is not None:
            try:
                self.keywork.share_created(share)
            except BaseException:
                self._delete_row(share)
                raise
        return share

    def _delete_row(self, share: Share) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM share_mounts WHERE share_id = ?", (share.id,))
            c.execute("DELETE FROM shares WHERE id = ?", (share.id,))

    def shared_out(self, spath: str) -> bool:
        """Is ``spath`` a shared node or inside one? (Kept per layout version: the direct
        PUT path asks on every upload while any lock exists.)"""
        kept = self.db.kept_for_layout("shared_roots")
        roots = kept.get("all")
        if roots is None:
            roots = kept["all"] = frozenset(r[0] for r in self.db.query(
                "SELECT DISTINCT n.path FROM shares s JOIN nodes n ON n.node_id = s.node_id "
                "WHERE n.path IS NOT NULL"))
        p = spath
        while p:
            if p in roots:
                return True
            p = p.rpartition("/")[0]
        return False

    def shares_above(self, paths: list[str]) -> list[Share]:
        """Shares of any of these storage paths (a path and its folders)."""
        if not paths:
            return []
        return self._rows(f"n.path IN ({','.join('?' * len(paths))})", tuple(paths))

    def group_member_changed(self, group: str, user: str, added: bool) -> None:
        if self.keywork is None:
            return
        for share in self._rows("s.share_type = 1 AND s.share_with = ? AND n.path IS NOT NULL",
                                (group,)):
            if share.owner == user:
                continue
            if added:
                self.keywork.member_added(share, user)
            else:
                self.keywork.member_removed(share, user)

    def _may_manage(self, share: Share, actor: str | None) -> None:
        if actor is not None and actor not in (share.owner, share.initiator):
            raise NotFound(f"share {share.id}")

    def update(self, share_id: int, *, actor: str | None = None,
               permissions: int | None = None, expires: float | None | bool = False) -> Share:
        """Change permissions and/or expiry (``expires=None`` removes it)."""
        share = self.get(share_id)
        self._may_manage(share, actor)
        perms = share.permissions if permissions is None else permissions
        if share.initiator not in (share.owner, ""):  # "": the instance (team folders)
            # A re-share never grows beyond what its initiator holds.
            held = self._held_by(share.initiator, share.spath)
            if perms & ~held:
                raise ShareForbidden(f"cannot grant {permission_words(perms & ~held)}: "
                                     f"{share.initiator} holds only {permission_words(held)}")
        node = self.node_stat(share.spath)
        if node is not None and not node.is_dir:
            perms &= FILE_MASK
        new_exp = share.expires if expires is False else expires
        with self.db.tx() as c:
            c.execute("UPDATE shares SET permissions = ?, expires = ? WHERE id = ?",
                      (perms, new_exp, share.id))
        return self.get(share.id)

    def _held_by(self, user: str, spath: str) -> int:
        if spath.split("/", 1)[0] == user:
            return ALL
        best = 0
        for m in self.mounts(user):
            root = m.share.spath
            if spath == root or spath.startswith(root + "/"):
                best |= m.share.permissions
        return best

    def remove(self, share_id: int, *, actor: str | None = None) -> Share:
        share = self.get(share_id)
        self._may_manage(share, actor)
        self._delete_row(share)
        if self.keywork is not None:
            self.keywork.share_removed(share)
        return share

    def forget_user(self, user: str) -> int:
        """A user is deleted: the shares they own, made or received directly go, and
        their mount points and group memberships with them."""
        gone = [x for x in self.list(user=user) if user in (x.owner, x.initiator) or (
            x.share_type == USER and x.share_with == user)]
        for x in gone:
            self.remove(x.id)
        with self.db.tx() as c:
            c.execute("DELETE FROM share_mounts WHERE user = ?", (user,))
            c.execute("DELETE FROM local_group_members WHERE user = ?", (user,))
        return len(gone)

    def recipients(self, share: Share) -> list[str]:
        """The users a share reaches now."""
        if share.share_type == USER:
            return [share.share_with]
        return [u for u in self.groups.members(share.share_with) if u != share.owner]

    # --- the recipient's tree ----------------------------------------------------------

    def _received(self, user: str) -> list[Share]:
        groups = self.groups.groups_of(user)
        # Every request of the user asks (to route its path): kept while the layout
        # version stays (meta.layout_schema); expiry is checked on every call.
        kept = self.db.kept_for_layout("received")
        key = (user, *groups)
        found = kept.get(key)
        if found is None:
            marks = ",".join("?" * len(groups)) or "NULL"
            found = kept[key] = tuple(self._rows(
                "n.path IS NOT NULL AND s.owner != ? AND ((s.share_type = 0 AND s.share_with "
                f"= ?) OR (s.share_type = 1 AND s.share_with IN ({marks})))",
                (user, user, *groups)))
        now = time.time()
        return [s for s in found if s.expires is None or s.expires > now]

    def mounts(self, user: str) -> list[Mount]:
        """The shares a user sees, with where; makes the mount points of new ones."""
        received = self._received(user)
        if not received:
            return []
        rows = {r[0]: (r[1], r[2]) for r in self.db.query(
            "SELECT share_id, path, hidden FROM share_mounts WHERE user = ?", (user,))}
        out: list[Mount] = []
        taken = {v[0] for v in rows.values()}
        by_node: dict[int, int] = {}
        for s in received:
            by_node[s.node_id] = by_node.get(s.node_id, 0) | s.permissions
        seen_nodes: set[int] = set()
        for s in received:
            if s.node_id in seen_nodes:
                continue  # the same node shared twice (user and groups): one mount
            seen_nodes.add(s.node_id)
            s = replace(s, permissions=by_node[s.node_id])
            team = self.team_name(s.owner) if s.owner.startswith(".") else None
            if team is not None:
                # Team folders: one name for every member, set by the admin.
                if self.keywork is not None:
                    self.keywork.note_member(s, user)
                out.append(Mount(s, f"{self.share_folder}/{team}" if self.share_folder
                                 else team))
                continue
            if s.share_type == GROUP and self.keywork is not None:
                self.keywork.note_member(s, user)  # e.g. joined a directory group
            row = rows.get(s.id)
            if row is None:
                path = self._free_name(user, s.spath.rsplit("/", 1)[-1], taken)
                with self.db.tx() as c:
                    c.execute("INSERT INTO share_mounts(share_id, user, path) "
                              "VALUES(?, ?, ?) ON CONFLICT DO NOTHING", (s.id, user, path))
                taken.add(path)
                out.append(Mount(s, path))
            elif not row[1]:
                out.append(Mount(s, row[0]))
        return out

    def _free_name(self, user: str, name: str, taken: set[str]) -> str:
        """Where a new share appears: its name, or "name (2)", "name (3)"... on a clash."""
        folder = self.share_folder
        if folder and self.vault.storage.stat(storage_path(user, folder)) is None:
            self.vault.make_dir(storage_path(user, folder))
        stem, dot, ext = name.rpartition(".")
        if not stem or not dot:
            stem, ext = name, ""
        n = 1
        while True:
            candidate = name if n == 1 else (f"{stem} ({n}).{ext}" if ext else f"{name} ({n})")
            path = f"{folder}/{candidate}" if folder else candidate
            if path not in taken and self.vault.storage.stat(storage_path(user, path)) is None:
                return path
            n += 1

    def resolve(self, user: str, rel: str, mounts: list[Mount] | None = None) -> Target:
        """What ``rel`` in ``user``'s tree is: a path in one of their mounts, or their own."""
        rel = rel.strip("/")
        for m in (self.mounts(user) if mounts is None else mounts):
            if rel == m.path or rel.startswith(m.path + "/"):
                return Target(m.share.spath + rel[len(m.path):], m.share.permissions, m)
        return Target(self.own_path(user, rel), ALL)

    def mounts_in(self, user: str, folder_rel: str,
                  mounts: list[Mount] | None = None) -> list[tuple[str, Target]]:
        """Mount points that appear directly inside ``folder_rel`` of ``user``'s tree."""
        folder_rel = folder_rel.strip("/")
        return [(m.path.rsplit("/", 1)[-1], Target(m.share.spath, m.share.permissions, m))
                for m in (self.mounts(user) if mounts is None else mounts)
                if parent_of(m.path) == folder_rel]

    def share_types(self, folder: str | None, paths: list[str]) -> dict[str, list[int]]:
        """Sorted share types of each of ``paths`` (oc:share-types), in at most two
        queries: the members of ``folder`` by prefix, the rest by name. Expired shares
        count, as in shares_of_node."""
        wanted = set(paths)
        found: dict[str, set[int]] = {}
        rest = [p for p in paths if folder is None or parent_of(p) != folder]
        rows: list = []
        if folder is not None:
            rows += self.db.query(
                "SELECT n.path, s.share_type FROM shares s JOIN nodes n ON n.node_id = "
                "s.node_id WHERE substr(n.path, 1, length(?) + 1) = ? || '/'",
                (folder, folder))
        for i in range(0, len(rest), 500):
            batch = rest[i:i + 500]
            rows += self.db.query(
                "SELECT n.path, s.share_type FROM shares s JOIN nodes n ON n.node_id = "
                f"s.node_id WHERE n.path IN ({','.join('?' * len(batch))})", tuple(batch))
        for path, share_type in rows:
            if path in wanted:
                found.setdefault(path, set()).add(share_type)
        return {p: sorted(t) for p, t in found.items()}

    def listing(self, user: str, folder_rel: str, spath: str,
                mounts: list[Mount] | None = None) -> list[Node]:
        """A folder's members as ``user`` sees them: its own, plus mount points (a mount
        hides a real entry of the same name, as Nextcloud's mounts do). ``mounts``: the
        user's, when the caller has them already (one lookup per listing, not per folder)."""
        nodes = (self.lister or self.vault.list_dir)(spath)
        if mounts is None:
            mounts = self.mounts(user)
        extra = []
        for name, t in self.mounts_in(user, folder_rel, mounts) if spath == storage_path(
                user, folder_rel) else ():
            n = self.node_stat(t.spath)
            if n is not None:
                extra.append(n._replace(name=name))
        if extra:
            names = {n.name for n in extra}
            nodes = [n for n in nodes if n.name not in names] + extra
        if spath == storage_path(user, folder_rel):
            base = f"{folder_rel}/" if folder_rel else ""
            nodes = [self.with_mounts_etag(user, base + n.name, n, mounts) if n.is_dir and
                     n.path.split("/", 1)[0] == user else n for n in nodes] if mounts else nodes
        return nodes

    def with_mounts_etag(self, user: str, rel: str, node: Node,
                         mounts: list[Mount] | None = None) -> Node:
        """A folder of the user's own holding mount points below it changes its ETag when
        anything in those shares changes, so sync clients that poll the root see changes
        made by the owner or other members."""
        rel = rel.strip("/")
        below = [m for m in (self.mounts(user) if mounts is None else mounts)
                 if not rel or m.path.startswith(rel + "/")]
        if not below:
            return node
        parts = []
        for m in sorted(below, key=lambda m: m.path):
            n = self.node_stat(m.share.spath)
            parts.append(f"{m.path}\0{n.etag if n else ''}")
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]
        return node._replace(etag=f"{node.etag}-s{digest}")

    def touches(self, user: str, rel: str) -> bool:
        """Is ``rel`` inside a mount, or a folder holding one? (The direct paths leave
        those to the reference path.)"""
        rel = rel.strip("/")
        for m in self.mounts(user):
            if rel == m.path or rel.startswith(m.path + "/") or parent_of(m.path) == rel:
                return True
        return False

    def mounts_of_node(self, spath: str) -> list[tuple[str, str]]:
        """(user, path in their tree) of every mount point at or above ``spath``, for
        the lock check across the URLs of one node."""
        out = []
        paths = []
        p = spath
        while p:
            paths.append(p)
            p = parent_of(p)
        rows = self.db.query(
            "SELECT m.user, m.path, n.path FROM share_mounts m JOIN shares s ON s.id = "
            "m.share_id JOIN nodes n ON n.node_id = s.node_id WHERE m.hidden = 0 AND n.path "
            f"IN ({','.join('?' * len(paths))})", tuple(paths))
        for user, mount, root in rows:
            out.append((user, mount + spath[len(root):]))
        return out

    def listable(self, user: str, rel: str) -> str | None:
        """The storage path of ``rel`` when a plain listing of it is the whole answer
        (the direct PROPFIND); None when mount points appear in it."""
        rel = rel.strip("/")
        mounts = self.mounts(user)
        if any(not rel or m.path.startswith(rel + "/") for m in mounts):
            return None  # mount points in it or below (their ETags count)
        return self.resolve(user, rel, mounts).spath

    def move_mount(self, user: str, mount: Mount, new_rel: str) -> None:
        """Rename or move a mount point in the recipient's tree; nobody else sees it."""
        if mount.share.initiator == "":
            raise ShareForbidden("a team folder cannot be moved or renamed by its members")
        new_rel = clean_rel(new_rel)
        if not new_rel:
            raise UserError("invalid destination for the share")
        parent = parent_of(new_rel)
        mounts = self.mounts(user)
        dest = self.resolve(user, parent, mounts) if parent else Target(user, ALL)
        if dest.mount is not None:
            raise ShareForbidden("a share cannot be moved into another share")
        pnode = self.vault.storage.stat(dest.spath)
        if pnode is None or not pnode.is_dir:
            raise NotFound(f"folder {parent or '/'}")
        if self.vault.storage.stat(storage_path(user, new_rel)) is not None or any(
                m.path == new_rel for m in mounts):
            raise UserError(f"{new_rel} exists already")
        with self.db.tx() as c:
            c.execute("UPDATE share_mounts SET path = ? WHERE share_id = ? AND user = ?",
                      (new_rel, mount.share.id, user))

    def leave(self, user: str, mount: Mount) -> None:
        """The recipient removes a share from their tree (the owner's files stay)."""
        if mount.share.initiator == "":
            raise ShareForbidden("a team folder cannot be removed by its members")
        if mount.share.share_type == USER:
            self.remove(mount.share.id)
            return
        with self.db.tx() as c:
            c.execute("UPDATE share_mounts SET hidden = 1 WHERE share_id = ? AND user = ?",
                      (mount.share.id, user))

    # --- permission checks -------------------------------------------------------------

    @staticmethod
    def require(target: Target, bit: int, what: str) -> None:
        """Refuse ``what`` unless the target's share grants ``bit`` (own files: always)."""
        if target.permissions & bit:
            return
        word = permission_words(bit)
        raise ShareForbidden(f"{what}: the share does not grant the {word} permission")
