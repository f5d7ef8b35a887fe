"""Groups from the directory (LDAP): groupOfNames, groupOfUniqueNames or posixGroup.

Configured in ``[ldap]`` beside the users: ``group_base`` (required to use groups),
``group_filter`` (default ``(objectClass=groupOfNames)``; e.g.
``(objectClass=posixGroup)``), ``group_member_attribute`` (``member``, ``uniqueMember`` or
``memberUid``) and ``group_name_attribute`` (``cn``). Members given as DNs are mapped to
logins through the user base; ``memberUid`` values are logins already.

Answers are cached for the directory's ``cache_seconds`` (default 60): a membership change
in the directory takes effect within that interval, without a restart. When the directory
cannot be reached, a user counts as in no directory group (access fails closed) and the
failure is logged.
"""

from __future__ import annotations

import logging
import threading
import time

from ldap3.utils.conv import escape_filter_chars

from davserver.auth.ldap import DirectoryUnavailable, LdapDirectory

log = logging.getLogger("davserver.auth")


class LdapGroups:
    def __init__(self, directory: LdapDirectory) -> None:
        self.directory = directory
        self.cfg = directory.config
        self.cache_seconds = self.cfg.cache_seconds
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple, compute):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            value = compute()
        except DirectoryUnavailable as e:
            log.error("directory groups unavailable: %s", e)
            return None
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + self.cache_seconds, value)
        return value

    def _search(self, base: str, flt: str, attrs: list[str]):
        d = self.directory
        conn = d._service_session()
        try:
            return d._search(conn, base, flt, attrs)
        finally:
            conn.unbind()

    def _group_filter(self, name: str) -> str:
        return (f"(&{self.cfg.group_filter}"
                f"({self.cfg.group_name_attribute}={escape_filter_chars(name)}))")

    def names(self) -> list[str]:
        def compute():
            rows = self._search(self.cfg.group_base, self.cfg.group_filter,
                                [self.cfg.group_name_attribute])
            return sorted({_first(a, self.cfg.group_name_attribute) or dn for dn, a in rows})
        return self._cached(("names",), compute) or []

    def exists(self, name: str) -> bool:
        return self._members(name) is not None

    def members(self, name: str) -> list[str]:
        return self._members(name) or []

    def _members(self, name: str) -> list[str] | None:
        """Logins of a group's members; None if there is no such group."""
        def compute():
            rows = self._search(self.cfg.group_base, self._group_filter(name),
                                [self.cfg.group_member_attribute])
            if not rows:
                return "none"
            out: set[str] = set()
            for _dn, attrs in rows:
                for value in _values(attrs, self.cfg.group_member_attribute):
                    login = self._login_of(value)
                    if login:
                        out.add(login)
            return sorted(out)
        got = self._cached(("members", name), compute)
        return None if got in (None, "none") else got

    def _login_of(self, value: str) -> str | None:
        """A member value as a login: memberUid is one; a DN (uniqueMember may carry a
        ``#uid`` suffix) is looked up in the user base."""
        if "=" not in value:
            return value
        dn = value.split("#", 1)[0]

        def compute():
            rows = self._search(dn, self.cfg.user_filter, [self.cfg.login_attribute])
            for row_dn, attrs in rows:
                if row_dn.lower() == dn.lower():
                    return _first(attrs, self.cfg.login_attribute)
            return ""
        return self._cached(("login", dn.lower()), compute) or None

    def groups_of(self, login: str) -> list[str]:
        def compute():
            cfg = self.cfg
            user = self.directory.lookup(login)
            if user is None:
                return []
            values = [escape_filter_chars(user.dn), escape_filter_chars(user.login)]
            flt = (f"(&{cfg.group_filter}(|" + "".join(
                f"({cfg.group_member_attribute}={v})" for v in values) + "))")
            rows = self._search(cfg.group_base, flt, [cfg.group_name_attribute])
            return sorted({_first(a, cfg.group_name_attribute) or dn for dn, a in rows})
        return self._cached(("of", login), compute) or []


def _values(attrs, name: str) -> list[str]:
    for k, v in attrs.items():
        if k.lower() == name.lower():
            return [str(x) for x in (v if isinstance(v, list | tuple) else [v])]
    return []


def _first(attrs, name: str) -> str | None:
    vals = _values(attrs, name)
    return vals[0] if vals else None
