"""Key work that sharing causes in user-key mode; nothing at all in master-key mode.

Called by the share service (share made, member added or removed, share removed), by the
vault (a move into or out of a shared folder), by the login (pending wraps) and by
``share:rotate``. See vault.sharekeys for the files and the scheme.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from davserver.errors import DavServerError, IntegrityError, KeyNotFound
from davserver.meta.db import MetaDB, parent_of
from davserver.vault import context
from davserver.vault.keystore import Identity, KeyStore, Recipient
from davserver.vault.sharekeys import ShareKeys
from davserver.vault.userkeys import UserKeys, rewrap_files

log = logging.getLogger("davserver.keys")


def _ancestors(path: str) -> list[str]:
    """``path`` and every folder above it, up to the home."""
    out = []
    while path:
        out.append(path)
        path = parent_of(path)
    return out


class ShareWraps:
    def __init__(self, store: KeyStore, db: MetaDB, userkeys: UserKeys, shares, *,
                 user_mode: Callable[[], bool], suite: str) -> None:
        self.store = store
        self.db = db
        self.userkeys = userkeys
        self.shares = shares
        self.keys = ShareKeys(store, db)
        self.user_mode = user_mode
        self.suite = suite
        self._opened: tuple[object, dict[tuple, list[Identity]]] = ((), {})

    # --- who holds a share key ---------------------------------------------------------

    def _holder_users(self, share) -> list[str]:
        owner = [] if share.owner.startswith(".") else [share.owner]  # team folders: none
        return owner + [u for u in self.shares.recipients(share) if u != share.owner]

    def _holders(self, share) -> tuple[list[Recipient], list[str]]:
        """(public keys to wrap for, users who have no key pair yet)."""
        have, missing = [], []
        for user in self._holder_users(share):
            pub = self.userkeys.public(user)
            if pub is None:
                missing.append(user)
            else:
                have.append(pub)
        rec = self.userkeys.recovery_public()
        if rec is not None:
            have.append(rec)
        return have, missing

    # --- events ------------------------------------------------------------------------

    def share_planned(self, tx, share_id: int) -> None:
        """Called in the transaction that inserts the share row: the key work is pending
        from the moment the share exists, so a process killed before it is done leaves
        work that the next holder online finishes, never a share nobody can read."""
        if self.user_mode():
            self.keys.add_pending(share_id, "files", tx=tx)

    def share_created(self, share) -> None:
        if not self.user_mode():
            return
        self._ensure_key(share)
        if not (share.spath and any(r.file_id for r in self.db.iter_files(share.spath))):
            self.keys.done(share.id, "files")  # nothing to wrap
        self.complete_pending(context.current())

    def _ensure_key(self, share) -> None:
        """Version 1 of the share key (public keys only, nobody needs to be online)."""
        if self.keys.versions(share.id):
            return
        holders, missing = self._holders(share)
        self.keys.new_version(share.id, self.suite, holders)
        for user in missing:
            self.keys.add_pending(share.id, "member", user)

    def member_added(self, share, user: str) -> None:
        if not self.user_mode() or not self.keys.versions(share.id):
            return
        pub = self.userkeys.public(user)
        if pub is not None and pub.recipient in self.keys.holders(share.id):
            return
        self.keys.add_pending(share.id, "member", user)
        self.complete_pending(context.current())

    def note_member(self, share, user: str) -> None:
        """A member seen at their request without a wrap of the share key (they joined a
        directory group, which sends no event): their wrap becomes pending."""
        if not self.user_mode():
            return
        doc = self.keys.latest(share.id)
        if doc is None:
            return
        pub = self.userkeys.public(user)
        if pub is None or pub.recipient in doc.wraps:
            return
        if not self.awaiting(user, share.id):
            self.keys.add_pending(share.id, "member", user)

    def reconcile(self) -> int:
        """Drop the share key wraps of users no longer in a shared group (directory groups
        change without an event), rotating as a removal does; returns how many left."""
        if not self.user_mode():
            return 0
        n = 0
        for share_id in self.keys.share_ids():
            try:
                share = self.shares.get(share_id)
            except DavServerError:
                continue
            if share.share_type != 1:
                continue
            doc = self.keys.latest(share_id)
            if doc is None:
                continue
            current = set(self._holder_users(share))
            wrapped = {r.split(":")[1] for r in doc.wraps if r.startswith("user:")}
            for user in sorted(wrapped - current):
                self.member_removed(share, user)
                n += 1
        return n

    def member_removed(self, share, user: str) -> dict:
        """Delete the member's wraps and start a new key version for new writes."""
        if not self.keys.versions(share.id):
            return {"removed_wraps": 0}
        removed = self.keys.remove_holder(share.id, f"user:{user}:")
        self.keys.forget_pending(share.id, user)
        self.rotate(share)
        return {"removed_wraps": removed}

    def share_removed(self, share) -> None:
        """Every wrap of the share key goes, and the files' wraps for it."""
        versions = self.keys.versions(share.id)
        if not versions:
            return
        prefix = f"share:{share.id}:"
        if share.spath:
            ids = [r.file_id for r in self.db.iter_files(share.spath) if r.file_id]
            rewrap_files(self.store, ids, opener=[], remove=lambda r: r.startswith(prefix))
        self.keys.delete(share.id)
        self.keys.forget_pending(share.id)

    def rotate(self, share, opener: Iterable[Identity] = ()) -> int:
        """New key version from public keys; the chain link back to the old version is
        made now if ``opener`` reaches it, else as pending work."""
        opener = list(opener)
        opened = self.keys.open(share.id, opener) if opener else []
        holders, missing = self._holders(share)
        doc = self.keys.new_version(share.id, self.suite, holders,
                                    previous=opened[0] if opened else None)
        if doc.version > 1 and doc.previous is None:
            self.keys.add_pending(share.id, "chain")
        for user in missing:
            self.keys.add_pending(share.id, "member", user)
        return doc.version

    # --- pending work ------------------------------------------------------------------

    def complete_pending(self, identities: Iterable[Identity]) -> int:
        """Make every pending wrap these identities can make; returns how many."""
        identities = list(identities)
        if not identities or not self.user_mode():
            return 0
        rows = self.keys.pending()
        made = 0
        for share_id in sorted({r[0] for r in rows}):
            try:
                made += self._complete_share(share_id, [r for r in rows if r[0] == share_id],
                                             identities)
            except (DavServerError, OSError) as e:
                log.warning("pending key work of share %s not done yet: %s", share_id, e)
        return made

    def _complete_share(self, share_id: int, rows, identities: list[Identity]) -> int:
        try:
            share = self.shares.get(share_id)
        except DavServerError:
            self.keys.forget_pending(share_id)
            return 0
        self._ensure_key(share)  # made in a process that died before (share_planned)
        opened = self.keys.open(share_id, identities)
        made = 0
        for _sid, kind, who in rows:
            if kind == "member" and opened:
                pub = self.userkeys.public(who)
                if pub is None or who not in self._holder_users(share):
                    if who not in self._holder_users(share):
                        self.keys.done(share_id, kind, who)
                    continue
                if self.keys.add_holder(share_id, opened[0], pub):
                    made += 1
                self.keys.done(share_id, kind, who)
            elif kind == "chain" and len(opened) >= 1:
                made += self._link_chain(share_id, identities)
            elif kind == "files" and share.spath:
                ids = [r.file_id for r in self.db.iter_files(share.spath) if r.file_id]
                opener = identities + self.identities_for(tuple(identities)) + opened
                result = rewrap_files(self.store, ids, opener=opener,
                                      add=[self._newest_recipient(share_id, opener)])
                made += result["rewrapped"]
                if result["failed"] == 0:
                    self.keys.done(share_id, "files")
        return made

    def _newest_recipient(self, share_id: int, held: list[Identity]) -> Recipient:
        """Whom to wrap a data key for: the newest share key version, as a self wrap
        when its private half is at hand (about ten times cheaper than HPKE, and what
        makes sharing a large folder fast), else from its public key."""
        doc = self.keys.latest(share_id)
        mine = next((i for i in held if i.recipient == doc.recipient().recipient), None)
        return mine.as_recipient() if mine is not None else doc.recipient()

    def _link_chain(self, share_id: int, identities: list[Identity]) -> int:
        """Link versions made while nobody could open the old one (a removal with nobody
        online) to their predecessor, once identities reach both."""
        made = 0
        for v in self.keys.versions(share_id)[1:]:
            if self.keys.load(share_id, v).previous is not None:
                continue
            got = {int(i.recipient.rsplit(":v", 1)[1]): i
                   for i in self.keys.open(share_id, identities)}
            if v not in got or v - 1 not in got:
                return made
            self.keys.link(share_id, got[v], got[v - 1])
            made += 1
        self.keys.done(share_id, "chain")
        return made

    AWAITING = ("your key for this share is not ready yet; it is made automatically the next "
                "time the owner or another member is online, or by an administrator with the "
                "recovery key (share:wrap-pending)")

    def awaiting(self, user: str, share_id: int) -> bool:
        """Is ``user``'s wrap of this share key still pending?"""
        return self.user_mode() and any(
            kind == "member" and who == user for _s, kind, who in self.keys.pending(share_id))

    def pending_users(self, share_id: int) -> list[str]:
        return sorted(who for _s, kind, who in self.keys.pending(share_id) if kind == "member")

    # --- reading and writing -----------------------------------------------------------

    #: Seconds a share key change made by another node may take to be seen here (this
    #: node's processes announce theirs through ShareKeys.changes at once).
    KEYS_TTL = 1.0

    def identities_for(self, identities: tuple[Identity, ...]) -> list[Identity]:
        """The share key versions the identities reach: those of the shares their users
        are in (owner or recipient), every share for the recovery key. Kept in memory
        until a share key file changes, so a request costs one counter read; a change
        opens only the key files of the caller's shares, not of every share."""
        if not identities or not self.user_mode():
            return []
        kept_at, kept = self._opened
        version = (self.keys.changes, int(time.monotonic() / self.KEYS_TTL))
        if kept_at != version:
            kept = {}
            self._opened = (version, kept)
        key = tuple(i.recipient for i in identities)
        hit = kept.get(key)
        if hit is not None:
            return list(hit)  # callers extend what they get
        out: list[Identity] = []
        for sid in self._share_ids_of(identities):
            try:
                out += self.keys.open(sid, identities)
            except (DavServerError, IntegrityError) as e:
                log.warning("share key %s could not be opened: %s", sid, e)
        if len(kept) < 10000:
            kept[key] = out
        return list(out)

    def _share_ids_of(self, identities: tuple[Identity, ...]) -> list[int]:
        """Shares whose key these identities may hold a wrap of."""
        users = set()
        for ident in identities:
            kind, _, rest = ident.recipient.partition(":")
            if kind == "recovery":
                return self.keys.share_ids()  # wrapped for the recovery key: every share
            if kind == "user":
                users.add(rest.rsplit(":", 1)[0])
        ids: set[int] = set()
        for user in users:
            ids.update(s.id for s in self.shares.list(user=user))
        return sorted(ids)

    def recipients_for(self, path: str) -> list[Recipient]:
        """Newest share key of every share at or above ``path``: a file written there is
        readable by the share's members at once."""
        if not self.user_mode():
            return []
        held = list(context.current())
        held += self.identities_for(tuple(held))
        return [self._newest_recipient(share.id, held)
                for share in self.shares.shares_above(_ancestors(path))
                if self.keys.versions(share.id)]

    def moved(self, src: str, dst: str) -> dict:
        """Re-wrap the keys of what moved into or out of shared folders, or to another
        owner (a member moving a file out of a share into their home); data untouched."""
        if not self.user_mode():
            return {}
        before = {s.id for s in self.shares.shares_above(_ancestors(parent_of(src)))}
        after_shares = self.shares.shares_above(_ancestors(parent_of(dst)))
        after = {s.id for s in after_shares}
        src_owner, dst_owner = src.split("/", 1)[0], dst.split("/", 1)[0]
        if before == after and src_owner == dst_owner:
            return {}
        opener = list(context.current())
        opener += self.identities_for(tuple(opener))
        add = [self._newest_recipient(s.id, opener) for s in after_shares
               if s.id not in before and self.keys.versions(s.id)]
        gone = [f"share:{sid}:" for sid in before - after]
        if src_owner != dst_owner:
            add += self._owner_recipients(dst_owner, opener)
            gone.append(f"user:{src_owner}:")
            if not any(r.recipient.startswith("recovery:") for r in add):
                gone.append("recovery:")
        ids = [r.file_id for r in self.db.iter_files(dst) if r.file_id]
        prefixes = tuple(gone)
        return rewrap_files(self.store, ids, opener=opener, add=add,
                            remove=(lambda r: r.startswith(prefixes)) if prefixes else None)

    def _owner_recipients(self, owner: str, held: list[Identity]) -> list[Recipient]:
        """The wraps a file of ``owner`` carries besides share keys: their own key and
        the recovery key if they opted in (team folders: always the recovery key)."""
        out: list[Recipient] = []
        team = owner.startswith(".")
        if not team:
            pub = self.userkeys.public(owner)
            if pub is not None:
                mine = next((i for i in held if i.recipient == pub.recipient), None)
                out.append(mine.as_recipient() if mine is not None else pub)
        rec = self.userkeys.recovery_public()
        if rec is not None and (team or self.db.get_setting(f"recovery.optin.{owner}") == "1"):
            out.append(rec)
        return out

    def reencrypt(self, share, vault, identities: list[Identity]) -> int:
        """Re-encrypt every file of the share whose key is not wrapped for the newest
        share key version (what a removed member could read), as ``identities``."""
        latest = self.keys.latest(share.id)
        if latest is None or not share.spath:
            return 0
        newest = latest.recipient().recipient
        prefix = f"share:{share.id}:"
        n = 0
        with context.acting_as(*identities):
            for rec in list(self.db.iter_files(share.spath)):
                if rec.file_id is None:
                    continue
                try:
                    wraps = {w.recipient for w in self.store.load(rec.file_id)}
                except KeyNotFound:
                    continue
                if newest in wraps or not any(w.startswith(prefix) for w in wraps):
                    continue
                data = vault.read_all(rec.path)
                vault.write_bytes(rec.path, data)
                n += 1
        return n

