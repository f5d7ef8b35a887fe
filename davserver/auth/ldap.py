"""LDAP directory backend: find accounts and check their passwords by binding.

Passwords are verified by a simple bind as the user's own DN, never by reading and comparing
``userPassword``: the directory may hash in any scheme, apply password policies or lockouts,
and the service account then needs no right to read password hashes.

Security-relevant choices, in one place for a reviewer:

* Logins are escaped with :func:`ldap3.utils.conv.escape_filter_chars` before they go into a
  filter, and a search that matches more than one entry resolves to *no* user, so neither
  wildcards nor an ambiguous directory can make one login authenticate as another account.
* An empty password is refused before any bind. LDAP defines a simple bind with a DN and an
  empty password as an *unauthenticated* bind, which some servers answer with success.
* The service account likewise must not be configured with a DN but no password.
* Referrals are not chased, so credentials are only ever sent to the configured servers.
* Failures to reach the directory raise :class:`DirectoryUnavailable` (the HTTP layer answers
  503) rather than looking like a wrong password, so an outage does not lock users out with
  misleading 401s, and a flaky server cannot be mistaken for a rejection.
* Only positive lookups are cached, and never passwords: a password change in the directory
  takes effect on the next request, and a newly created account is not hidden by a cached
  "no such user".

Every operation opens its own connection. WsgiDAV serves requests on many threads and an
ldap3 connection carries per-bind state, so sharing one would need a lock held for network
round trips; a connection per operation is simpler and the cost is small next to a bind.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

log = logging.getLogger(__name__)

__all__ = [
    "DirectoryUnavailable",
    "DirectoryUser",
    "LdapConfig",
    "LdapDirectory",
    "parse_size",
]

# LDAP result codes (RFC 4511) we treat specially.
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_BUSY = 51
_UNAVAILABLE = 52
_RETRY_ELSEWHERE = frozenset({_BUSY, _UNAVAILABLE})

_MAX_LOGIN_LENGTH = 256
_MAX_CACHE_ENTRIES = 4096


class DirectoryUnavailable(Exception):
    """The directory could not give an answer (unreachable, timed out, misconfigured).

    Distinct from "no such user" / "wrong password" so callers can answer 503, not 401.
    """


# -- sizes ------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_UNIT_POWERS = {
    "": 0,
    "b": 0,
    "k": 1,
    "kb": 1,
    "kib": 1,
    "m": 2,
    "mb": 2,
    "mib": 2,
    "g": 3,
    "gb": 3,
    "gib": 3,
    "t": 4,
    "tb": 4,
    "tib": 4,
    "p": 5,
    "pb": 5,
    "pib": 5,
}


def parse_size(text: str | int) -> int:
    """Parse ``"1073741824"``, ``"10GB"``, ``"500 MB"`` or ``"1.5 GiB"`` into bytes.

    Directories hold quotas as free text written by people, so the usual spellings are
    accepted; KB/MB/... are binary (powers of 1024) like the KiB/MiB forms, because that is
    what administrators nearly always mean for disk quotas. Fractions round down to a byte.
    Raises ValueError for anything else, including negative numbers.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"not a size: {text!r}")
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    power = _UNIT_POWERS.get(unit.lower())
    if power is None:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}")
    return int(Decimal(number) * (1024**power))


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LdapConfig:
    """Connection and schema mapping for one directory.

    ``uris`` are tried in order; later ones are only used when earlier ones cannot be reached,
    never after an earlier server rejected a password. ``bind_dn=None`` means searches run
    anonymously. ``ca_file=None`` with TLS means the system trust store.
    """

    uris: tuple[str, ...]
    user_base: str
    start_tls: bool = False
    ca_file: str | None = None
    bind_dn: str | None = None
    bind_password: str | None = field(default=None, repr=False)
    user_filter: str = "(objectClass=inetOrgPerson)"
    login_attribute: str = "uid"
    display_name_attribute: str = "cn"
    email_attribute: str = "mail"
    quota_attribute: str | None = None
    group_base: str | None = None
    group_filter: str = "(objectClass=groupOfNames)"
    group_member_attribute: str = "member"
    group_name_attribute: str = "cn"
    timeout_seconds: float = 5.0
    cache_seconds: float = 60.0

    def __post_init__(self) -> None:
        uris = (self.uris,) if isinstance(self.uris, str) else tuple(self.uris)
        object.__setattr__(self, "uris", uris)
        if not uris:
            raise ValueError("ldap: at least one URI is required")
        for uri in uris:
            scheme = urlsplit(uri).scheme.lower()
            if scheme not in ("ldap", "ldaps"):
                raise ValueError(f"ldap: unsupported URI {uri!r} (use ldap:// or ldaps://)")
            if scheme == "ldaps" and self.start_tls:
                raise ValueError(f"ldap: start_tls makes no sense with the ldaps URI {uri!r}")
        if self.bind_dn and not self.bind_password:
            # A DN with an empty password is an unauthenticated bind: it "succeeds" on many
            # servers and silently searches as anonymous.
            raise ValueError("ldap: bind_dn is set but no bind password was given")
        if not self.user_base:
            raise ValueError("ldap: user_base is required")
        for name in ("user_filter", "group_filter"):
            value = getattr(self, name)
            if not (value.startswith("(") and value.endswith(")")):
                raise ValueError(f"ldap: {name} must be a parenthesised filter, got {value!r}")
        if not (self.timeout_seconds > 0 and math.isfinite(self.timeout_seconds)):
            raise ValueError("ldap: timeout_seconds must be a positive number")
        if not (self.cache_seconds >= 0 and math.isfinite(self.cache_seconds)):
            raise ValueError("ldap: cache_seconds must be zero or positive")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> LdapConfig:
        """Build from a TOML table, failing loudly on unknown keys (typos would else be silent).

        The bind password can be inline (``bind_password``), in a file
        (``bind_password_file``, trailing newline stripped) or in an environment variable
        (``bind_password_env`` names it), so it need not sit in a world-readable config.
        ``uris`` may also be a single string, or be spelled ``uri``.
        """
        known = {f.name for f in fields(cls)}
        indirect = {"bind_password_file", "bind_password_env"}
        unknown = sorted(set(d) - known - indirect - {"uri"})
        if unknown:
            raise ValueError(f"ldap: unknown configuration keys: {', '.join(unknown)}")

        values = {k: v for k, v in d.items() if k in known}
        sources = [k for k in ("bind_password", *sorted(indirect)) if d.get(k) is not None]
        if len(sources) > 1:
            raise ValueError(f"ldap: give only one of {', '.join(sources)}")
        if "bind_password_file" in sources:
            path = str(d["bind_password_file"])
            try:
                with open(path, encoding="utf-8") as fh:
                    values["bind_password"] = fh.read().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"ldap: cannot read bind_password_file {path!r}: {exc}") from exc
        elif "bind_password_env" in sources:
            name = str(d["bind_password_env"])
            if name not in os.environ:
                raise ValueError(f"ldap: environment variable {name!r} is not set")
            values["bind_password"] = os.environ[name]

        if "uri" in d:
            if "uris" in values:
                raise ValueError("ldap: give either uri or uris, not both")
            values["uris"] = d["uri"]
        for name in ("uris", "user_base"):
            if name not in values:
                raise ValueError(f"ldap: {name} is required")
        if isinstance(values["uris"], str):
            values["uris"] = (values["uris"],)
        if not all(isinstance(u, str) for u in values["uris"]):
            raise ValueError("ldap: uris must be strings")
        if "start_tls" in values and not isinstance(values["start_tls"], bool):
            raise ValueError("ldap: start_tls must be true or false")
        for name in ("timeout_seconds", "cache_seconds"):
            if name in values:
                value = values[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"ldap: {name} must be a number")
                values[name] = float(value)
        return cls(**values)


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryUser:
    """What the rest of davserver needs to know about an account.

    ``login`` is the directory's spelling of the login attribute, which may differ in case
    from what the user typed (LDAP matching on ``uid`` is case-insensitive); callers should
    key per-user state on it so "Alice" and "alice" do not get two homes.
    """

    login: str
    dn: str
    display_name: str
    email: str | None
    quota_bytes: int | None
    groups: tuple[str, ...]


