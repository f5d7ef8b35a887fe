"""Login: the one function HTTP Basic, the web pages and the CLI use to turn a user name
and password into a principal whose keys are unlocked.

Order matters: throttle first (a throttled attempt never reaches a password check), then
the password against its backend (local hash or the directory), then, in user-key mode,
the user's key. A password the directory accepts but that cannot unlock the key is the
"changed elsewhere" case: the caller gets KeyLocked (403 with instructions), not 401.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from davserver.auth import app_passwords
from davserver.auth.ldap import DirectoryUnavailable, LdapDirectory
from davserver.auth.throttle import Throttle
from davserver.auth.users import UserService
from davserver.errors import DavServerError
from davserver.vault.keystore import Identity
from davserver.vault.userkeys import KeyLocked

log = logging.getLogger("davserver.auth")


class LoginFailed(DavServerError):
    """wrong user name or password"""

    HTTP_STATUS = 401
    EXIT_CODE = 5


class Throttled(DavServerError):
    """too many failed logins; try again in {detail} seconds"""

    HTTP_STATUS = 429
    EXIT_CODE = 5

    def __init__(self, seconds: int) -> None:
        super().__init__(str(seconds))
        self.seconds = seconds


class DirectoryDown(DavServerError):
    """the user directory cannot be reached; try again later"""

    HTTP_STATUS = 503
    EXIT_CODE = 9


@dataclass(frozen=True)
class Principal:
    user: str
    identities: tuple[Identity, ...]
    key_locked: bool = False


class LoginService:
    def __init__(self, users: UserService, throttle: Throttle, *, instance,
                 directory: LdapDirectory | None = None,
                 directory_cache_seconds: float = 0.0) -> None:
        self.users = users
        self.throttle = throttle
        self.directory = directory
        self._instance = instance
        #: How long a password the directory accepted is trusted without asking again.
        #: 0 (default): every request binds, so a password changed in the directory stops
        #: working at once. Raise it to spare the directory on busy servers.
        self.directory_cache_seconds = directory_cache_seconds

    def _directory_check(self, name: str, password: str) -> bool:
        try:
            found = self.directory.authenticate(name, password)
        except DirectoryUnavailable as e:
            log.error("directory unavailable: %s", e)
            raise DirectoryDown() from None
        if found is None:
            return False
        if found.login != name:
            # One spelling per account, or "Alice" and "alice" would get two homes.
            log.warning("login %r refused: the directory spells it %r", name, found.login)
            return False
        self.users.ensure_external(name, backend="ldap", quota_bytes=found.quota_bytes,
                                   display_name=found.display_name, email=found.email)
        return True

    def check_password(self, name: str, password: str) -> bool:
        record = self.users.get(name)
        if (record is None or record.backend == "ldap") and self.directory is not None:
            return self.users.verify(name, password, check=self._directory_check,
                                     ttl=self.directory_cache_seconds)
        return self.users.verify(name, password, record=record)

    def login(self, name: str, password: str, addr: str = "", *,
              allow_locked_key: bool = False) -> Principal:
        """Authenticate and unlock. ``allow_locked_key`` (the settings pages) lets a user
        whose key needs their old password in, so they can fix it."""
        keys = (f"user:{name}", f"addr:{addr}")
        wait, on_record = self.throttle.check(*keys)
        if wait:
            log.warning("login throttled for user %r from %s", name, addr)
            raise Throttled(wait)
        if app_passwords.looks_like(password):
            app_id = self._instance.app_passwords.find(name, password)
            if app_id is not None and self.users.get(name) is not None:
                if keys[0] in on_record:
                    self.throttle.succeeded(keys[0])
                return self._unlocked(name, lambda: self._instance.app_passwords.identities(
                    name, app_id, password), allow_locked_key)
        if not self.check_password(name, password):
            self.throttle.failed(*keys)
            log.warning("failed login for user %r from %s", name, addr)
            raise LoginFailed()
        if keys[0] in on_record:
            self.throttle.succeeded(keys[0])
        return self._unlocked(name, lambda: self._instance.unlock(name, password),
                              allow_locked_key)

    @staticmethod
    def _unlocked(name: str, unlock, allow_locked_key: bool) -> Principal:
        try:
            return Principal(name, unlock())
        except KeyLocked:
            if not allow_locked_key:
                raise
            return Principal(name, (), key_locked=True)
