"""Local user accounts: the service the CLI, the web pages and HTTP auth all call.

Passwords are stored as Argon2id hashes (passlib). Checking one costs tens of
milliseconds by design, and WebDAV clients send Basic credentials with every request, so a
successful check is remembered as ``HMAC(process key, user, password)`` for a while: the
password itself is never kept, and the process key dies with the process.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator

from passlib.context import CryptContext

from davserver.auth.ldap import parse_size as ldap_parse_size
from davserver.errors import Conflict, NotFound, UserError
from davserver.meta import verified
from davserver.meta.db import MetaDB, UserRecord

log = logging.getLogger("davserver.auth")

_NAME_RE = re.compile(r"^[A-Za-z0-9_@][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
#: passlib refuses to hash more (PasswordSizeError): a longer password can never be set,
#: and one offered at login is simply wrong, not a server error.
MAX_PASSWORD_BYTES = 4096

_context = CryptContext(schemes=["argon2"], deprecated="auto")
_LOOKUP: UserRecord = object()  # type: ignore[assignment]  # verify(): read the row itself


_flights: dict[bytes, list] = {}  # tag -> [lock, waiting threads]
_flights_guard = threading.Lock()


@contextlib.contextmanager
def _single_flight(tag: bytes) -> Iterator[None]:
    """One check at a time per (user, password) in this process.

    When a cached success expires, every request of that user in flight misses the cache
    at once, and each one ran Argon2 (64 MiB, ~100 ms): a sync client with 30 requests
    open took the server from 170 MiB to 2 GiB for a few seconds every 5 minutes (found by
    bench/soak.py). Now one thread checks, the others wait and find its answer cached.
    """
    with _flights_guard:
        entry = _flights.get(tag)
        if entry is None:
            entry = _flights[tag] = [threading.Lock(), 0]
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _flights_guard:
            entry[1] -= 1
            if not entry[1]:
                del _flights[tag]


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UserError(f"invalid user name {name!r}: use 1-64 letters, digits, _ . @ - "
                        "(not starting with . or -)")
    return name


def new_password() -> str:
    return secrets.token_urlsafe(18)


def parse_size(text: str | int | None) -> int | None:
    """'10GB', '500 MiB', '1024' -> bytes; 'none'/'unlimited' -> None (no quota)."""
    if text is None or (isinstance(text, str) and text.strip().lower() in
                        ("", "none", "unlimited", "default")):
        return None
    try:
        return ldap_parse_size(text)
    except ValueError:
        raise UserError(f"invalid size {text!r} (examples: 500MB, 10GB, 1073741824, none)"
                        ) from None


class UserService:
    def __init__(self, db: MetaDB, *, cache_seconds: float = 300.0,
                 on_create: Callable[[str], None] | None = None,
                 on_delete: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        #: Quota of a team folder owner (".gf-<id>"), set by the instance.
        self.team_quota: Callable[[str], int | None] | None = None
        self._verified = verified.for_this_process(verified.PASSWORDS)
        self._on_create = on_create
        self._on_delete = on_delete

    def get(self, name: str) -> UserRecord | None:
        return self.db.get_user(name)

    def quota(self, name: str) -> int | None:
        """The user's quota in bytes; None: unlimited (or no such user)."""
        if name.startswith(".") and self.team_quota is not None:
            return self.team_quota(name)  # a team folder (vault.teamfolders)
        u = self.db.get_user(name)
        return u.quota_bytes if u else None

    def require(self, name: str) -> UserRecord:
        u = self.db.get_user(name)
        if u is None:
            raise NotFound(f"user {name}")
        return u

    def list(self) -> list[UserRecord]:
        return self.db.list_users()

    def add(self, name: str, password: str, *, is_admin: bool = False,
            quota_bytes: int | None = None) -> UserRecord:
        validate_name(name)
        self._check_password(password)
        if self.db.get_user(name) is not None:
            raise Conflict(f"user {name} already exists")
        self.db.add_user(name, _context.hash(password), is_admin=is_admin,
                         quota_bytes=quota_bytes)
        if self._on_create:
            self._on_create(name)
        return self.require(name)

    def delete(self, name: str) -> None:
        self.require(name)
        if self._on_delete:
            self._on_delete(name)
        self.db.delete_user(name)
        self._forget(name)

    def reset_password(self, name: str, password: str) -> None:
        self.require(name)
        self._check_password(password)
        self.db.update_user(name, password_hash=_context.hash(password))
        self._forget(name)

    def set_quota(self, name: str, quota_bytes: int | None) -> None:
        self.require(name)
        self.db.update_user(name, quota_bytes=quota_bytes)

    def verify(self, name: str, password: str,
               check: Callable[[str, str], bool] | None = None,
               ttl: float | None = None, *, record: UserRecord | None = _LOOKUP) -> bool:
        """True if ``password`` is the user's; cheap when recently verified.

        ``check`` verifies against somewhere else (the directory) instead of the local
        hash, and ``ttl`` bounds how long its answer is trusted. A cached local success
        holds only while the stored hash is the one it was checked against, so a reset
        from the CLI or another node ends it at once. A success with a password not seen
        before drops the user's other cached passwords. ``record``: the user's row, when
        the caller has just read it.
        """
        if not name or not password or len(password.encode("utf-8", "replace")) > \
                MAX_PASSWORD_BYTES:
            return False
        tag = self._verified.tag(name, password)
        if check is not None:
            user = None
        else:
            user = self.db.get_user(name) if record is _LOOKUP else record
        stamp = user.password_hash if user else None
        if self._verified.hit(tag, name, stamp):
            return True
        lifetime = self.cache_seconds if ttl is None else ttl
        if lifetime <= 0:
            return self._check(name, password, check, user)
        with _single_flight(tag):
            if self._verified.hit(tag, name, stamp):
                return True  # checked by the thread this one waited for
            ok = self._check(name, password, check, user)
            if ok:
                self._verified.add(tag, name, stamp, lifetime)
            return ok

    @staticmethod
    def _check(name: str, password: str, check, user: UserRecord | None) -> bool:
        log.debug("checking the password of %r (not cached)", name)
        if check is not None:
            return check(name, password)
        if user is None or not user.password_hash:
            _context.dummy_verify()  # same cost as a real check: no enumeration by timing
            return False
        return _context.verify(password, user.password_hash)

    def check_password_rules(self, password: str) -> None:
        self._check_password(password)

    def check_local(self, name: str, password: str) -> bool:
        """Uncached check against the stored hash (for re-authentication in forms)."""
        user = self.db.get_user(name)
        if user is None or not user.password_hash:
            _context.dummy_verify()
            return False
        return _context.verify(password, user.password_hash)

    def set_password_hash(self, name: str, password: str) -> None:
        self._check_password(password)
        self.db.update_user(name, password_hash=_context.hash(password))
        self._forget(name)

    def ensure_external(self, name: str, *, backend: str, quota_bytes: int | None,
                        display_name: str | None = None, email: str | None = None) -> None:
        """Create or refresh the record of a directory user at login."""
        u = self.db.get_user(name)
        if u is None:
            self.db.add_user(name, None, backend=backend, quota_bytes=quota_bytes)
            if self._on_create:
                self._on_create(name)
        fields = {"display_name": display_name, "email": email, "quota_bytes": quota_bytes}
        if u is None or any(getattr(u, k) != v for k, v in fields.items()):
            self.db.update_user(name, **fields)

    def _forget(self, name: str) -> None:
        self._verified.forget(name)

    @staticmethod
    def _check_password(password: str) -> None:
        if not password or len(password) < MIN_PASSWORD_LENGTH:
            raise UserError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        if len(password.encode("utf-8", "replace")) > MAX_PASSWORD_BYTES:
            raise UserError(f"password must have at most {MAX_PASSWORD_BYTES} bytes")
