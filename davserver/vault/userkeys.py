"""User-key mode: per-user key pairs unlocked by the login password, and the recovery key.

Documents in the key store (a directory or the database, see vault.keydocs)::

    users/<user>.json        the user's key pair; private half sealed under
                             Argon2id(password, salt) with the parameters stored beside it
    recovery-<key_id>.json   the admin's recovery key pair, sealed the same way under the
                             recovery password

Unlocking costs one Argon2id derivation (~0.1-0.3 s by design). WebDAV clients send the
password with every request, so an unlocked key is cached in memory only, under
``HMAC(server key, user || password)``: a request with the same password costs a hash
and a dict lookup; another password misses the cache and must derive again. The cache
never holds the password, lives as long as configured, and is dropped for a user whose
password or key changes. The worker processes of a server share it (meta.verified: the
private key sealed under a second HMAC of the password), so a user's key is derived once
per server, not once per worker.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

from davserver.crypto import kdf, keywrap, primitives
from davserver.errors import (
    DavServerError,
    IntegrityError,
    KeyNotFound,
    NotFound,
    UserError,
    WrongPassword,
)
from davserver.meta import verified
from davserver.vault.keystore import Identity, KeyStore, Recipient

log = logging.getLogger("davserver.keys")

USER_KEY_FORMAT = "davserver-userkey/1"
RECOVERY_FORMAT = "davserver-recovery/1"


class KeyLocked(DavServerError):
    """your encryption key could not be unlocked with this password. If your password was
    changed elsewhere (e.g. in the directory), open /settings/encryption and enter your old
    and new password, or ask an administrator to recover your key"""

    HTTP_STATUS = 403
    EXIT_CODE = 5


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


class UserKeys:
    def __init__(self, store: KeyStore, *, params: kdf.KdfParams | None = None,
                 suite: str = "x25519", cache_seconds: float = 3600.0) -> None:
        self.store = store
        self.params = params or kdf.KdfParams()
        self.suite = suite
        self.cache_seconds = cache_seconds
        self.derivations = 0  # counted so tests can prove the cache works
        self._shared = verified.for_this_process(verified.USER_KEYS)
        self._cache: dict[bytes, tuple] = {}
        self._lock = threading.Lock()

    # --- sealed key documents ----------------------------------------------------------

    def _seal_doc(self, fmt: str, private: bytes, public: bytes, suite: str, password: str,
                  **extra) -> dict:
        kid = keywrap.key_id(public)
        salt = kdf.new_salt()
        self.derivations += 1
        kek = kdf.derive(password, salt, self.params)
        return {"format": fmt, **extra, "id": kid, "suite": suite, "public": _b64(public),
                "kdf": {**self.params.as_dict(), "salt": _b64(salt)},
                "private_sealed": _b64(keywrap.seal_private_key(kek, private, kid))}

    def _open_doc(self, doc: dict, password: str) -> tuple[bytes, bool]:
        """Return the identity and whether its KDF parameters are weaker than today's."""
        params = kdf.KdfParams.from_dict(doc["kdf"])
        self.derivations += 1
        kek = kdf.derive(password, _unb64(doc["kdf"]["salt"]), params)
        private = keywrap.open_private_key(kek, _unb64(doc["private_sealed"]), doc["id"])
        return private, params.weaker_than(self.params)

    # --- user key pairs ----------------------------------------------------------------

    @staticmethod
    def _user_name(user: str) -> str:
        if "/" in user or user in ("", ".", ".."):
            raise UserError(f"invalid user name {user!r}")
        return f"users/{user}.json"

    def _user_path(self, user: str) -> str:
        """The key file's path (directory store only; tests look at the bytes)."""
        return self.store.docs.path(self._user_name(user))

    def _load_user(self, user: str) -> dict | None:
        raw = self.store.docs.get(self._user_name(user))
        return None if raw is None else json.loads(raw)

    def _write_user(self, user: str, doc: dict) -> None:
        self.store.docs.write(self._user_name(user), json.dumps(doc, indent=1).encode())

    @staticmethod
    def _identity(user: str, doc: dict, private: bytes) -> Identity:
        return Identity(f"user:{user}:{doc['id']}", doc["suite"], private, _unb64(doc["public"]))

    def has_keys(self, user: str) -> bool:
        return self.store.docs.exists(self._user_name(user))

    def public(self, user: str) -> Recipient | None:
        doc = self._load_user(user)
        if doc is None:
            return None
        return Recipient(f"user:{user}:{doc['id']}", doc["suite"], _unb64(doc["public"]))

    def create(self, user: str, password: str) -> Identity:
        """Make (or replace) the user's key pair, sealed under ``password``."""
        private, public = keywrap.new_keypair(self.suite)
        doc = self._seal_doc(USER_KEY_FORMAT, private, public, self.suite, password, user=user)
        self._write_user(user, doc)
        self.forget(user)
        return self._identity(user, doc, private)

    def unlock(self, user: str, password: str) -> Identity:
        """The user's identity for this password: cached, created on first login, and
        re-sealed with stronger KDF parameters when they were raised."""
        tag = self._shared.tag(user, password)
        now = time.monotonic()
        stamp = self._stamp(user)
        with self._lock:
            hit = self._cache.get(tag)
            if hit and hit[2] > now and hit[3] == stamp:
                return hit[1]
        ident = self._from_other_worker(tag, user, password, stamp)
        if ident is not None:
            with self._lock:
                self._cache[tag] = (user, ident, now + self.cache_seconds, stamp)
            return ident
        log.debug("unlocking the key of %r (not cached)", user)
        doc = self._load_user(user)
        if doc is None:
            ident = self.create(user, password)
        else:
            try:
                private, weak = self._open_doc(doc, password)
            except IntegrityError:
                raise KeyLocked() from None
            ident = self._identity(user, doc, private)
            if weak:
                self._write_user(user, self._seal_doc(
                    USER_KEY_FORMAT, private, ident.public, doc["suite"], password, user=user))
        stamp = self._stamp(user)
        with self._lock:
            self._cache[tag] = (user, ident, now + self.cache_seconds, stamp)
        self._shared.add(tag, user, stamp, self.cache_seconds, primitives.aead_seal(
            self._shared.secret(user, password), ident.private, user.encode()))
        return ident

    def _from_other_worker(self, tag: bytes, user: str, password: str,
                           stamp: tuple | None) -> Identity | None:
        """The key another worker of this server unlocked with this password, if any."""
        sealed = self._shared.get(tag, user, stamp)
        if not sealed:
            return None
        try:
            private = primitives.aead_open(self._shared.secret(user, password), sealed,
                                           user.encode())
        except IntegrityError:
            return None
        doc = self._load_user(user)
        if doc is None or self._stamp(user) != stamp:
            return None
        return self._identity(user, doc, private)

    def _stamp(self, user: str) -> tuple | None:
        """Identity of the stored key document: a cached key is only good while it is
        the same (the CLI or another node may have re-sealed or replaced it)."""
        return self.store.docs.stamp(self._user_name(user))

    def _open_user(self, user: str, password: str) -> tuple[dict, bytes]:
        doc = self._load_user(user)
        if doc is None:
            raise KeyNotFound(f"user key of {user}")
        try:
            return doc, self._open_doc(doc, password)[0]
        except IntegrityError:
            raise KeyLocked() from None

    def open_existing(self, user: str, password: str) -> Identity:
        """Unlock without side effects (offline recovery): no creation, no re-sealing."""
        try:
            doc, private = self._open_user(user, password)
        except KeyLocked:
            raise WrongPassword(f" for the key of {user}") from None
        return self._identity(user, doc, private)

    def can_unlock(self, user: str, password: str) -> bool:
        try:
            self.unlock(user, password)
            return True
        except KeyLocked:
            return False

    def rewrap(self, user: str, old_password: str, new_password: str) -> None:
        """Re-seal the private key under a new password (after a change elsewhere)."""
        doc, private = self._open_user(user, old_password)
        self._write_user(user, self._seal_doc(USER_KEY_FORMAT, private, _unb64(doc["public"]),
                                              doc["suite"], new_password, user=user))
        self.forget(user)

    def unlocked(self) -> tuple[Identity, ...]:
        """Keys this process holds unlocked right now: the users online here."""
        now = time.monotonic()
        with self._lock:
            return tuple({v[1].recipient: v[1] for v in self._cache.values()
                          if v[2] > now}.values())

    def forget(self, user: str) -> None:
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if v[0] != user}
        self._shared.forget(user)

    def delete(self, user: str) -> None:
        self.forget(user)
        self.store.docs.delete(self._user_name(user))

    # --- recovery key ------------------------------------------------------------------

    def _recovery_files(self) -> list[str]:
        return sorted(n for n in self.store.docs.names("recovery-")
                      if "/" not in n and n.endswith(".json"))

    def _recovery_doc(self) -> dict | None:
        files = self._recovery_files()
        raw = self.store.docs.get(files[0]) if files else None
        return None if raw is None else json.loads(raw)

    def recovery_public(self) -> Recipient | None:
        doc = self._recovery_doc()
        if doc is None:
            return None
        return Recipient(f"recovery:{doc['id']}", doc["suite"], _unb64(doc["public"]))

    def enable_recovery(self, password: str) -> str:
        if self._recovery_doc() is not None:
            raise UserError("a recovery key exists already (change-recovery-password changes "
                            "its password)")
        private, public = keywrap.new_keypair(self.suite)
        doc = self._seal_doc(RECOVERY_FORMAT, private, public, self.suite, password)
        self.store.docs.write(f"recovery-{doc['id']}.json", json.dumps(doc, indent=1).encode())
        return doc["id"]

    def unlock_recovery(self, password: str) -> Identity:
        doc = self._recovery_doc()
        if doc is None:
            raise NotFound("recovery key (run encryption:enable-recovery)")
        try:
            private, _weak = self._open_doc(doc, password)
        except IntegrityError:
            raise WrongPassword(" for the recovery key") from None
        return Identity(f"recovery:{doc['id']}", doc["suite"], private, _unb64(doc["public"]))

    def change_recovery_password(self, old: str, new: str) -> None:
        ident = self.unlock_recovery(old)
        doc = self._seal_doc(RECOVERY_FORMAT, ident.private, ident.public, ident.suite, new)
        self.store.docs.write(self._recovery_files()[0], json.dumps(doc, indent=1).encode())

    def remove_recovery(self, password: str) -> Identity:
        ident = self.unlock_recovery(password)
        for f in self._recovery_files():
            self.store.docs.delete(f)
        return ident