class _BindRejected(Exception):
    def __init__(self, code: int | None, description: str) -> None:
        super().__init__(f"{description} ({code})")
        self.code = code
        self.description = description


# -- directory --------------------------------------------------------------------------------


class LdapDirectory:
    """Thread-safe access to one directory; see the module docstring for the rationale."""

    def __init__(self, config: LdapConfig) -> None:
        self._config = config
        self._tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file)
        self._cache: dict[str, tuple[float, DirectoryUser]] = {}
        self._lock = threading.Lock()
        for uri in config.uris:
            parts = urlsplit(uri)
            if parts.scheme.lower() == "ldap" and not config.start_tls:
                if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
                    log.warning("LDAP to %s is unencrypted; passwords cross the network", uri)

    @property
    def config(self) -> LdapConfig:
        return self._config

    # -- public API ---------------------------------------------------------------------------

    def lookup(self, login: str) -> DirectoryUser | None:
        """Find the account for ``login``; None if there is none or the login is ambiguous."""
        return self._lookup(login)[0]

    def authenticate(self, login: str, password: str) -> DirectoryUser | None:
        """Return the account if ``password`` is right for ``login``, else None.

        Raises DirectoryUnavailable when no server could answer.
        """
        if not isinstance(password, str) or password == "":
            return None
        user, from_cache = self._lookup(login)
        if user is None:
            return None
        if self._user_bind(user.dn, password):
            return user
        if from_cache:
            # The cached DN may be stale (entry renamed or moved); the password itself is not
            # cached, so one fresh look is enough to tell.
            self.invalidate(login)
            fresh, _ = self._lookup(login)
            if fresh is not None and fresh.dn != user.dn and self._user_bind(fresh.dn, password):
                return fresh
        return None

    def groups_of(self, user_dn: str) -> tuple[str, ...]:
        """Names of the groups listing ``user_dn`` as a member (empty without group_base)."""
        if not self._config.group_base:
            return ()
        conn = self._service_session()
        try:
            return self._groups(conn, user_dn)
        finally:
            _close(conn)

    def ping(self) -> None:
        """Raise DirectoryUnavailable unless the service bind works (for health checks)."""
        _close(self._service_session())

    def invalidate(self, login: str | None = None) -> None:
        """Forget cached lookups, of one login or all."""
        with self._lock:
            if login is None:
                self._cache.clear()
            else:
                self._cache.pop(login, None)

    # -- lookup -------------------------------------------------------------------------------

    def _lookup(self, login: str) -> tuple[DirectoryUser | None, bool]:
        if not _acceptable_login(login):
            return None, False
        cached = self._cache_get(login)
        if cached is not None:
            return cached, True
        conn = self._service_session()
        try:
            user = self._search_user(conn, login)
        finally:
            _close(conn)
        if user is not None:
            self._cache_put(login, user)
        return user, False

    def _search_user(self, conn: ldap3.Connection, login: str) -> DirectoryUser | None:
        cfg = self._config
        search_filter = user_search_filter(cfg, login)
        attributes = [cfg.login_attribute, cfg.display_name_attribute, cfg.email_attribute]
        if cfg.quota_attribute:
            attributes.append(cfg.quota_attribute)
        # size_limit=2: we only need to know whether the login is unique.
        entries = self._search(conn, cfg.user_base, search_filter, attributes, size_limit=2)
        if not entries:
            return None
        if len(entries) > 1:
            log.warning("LDAP login %r matches several entries; refusing it", login)
            return None
        dn, attrs = entries[0]

        login_values = _values(attrs, cfg.login_attribute)
        canonical = next((v for v in login_values if v.casefold() == login.casefold()), None)
        if canonical is None:
            canonical = sorted(login_values)[0] if login_values else login

        quota: int | None = None
        if cfg.quota_attribute:
            raw = _first(attrs, cfg.quota_attribute)
            if raw is not None:
                try:
                    quota = parse_size(raw)
                except ValueError:
                    log.warning("ignoring unparsable %s %r on %s", cfg.quota_attribute, raw, dn)

        groups = self._groups(conn, dn) if cfg.group_base else ()
        return DirectoryUser(
            login=canonical,
            dn=dn,
            display_name=_first(attrs, cfg.display_name_attribute) or canonical,
            email=_first(attrs, cfg.email_attribute),
            quota_bytes=quota,
            groups=groups,
        )

    def _groups(self, conn: ldap3.Connection, user_dn: str) -> tuple[str, ...]:
        cfg = self._config
        assert cfg.group_base is not None
        member = escape_filter_chars(user_dn)
        search_filter = f"(&{cfg.group_filter}({cfg.group_member_attribute}={member}))"
        entries = self._search(conn, cfg.group_base, search_filter, [cfg.group_name_attribute])
        names = {_first(attrs, cfg.group_name_attribute) or dn for dn, attrs in entries}
        return tuple(sorted(names))

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        size_limit: int = 0,
    ) -> list[tuple[str, dict[str, Any]]]:
        uri = _uri_of(conn)
        try:
            conn.search(
                base,
                search_filter,
                search_scope=ldap3.SUBTREE,
                attributes=attributes,
                size_limit=size_limit,
                time_limit=max(1, math.ceil(self._config.timeout_seconds)),
            )
        except (LDAPException, OSError) as exc:
            raise DirectoryUnavailable(f"LDAP search on {uri} failed: {_describe(exc)}") from exc
        code = conn.result.get("result")
        if code == _NO_SUCH_OBJECT:
            log.warning("LDAP search base %r does not exist on %s", base, uri)
            return []
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            # We cannot tell "no such user" from "could not look": fail as unavailable.
            description = conn.result.get("description")
            raise DirectoryUnavailable(f"LDAP search on {uri} failed: {description} ({code})")
        return [
            (entry["dn"], entry.get("attributes") or {})
            for entry in conn.response or ()
            if entry.get("type") == "searchResEntry"
        ]

    # -- connections --------------------------------------------------------------------------

    def _service_session(self) -> ldap3.Connection:
        cfg = self._config
        try:
            return self._session(cfg.bind_dn, cfg.bind_password)
        except _BindRejected as exc:
            who = cfg.bind_dn or "anonymous"
            raise DirectoryUnavailable(
                f"LDAP service bind as {who!r} rejected: {exc.description} ({exc.code})"
            ) from None

    def _user_bind(self, dn: str, password: str) -> bool:
        try:
            conn = self._session(dn, password)
        except _BindRejected as exc:
            log.debug("LDAP bind as %r rejected: %s", dn, exc.description)
            return False
        _close(conn)
        return True

    def _session(self, user: str | None, password: str | None) -> ldap3.Connection:
        """Open, secure and bind a connection, trying each URI until one answers.

        A server that answers with a rejection ends the attempt (raises _BindRejected): asking
        the next server would only double the password guesses an attacker gets.
        """
        errors: list[str] = []
        secrets = [s for s in (password, self._config.bind_password) if s]
        for uri in self._config.uris:
            conn: ldap3.Connection | None = None
            try:
                conn = self._connection(uri, user, password)
                conn.open()
                if self._config.start_tls:
                    conn.start_tls()
                if conn.bind():
                    return conn
                code = conn.result.get("result")
                description = str(conn.result.get("description"))
                _close(conn)
                if code in _RETRY_ELSEWHERE:
                    errors.append(f"{uri}: {description} ({code})")
                    continue
                raise _BindRejected(code, description)
            except (LDAPException, OSError) as exc:
                if conn is not None:
                    _close(conn)
                errors.append(f"{uri}: {_scrub(_describe(exc), secrets)}")
        raise DirectoryUnavailable("no LDAP server answered: " + "; ".join(errors))

    def _connection(self, uri: str, user: str | None, password: str | None) -> ldap3.Connection:
        timeout = self._config.timeout_seconds
        # A Server per connection: ldap3 Server objects keep mutable address state, so
        # sharing them across threads is not safe.
        server = ldap3.Server(uri, connect_timeout=timeout, get_info=ldap3.NONE, tls=self._tls)
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            auto_referrals=False,
            # ldap3 packs this into SO_RCVTIMEO as whole seconds and fails on a float.
            receive_timeout=max(1, math.ceil(timeout)),
            raise_exceptions=False,
        )

    # -- cache --------------------------------------------------------------------------------

    def _cache_get(self, login: str) -> DirectoryUser | None:
        if self._config.cache_seconds <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            item = self._cache.get(login)
            if item is None:
                return None
            if item[0] <= now:
                del self._cache[login]
                return None
            return item[1]

    def _cache_put(self, login: str, user: DirectoryUser) -> None:
        if self._config.cache_seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                for key in [k for k, (expiry, _) in self._cache.items() if expiry <= now]:
                    del self._cache[key]
                while len(self._cache) >= _MAX_CACHE_ENTRIES:
                    del self._cache[next(iter(self._cache))]
            self._cache[login] = (now + self._config.cache_seconds, user)


