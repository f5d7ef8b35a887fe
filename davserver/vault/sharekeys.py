"""User-key mode: one key pair per share (a lockbox), so granting access is one wrap.

Files in the key store::

    shares/<share_id>/v<n>.json   version n of the share's key pair: the public half, and
                                  the private half wrapped (HPKE) for each holder: the
                                  owner, every member with a key pair, the recovery key;
                                  from v2 on also the private half of v<n-1> wrapped for
                                  v<n>'s public key (the chain back to v1)

The data key of every file under a shared folder carries a wrap for the share's newest
key version (recipient ``share:<id>:v<n>``) beside the owner's and the recovery key's.
Who holds the share key of version n can open every older version through the chain, so
adding a member is one wrap of the newest private key whatever the number of files and
versions. Removing a member deletes their wraps and starts version n+1 for new writes
(made from public keys only, nobody needs to be online); files written before keep
version n until ``share:rotate --reencrypt``.

A wrap that cannot be made right now (a member with no key pair yet, the files of a folder
shared while its owner was offline) is pending: a row in ``share_key_pending``, finished
by :func:`complete_pending` as soon as someone able to make it is logged in (every request
of a holder checks; the recovery password does it from the CLI).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from davserver.crypto import keywrap
from davserver.durable import write_atomic
from davserver.errors import FormatError, IntegrityError, KeyNotFound
from davserver.meta.db import MetaDB
from davserver.meta.interprocess import ChangeCounter
from davserver.vault.keystore import Identity, KeyStore, Recipient, _b64, _unb64

log = logging.getLogger("davserver.keys")

SHARE_KEY_FORMAT = "davserver-sharekey/1"


def recipient_name(share_id: int, version: int) -> str:
    return f"share:{share_id}:v{version}"


def _label(share_id: int, version: int) -> bytes:
    """Bound into every wrap of a share private key (the HPKE info), so a wrap moved to
    another share or version does not open."""
    return f"davserver-share:{share_id}:v{version}".encode()


@dataclass(frozen=True)
class ShareKeyDoc:
    share_id: int
    version: int
    kid: str
    suite: str
    public: bytes
    wraps: dict[str, tuple[str, bytes]]  # recipient -> (suite, sealed private key)
    previous: bytes | None  # sealed v(n-1) private key, for this version's public key

    def recipient(self) -> Recipient:
        return Recipient(recipient_name(self.share_id, self.version), self.suite,
                         self.public)

    def to_json(self) -> bytes:
        return json.dumps({
            "format": SHARE_KEY_FORMAT, "share": self.share_id, "version": self.version,
            "id": self.kid, "suite": self.suite, "public": _b64(self.public),
            "wraps": [{"to": to, "suite": s, "sealed": _b64(sealed)}
                      for to, (s, sealed) in sorted(self.wraps.items())],
            "previous": _b64(self.previous) if self.previous else None,
        }, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> ShareKeyDoc:
        try:
            doc = json.loads(raw)
            if doc.get("format") != SHARE_KEY_FORMAT:
                raise ValueError
            return cls(int(doc["share"]), int(doc["version"]), doc["id"], doc["suite"],
                       _unb64(doc["public"]),
                       {w["to"]: (w["suite"], _unb64(w["sealed"])) for w in doc["wraps"]},
                       _unb64(doc["previous"]) if doc.get("previous") else None)
        except (ValueError, KeyError, TypeError):
            raise FormatError(f"share key file {where} is damaged") from None


class ShareKeys:
    def __init__(self, store: KeyStore, db: MetaDB) -> None:
        self.store = store
        self.db = db
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple, ShareKeyDoc]] = {}
        self.wraps_made = 0  # counted so tests and the benchmark can prove "one wrap"
        # Bumped after every change of a share key file by any process of this node, so
        # what was opened from them can be kept in memory until the next change.
        self._changes: ChangeCounter | None = None
        if db is not None:  # None: reading a key store alone (offline tools)
            # db.run_dir, not a folder next to db.path: on PostgreSQL that is a URL, and
            # the counter landed in a "postgresql:" folder in the working directory.
            self._changes = ChangeCounter(os.path.join(db.run_dir, "sharekeys.version"))

    @property
    def changes(self) -> int:
        """Changes whenever a process of this node changed a share key file (one load)."""
        return self._changes.value() if self._changes is not None else 0

    def _changed(self) -> None:
        if self._changes is not None:
            self._changes.bump()

    # --- files -------------------------------------------------------------------------

    def _dir(self, share_id: int) -> str:
        return os.path.join(self.store.root, "shares", str(int(share_id)))

    def _path(self, share_id: int, version: int) -> str:
        return os.path.join(self._dir(share_id), f"v{int(version)}.json")

    def versions(self, share_id: int) -> list[int]:
        try:
            names = os.listdir(self._dir(share_id))
        except FileNotFoundError:
            return []
        return sorted(int(n[1:-5]) for n in names
                      if n.startswith("v") and n.endswith(".json") and n[1:-5].isdigit())

    def load(self, share_id: int, version: int) -> ShareKeyDoc:
        path = self._path(share_id, version)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KeyNotFound(f"share key {share_id} v{version}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._parsed.get(path)
            if hit and hit[0] == stamp:
                return hit[1]
        with open(path, "rb") as f:
            doc = ShareKeyDoc.from_json(f.read(), path)
        with self._lock:
            self._parsed[path] = (stamp, doc)
        return doc

    def latest(self, share_id: int) -> ShareKeyDoc | None:
        v = self.versions(share_id)
        return self.load(share_id, v[-1]) if v else None

    def _save(self, doc: ShareKeyDoc) -> None:
        os.makedirs(self._dir(doc.share_id), mode=0o700, exist_ok=True)
        write_atomic(self._path(doc.share_id, doc.version), doc.to_json(),
                     fsync=self.store.fsync)
        self._changed()

    def share_ids(self) -> list[int]:
        try:
            return sorted(int(n) for n in os.listdir(os.path.join(self.store.root, "shares"))
                          if n.isdigit())
        except FileNotFoundError:
            return []

    # --- making and opening ------------------------------------------------------------

    def _wrap(self, share_id: int, version: int, private: bytes, to: Recipient
              ) -> tuple[str, bytes]:
        self.wraps_made += 1
        return to.suite, keywrap.wrap_data_key(to.suite, to.public, private,
                                              _label(share_id, version))

    def new_version(self, share_id: int, suite: str, holders: Iterable[Recipient],
                    previous: Identity | None = None) -> ShareKeyDoc:
        """A fresh key pair for the share, wrapped for ``holders`` (public keys only)."""
        have = self.versions(share_id)
        version = (have[-1] + 1) if have else 1
        private, public = keywrap.new_keypair(suite)
        wraps = {h.recipient: self._wrap(share_id, version, private, h) for h in holders}
        prev = None
        if previous is not None:
            prev = keywrap.wrap_data_key(suite, public, previous.private,
                                         _label(share_id, version - 1))
        doc = ShareKeyDoc(share_id, version, keywrap.key_id(public), suite, public, wraps,
                          prev)
        self._save(doc)
        return doc

    def open(self, share_id: int, identities: Iterable[Identity]) -> list[Identity]:
        """Every version of the share key the identities reach, newest first: those a
        wrap opens directly, and older ones through the chain. Empty if none opens."""
        ids = {i.recipient: i for i in identities}
        got: dict[int, Identity] = {}
        for v in reversed(self.versions(share_id)):
            doc = self.load(share_id, v)
            if v not in got:
                for to, (suite, sealed) in doc.wraps.items():
                    ident = ids.get(to)
                    if ident is None:
                        continue
                    try:
                        private = keywrap.unwrap_data_key(suite, ident.private, sealed,
                                                          _label(share_id, v))
                    except IntegrityError:
                        continue
                    got[v] = Identity(recipient_name(share_id, v), doc.suite, private,
                                      doc.public)
                    break
            if v in got and v - 1 not in got and doc.previous is not None and v > 1:
                older = self.load(share_id, v - 1)
                private = keywrap.unwrap_data_key(doc.suite, got[v].private, doc.previous,
                                                  _label(share_id, v - 1))
                got[v - 1] = Identity(recipient_name(share_id, v - 1), older.suite, private,
                                      older.public)
        return [got[v] for v in sorted(got, reverse=True)]

    def link(self, share_id: int, newer: Identity, older: Identity) -> None:
        """Seal ``older`` (version n-1) for ``newer`` (version n): the chain link."""
        v = int(newer.recipient.rsplit(":v", 1)[1])
        doc = self.load(share_id, v)
        sealed = keywrap.wrap_data_key(doc.suite, doc.public, older.private,
                                       _label(share_id, v - 1))
        self._save(ShareKeyDoc(doc.share_id, doc.version, doc.kid, doc.suite, doc.public,
                               doc.wraps, sealed))

    def add_holder(self, share_id: int, newest: Identity, to: Recipient) -> bool:
        """One wrap of the newest version for ``to``; False if they hold it already."""
        doc = self.latest(share_id)
        if doc is None or to.recipient in doc.wraps:
            return False
        if newest.recipient != recipient_name(share_id, doc.version):
            raise KeyNotFound(f"newest version of share key {share_id}")
        wraps = dict(doc.wraps)
        wraps[to.recipient] = self._wrap(share_id, doc.version, newest.private, to)
        self._save(ShareKeyDoc(doc.share_id, doc.version, doc.kid, doc.suite, doc.public,
                               wraps, doc.previous))
        return True

    def remove_holder(self, share_id: int, prefix: str) -> int:
        """Delete every wrap for recipients starting with ``prefix`` in every version."""
        removed = 0
        for v in self.versions(share_id):
            doc = self.load(share_id, v)
            keep = {to: w for to, w in doc.wraps.items() if not to.startswith(prefix)}
            if len(keep) != len(doc.wraps):
                removed += len(doc.wraps) - len(keep)
                self._save(ShareKeyDoc(doc.share_id, doc.version, doc.kid, doc.suite,
                                       doc.public, keep, doc.previous))
        return removed

    def holders(self, share_id: int) -> set[str]:
        doc = self.latest(share_id)
        return set(doc.wraps) if doc else set()

    def delete(self, share_id: int) -> None:
        for v in self.versions(share_id):
            try:
                os.unlink(self._path(share_id, v))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self._dir(share_id))
        except OSError:
            pass
        self._changed()

    # --- pending work ------------------------------------------------------------------

    def add_pending(self, share_id: int, kind: str, who: str = "", *, tx=None) -> None:
        """``kind``: "member" (wrap the share key for ``who``) or "files" (wrap the data
        keys of the shared files for the share key). ``tx``: a transaction in progress
        (the one that inserts the share), else one of its own."""
        sql = ("INSERT INTO share_key_pending(share_id, kind, who) "
               "VALUES(?, ?, ?) ON CONFLICT DO NOTHING")
        if tx is not None:
            tx.execute(sql, (share_id, kind, who))
            return
        with self.db.tx() as c:
            c.execute(sql, (share_id, kind, who))

    def pending(self, share_id: int | None = None) -> list[tuple[int, str, str]]:
        if share_id is None:
            return [tuple(r) for r in self.db.query(
                "SELECT share_id, kind, who FROM share_key_pending ORDER BY share_id")]
        return [tuple(r) for r in self.db.query(
            "SELECT share_id, kind, who FROM share_key_pending WHERE share_id = ?",
            (share_id,))]

    def done(self, share_id: int, kind: str, who: str = "") -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM share_key_pending WHERE share_id = ? AND kind = ? AND "
                      "who = ?", (share_id, kind, who))

    def forget_pending(self, share_id: int, who: str | None = None) -> None:
        with self.db.tx() as c:
            if who is None:
                c.execute("DELETE FROM share_key_pending WHERE share_id = ?", (share_id,))
            else:
                c.execute("DELETE FROM share_key_pending WHERE share_id = ? AND who = ?",
                          (share_id, who))