#: Key files whose new wraps are appended and flushed together (see KeyStore.append).
REWRAP_BATCH = 256


def rewrap_files(store: KeyStore, file_ids: Iterable[bytes], *, opener: list[Identity],
                 add: list[Recipient] = (), remove: Callable[[str], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Add wraps for ``add`` and drop wraps matching ``remove`` on every key file.

    Idempotent per file (recipients already present are kept as they are), so an
    interrupted run is finished by running it again. Data is never touched. Files that
    only gain wraps (sharing a folder) get them appended, a batch at a time: a rewrite
    per file costs a temporary file, a rename and two fsyncs, most of the time spent.
    """
    done = skipped = failed = 0
    batch: list[tuple[bytes, list]] = []

    def flush() -> None:
        nonlocal done, skipped
        gone = len(store.append(batch)) if batch else 0
        done += len(batch) - gone
        skipped += gone  # deleted meanwhile: nothing left to wrap
        batch.clear()

    for fid in file_ids:
        try:
            wraps = store.load(fid)
        except KeyNotFound:
            failed += 1
            continue
        have = {w.recipient for w in wraps}
        need = [r for r in add if r.recipient not in have]
        keep = [w for w in wraps if not (remove and remove(w.recipient))]
        if not need and len(keep) == len(wraps):
            skipped += 1
        else:
            try:
                data_key = store.unwrap(fid, opener, wraps) if need else None
            except (KeyNotFound, IntegrityError):
                failed += 1
                if progress:
                    progress(1, 0)
                continue
            new = [r.wrap(data_key, fid) for r in need]
            if len(keep) == len(wraps):
                batch.append((fid, new))
                if len(batch) >= REWRAP_BATCH:
                    flush()
            else:
                store.save(fid, keep + new)
                done += 1
        if progress:
            progress(1, 0)
    flush()
    return {"rewrapped": done, "unchanged": skipped, "failed": failed}