# -- helpers ----------------------------------------------------------------------------------


def user_search_filter(config: LdapConfig, login: str) -> str:
    """The filter that finds ``login``; the login is escaped so it can only match literally."""
    return f"(&{config.user_filter}({config.login_attribute}={escape_filter_chars(login)}))"


def _acceptable_login(login: object) -> bool:
    """Reject logins no sane directory holds, before they reach a filter.

    Escaping already makes any string safe in a filter; this is defence in depth plus a guard
    against surprises from matching rules that ignore surrounding spaces.
    """
    if not isinstance(login, str) or not login or len(login) > _MAX_LOGIN_LENGTH:
        return False
    if login != login.strip():
        return False
    return not any(ord(ch) < 32 or ord(ch) == 127 for ch in login)


def _values(attrs: Mapping[str, Any], name: str) -> list[str]:
    # Attribute names come back in the server's spelling; LDAP names are case-insensitive.
    for key, value in attrs.items():
        if key.lower() == name.lower():
            if value is None:
                return []
            items = value if isinstance(value, list | tuple) else [value]
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items]
    return []


def _first(attrs: Mapping[str, Any], name: str) -> str | None:
    values = _values(attrs, name)
    return values[0] if values else None


def _uri_of(conn: ldap3.Connection) -> str:
    server = conn.server
    scheme = "ldaps" if server.ssl else "ldap"
    return f"{scheme}://{server.host}:{server.port}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _scrub(text: str, secrets: list[str]) -> str:
    """Belt and braces: no exception text we pass on may contain a password."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _close(conn: ldap3.Connection) -> None:
    try:
        conn.unbind()
    except (LDAPException, OSError):
        pass
