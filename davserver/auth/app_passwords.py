"""App passwords: a password per device, revocable alone, that a sync client stores
instead of the user's own (Nextcloud's login flow v2 and ``user:add-app-password``).

An app password is random (about 149 bits), so it is kept as a plain SHA-256 hash: no
slow KDF is needed against guessing, and checking one costs one indexed query. In
user-key mode the user's private key is also sealed under each app password that was
created while the key was unlocked (``app-passwords/<user>/<id>.json`` in the key store), so
the device can open the user's files; revoking the password deletes that seal with the
row. An app password created without the unlocked key logs in but cannot open files
(403 KeyLocked), which the CLI prevents by asking for the user's password.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
import time
from base64 import b64decode, b64encode

from davserver.crypto import keywrap, primitives
from davserver.errors import IntegrityError, NotFound, UserError, WrongPassword
from davserver.vault.keystore import Identity
from davserver.vault.userkeys import KeyLocked

_ALPHABET = string.ascii_letters + string.digits
_SHAPE = re.compile(r"^[A-Za-z0-9]{5}(-[A-Za-z0-9]{5}){4}$")
_FORMAT = "davserver-app-password-key-v1"


def looks_like(password: str) -> bool:
    """Could this be an app password? Others skip the lookup."""
    return len(password) == 29 and bool(_SHAPE.match(password))


def _hash(user: str, token: str) -> bytes:
    return hashlib.sha256(f"{user}\0{token}".encode()).digest()


def _new_token() -> str:
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(5)) for _ in range(5))


class AppPasswords:
    def __init__(self, instance) -> None:
        self.db = instance.db
        self._instance = instance

    @staticmethod
    def _seal_name(user: str, app_id: int) -> str:
        if "/" in user or user in ("", ".", ".."):
            raise UserError(f"invalid user name {user!r}")
        return f"app-passwords/{user}/{int(app_id)}.json"

    def create(self, user: str, name: str, identity: Identity | None) -> tuple[int, str]:
        """A new app password for ``user``: (its ID, the password, shown once).
        ``identity``: the user's unlocked key (user-key mode), sealed for the password."""
        token = _new_token()
        with self.db.tx() as c:
            cur = c.execute("INSERT INTO app_passwords(user, name, token_hash, created) "
                            "VALUES(?, ?, ?, ?)", (user, name[:200], _hash(user, token),
                                                   time.time()))
            app_id = int(cur.lastrowid)
        if identity is not None:
            try:
                self._seal(user, app_id, token, identity)
            except BaseException:
                self.revoke(user, app_id)
                raise
        return app_id, token

    def _kek(self, user: str, app_id: int, token: str, salt: bytes) -> bytes:
        return primitives.hkdf_sha256(token.encode(), salt=salt,
                                      info=f"{_FORMAT}\0{user}\0{app_id}".encode())

    def _seal(self, user: str, app_id: int, token: str, identity: Identity) -> None:
        kid = keywrap.key_id(identity.public)
        salt = primitives.random_bytes(16)
        doc = {"format": _FORMAT, "user": user, "app_id": app_id, "id": kid,
               "recipient": identity.recipient, "suite": identity.suite,
               "public": b64encode(identity.public).decode(), "salt": b64encode(salt).decode(),
               "private_sealed": b64encode(keywrap.seal_private_key(
                   self._kek(user, app_id, token, salt), identity.private, kid)).decode()}
        self._instance.keys.docs.write(self._seal_name(user, app_id),
                                       json.dumps(doc, indent=1).encode())

    def find(self, user: str, token: str) -> int | None:
        """The ID of ``user``'s app password ``token``, or None."""
        if not looks_like(token):
            return None
        rows = self.db.query("SELECT id FROM app_passwords WHERE token_hash = ? AND user = ?",
                             (_hash(user, token), user))
        return int(rows[0][0]) if rows else None

    def identities(self, user: str, app_id: int, token: str) -> tuple[Identity, ...]:
        """What a login with this app password acts with: nothing in master-key mode,
        the user's key from its seal in user-key mode."""
        if self._instance.mode() == "master":
            return ()
        raw = self._instance.keys.docs.get(self._seal_name(user, app_id))
        if raw is None:
            raise KeyLocked()
        doc = json.loads(raw)
        current = self._instance.userkeys.public(user)
        if current is None or current.recipient != doc["recipient"]:
            raise KeyLocked()  # the user's key was replaced since
        try:
            private = keywrap.open_private_key(
                self._kek(user, app_id, token, b64decode(doc["salt"])),
                b64decode(doc["private_sealed"]), doc["id"])
        except IntegrityError:
            raise KeyLocked() from None
        return (Identity(doc["recipient"], doc["suite"], private, b64decode(doc["public"])),)

    def list(self, user: str) -> list[dict]:
        return [{"id": r[0], "name": r[1], "created": r[2]} for r in self.db.query(
            "SELECT id, name, created FROM app_passwords WHERE user = ? ORDER BY id", (user,))]

    def revoke(self, user: str, app_id: int) -> None:
        """Remove the password and its seal of the user's key."""
        with self.db.tx() as c:
            gone = c.execute("DELETE FROM app_passwords WHERE user = ? AND id = ?",
                             (user, app_id)).rowcount
        if not self._instance.keys.docs.delete(self._seal_name(user, app_id)) \
                and not gone:
            raise NotFound(f"app password {app_id} of {user}")

    def revoke_all(self, user: str) -> None:
        for row in self.list(user):
            self.revoke(user, row["id"])


def add_app_password(instance, user: str, name: str, *, password: str | None = None,
                     identity: Identity | None = None) -> tuple[int, str]:
    """The one way to make an app password (CLI, login flow). In user-key mode the user's
    key must be unlocked: by the login that asks (``identity``) or by ``password``."""
    instance.users.require(user)
    if instance.mode() != "master" and identity is None:
        if password is None:
            raise UserError("in user-key mode an app password must be able to open the "
                            "user's key: give the user's password")
        if not instance.login.check_password(user, password):
            raise WrongPassword(f" of {user}")
        identity = instance.unlock(user, password)[0]
    return instance.app_passwords.create(user, name, identity if instance.mode() != "master"
                                         else None)
