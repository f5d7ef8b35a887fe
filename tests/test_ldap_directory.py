"""LdapDirectory against a real slapd (see tests/ldap_server.py)."""

from __future__ import annotations

import dataclasses
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from davserver.auth.ldap import (
    DirectoryUnavailable,
    LdapConfig,
    LdapDirectory,
    parse_size,
    user_search_filter,
)
from tests.conftest_ldap import slapd, unique  # noqa: F401 - fixture
from tests.ldap_server import SlapdServer, free_port

GiB = 1024**3
MiB = 1024**2


def make_config(server: SlapdServer, **overrides: object) -> LdapConfig:
    values: dict[str, object] = {
        "uris": [server.uri],
        "bind_dn": server.bind_dn,
        "bind_password": server.bind_password,
        "user_base": server.people_dn,
        "group_base": server.groups_dn,
        "quota_attribute": server.quota_attribute,
        "timeout_seconds": 3.0,
    }
    values.update(overrides)
    return LdapConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def directory(slapd: SlapdServer) -> LdapDirectory:  # noqa: F811
    return LdapDirectory(make_config(slapd))


@dataclasses.dataclass
class Account:
    uid: str
    password: str
    dn: str


@pytest.fixture
def account(slapd: SlapdServer) -> Account:  # noqa: F811
    uid = unique("alice")
    password = "correct horse battery staple"
    dn = slapd.add_user(uid, password, cn="Alice Liddell", mail=f"{uid}@example.org", quota="10GB")
    return Account(uid, password, dn)


# -- authentication ---------------------------------------------------------------------------


def test_authenticate_ok(slapd: SlapdServer, directory: LdapDirectory, account: Account) -> None:  # noqa: F811
    group = unique("staff")
    slapd.add_group(group, [account.uid])
    user = directory.authenticate(account.uid, account.password)
    assert user is not None
    assert user.login == account.uid
    assert user.dn == account.dn
    assert user.display_name == "Alice Liddell"
    assert user.email == f"{account.uid}@example.org"
    assert user.quota_bytes == 10 * GiB
    assert user.groups == (group,)


def test_wrong_password(directory: LdapDirectory, account: Account) -> None:
    assert directory.authenticate(account.uid, account.password + "x") is None
    assert directory.authenticate(account.uid, account.password.upper()) is None


def test_empty_password_is_refused_before_any_bind(
    directory: LdapDirectory, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A DN with an empty password is an LDAP "unauthenticated bind" that some servers accept;
    # make sure we never even ask.
    def no_bind(*args: object) -> None:
        raise AssertionError("bind attempted with an empty password")

    monkeypatch.setattr(directory, "_user_bind", no_bind)
    assert directory.authenticate(account.uid, "") is None
    assert directory.authenticate(account.uid, None) is None  # type: ignore[arg-type]


def test_unknown_user(directory: LdapDirectory) -> None:
    missing = unique("nobody")
    assert directory.lookup(missing) is None
    assert directory.authenticate(missing, "whatever") is None


def test_empty_and_odd_logins_are_rejected(directory: LdapDirectory, account: Account) -> None:
    for login in ["", " ", f" {account.uid}", f"{account.uid} ", f"{account.uid}\n", "x" * 300]:
        assert directory.lookup(login) is None, repr(login)
        assert directory.authenticate(login, account.password) is None, repr(login)


def test_account_without_password_cannot_log_in(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    uid = unique("nopw")
    slapd.add_user(uid, None)
    assert directory.lookup(uid) is not None
    assert directory.authenticate(uid, "anything") is None


def test_login_is_case_insensitive_but_canonical(
    directory: LdapDirectory, account: Account
) -> None:
    user = directory.authenticate(account.uid.upper(), account.password)
    assert user is not None
    assert user.login == account.uid  # the directory's spelling, not the typed one


# -- LDAP injection ---------------------------------------------------------------------------


def test_injection_attempts_match_nothing(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    prefix = unique("inj")
    password = "s3cret-injection"
    uid = f"{prefix}-victim"
    slapd.add_user(uid, password)
    attempts = [
        "*",
        "a*",
        "*)",
        "admin)(uid=*",
        "*)(uid=*",
        "*)(|(uid=*",
        f"{prefix}*",  # would match exactly the victim if not escaped
        f"{prefix}-vict*",
        f"*{uid[1:]}",
        f"{uid})(|(objectClass=*",
        f"{uid})(objectClass=*",
        f"{uid}\x00",
        f"{uid}\x00*",
        "\\2a",  # an escaped '*' that must not be unescaped twice
        "\\",
        "(uid=*)",
        "*)(objectClass=*))(&(uid=*",
    ]
    for login in attempts:
        assert directory.lookup(login) is None, repr(login)
        assert directory.authenticate(login, password) is None, repr(login)
    # The real login still works, so the checks above failed for the right reason.
    assert directory.authenticate(uid, password) is not None


def test_filter_escaping() -> None:
    config = LdapConfig(uris=["ldap://127.0.0.1"], user_base="dc=example,dc=org")
    assert (
        user_search_filter(config, "a*)(uid=\\\x00")
        == "(&(objectClass=inetOrgPerson)(uid=a\\2a\\29\\28uid=\\5c\\00))"
    )


def test_logins_with_filter_metacharacters_work_literally(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    # Escaping must make such characters literal, not merely forbidden; this also puts a
    # comma, plus and backslash into the DN the user binds as.
    uid = unique("we*rd(1)") + ",a+b\\c"
    slapd.add_user(uid, "pw-weird")
    user = directory.authenticate(uid, "pw-weird")
    assert user is not None
    assert user.login == uid
    assert directory.authenticate(uid, "pw-wrong") is None


def test_ambiguous_login_is_refused(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    uid = unique("dup")
    other = unique("dup-other")
    slapd.add_user(uid, "pw-one")
    # A second entry that also answers to ``uid``.
    slapd.add_user(other, "pw-two", extra={"uid": [other, uid]})
    assert directory.lookup(uid) is None
    assert directory.authenticate(uid, "pw-one") is None
    assert directory.authenticate(uid, "pw-two") is None
    assert directory.authenticate(other, "pw-two") is not None


# -- password changes and caching -------------------------------------------------------------


def test_password_change_in_directory(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
    account: Account,
) -> None:
    assert directory.authenticate(account.uid, account.password) is not None  # now cached
    slapd.set_password(account.uid, "brand new password")
    assert directory.authenticate(account.uid, account.password) is None
    assert directory.authenticate(account.uid, "brand new password") is not None


def test_lookup_cache(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    directory = LdapDirectory(make_config(slapd, cache_seconds=60.0))
    first = directory.lookup(account.uid)
    assert first is not None
    slapd.modify_user(account.uid, cn="Renamed Person")
    assert directory.lookup(account.uid) == first  # served from cache
    directory.invalidate(account.uid)
    refreshed = directory.lookup(account.uid)
    assert refreshed is not None and refreshed.display_name == "Renamed Person"

    # A deleted account cannot authenticate even while its lookup is still cached.
    slapd.delete_user(account.uid)
    assert directory.lookup(account.uid) is not None
    assert directory.authenticate(account.uid, account.password) is None
    assert directory.lookup(account.uid) is None  # the failed bind dropped the stale entry


def test_cache_disabled(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    directory = LdapDirectory(make_config(slapd, cache_seconds=0))
    assert directory.lookup(account.uid) is not None
    slapd.modify_user(account.uid, cn="Changed At Once")
    user = directory.lookup(account.uid)
    assert user is not None and user.display_name == "Changed At Once"


def test_negative_results_are_not_cached(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    uid = unique("late")
    assert directory.lookup(uid) is None
    slapd.add_user(uid, "pw-late")
    assert directory.authenticate(uid, "pw-late") is not None


def test_concurrent_authentication(
    slapd: SlapdServer,  # noqa: F811
    account: Account,
) -> None:
    directory = LdapDirectory(make_config(slapd, cache_seconds=0))

    def attempt(i: int) -> bool:
        password = account.password if i % 2 == 0 else "wrong"
        return directory.authenticate(account.uid, password) is not None

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(40)))
    assert results == [i % 2 == 0 for i in range(40)]


# -- groups and attributes --------------------------------------------------------------------


def test_groups_of(slapd: SlapdServer, directory: LdapDirectory, account: Account) -> None:  # noqa: F811
    first, second = unique("grp-a"), unique("grp-b")
    other = unique("bob")
    slapd.add_user(other, "pw-bob")
    slapd.add_group(first, [account.uid, other])
    slapd.add_group(second, [account.uid])
    assert directory.groups_of(account.dn) == tuple(sorted([first, second]))
    assert directory.groups_of(slapd.user_dn(other)) == (first,)
    assert directory.groups_of(slapd.user_dn(unique("ghost"))) == ()
    # A DN with filter metacharacters must not act as a wildcard.
    assert directory.groups_of("*") == ()


def test_no_group_base_means_no_groups(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    slapd.add_group(unique("grp"), [account.uid])
    directory = LdapDirectory(make_config(slapd, group_base=None))
    user = directory.authenticate(account.uid, account.password)
    assert user is not None and user.groups == ()
    assert directory.groups_of(account.dn) == ()


@pytest.mark.parametrize(
    ("quota", "expected"),
    [("500 MB", 500 * MiB), ("1073741824", GiB), ("2GiB", 2 * GiB), ("lots", None), (None, None)],
)
def test_quota_attribute(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
    quota: str | None,
    expected: int | None,
) -> None:
    uid = unique("quota")
    slapd.add_user(uid, "pw-quota", quota=quota)
    user = directory.lookup(uid)
    assert user is not None
    assert user.quota_bytes == expected


def test_missing_optional_attributes(
    slapd: SlapdServer,  # noqa: F811
    directory: LdapDirectory,
) -> None:
    uid = unique("plain")
    slapd.add_user(uid, "pw-plain")
    user = directory.lookup(uid)
    assert user is not None
    assert user.display_name == uid  # cn defaults to the uid in the helper
    assert user.email is None
    assert user.quota_bytes is None
    assert user.groups == ()


def test_no_quota_attribute_configured(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    directory = LdapDirectory(make_config(slapd, quota_attribute=None))
    user = directory.lookup(account.uid)
    assert user is not None and user.quota_bytes is None


# -- failures ---------------------------------------------------------------------------------


def test_unreachable_server_raises_quickly(slapd: SlapdServer) -> None:  # noqa: F811
    uri = f"ldap://127.0.0.1:{free_port()}"  # nothing listens there
    directory = LdapDirectory(make_config(slapd, uris=[uri], timeout_seconds=2.0))
    started = time.monotonic()
    with pytest.raises(DirectoryUnavailable) as info:
        directory.authenticate("someone", "pw")
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert uri.removeprefix("ldap://") in message
    assert slapd.bind_password not in message


def test_silent_server_times_out() -> None:
    # Accepts TCP connections (via the listen backlog) but never answers a bind.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(8)
        uri = f"ldap://127.0.0.1:{sink.getsockname()[1]}"
        config = LdapConfig(
            uris=[uri],
            user_base="ou=people,dc=example,dc=org",
            bind_dn="cn=admin,dc=example,dc=org",
            bind_password="hunter2-service",
            timeout_seconds=1.0,
        )
        started = time.monotonic()
        with pytest.raises(DirectoryUnavailable) as info:
            LdapDirectory(config).lookup("someone")
        elapsed = time.monotonic() - started
    assert elapsed < 4.0
    assert uri.removeprefix("ldap://") in str(info.value)
    assert "hunter2-service" not in str(info.value)


def test_failover_to_next_uri(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    dead = f"ldap://127.0.0.1:{free_port()}"
    directory = LdapDirectory(make_config(slapd, uris=[dead, slapd.uri]))
    assert directory.authenticate(account.uid, account.password) is not None
    assert directory.authenticate(account.uid, "wrong") is None


def test_bad_service_password_is_unavailable_not_unknown_user(
    slapd: SlapdServer,  # noqa: F811
    account: Account,
) -> None:
    directory = LdapDirectory(make_config(slapd, bind_password="not-the-admin-password"))
    with pytest.raises(DirectoryUnavailable) as info:
        directory.authenticate(account.uid, account.password)
    assert "not-the-admin-password" not in str(info.value)
    assert account.password not in str(info.value)
    with pytest.raises(DirectoryUnavailable):
        directory.ping()


def test_ping(directory: LdapDirectory) -> None:
    directory.ping()


# -- TLS --------------------------------------------------------------------------------------


def test_start_tls(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    directory = LdapDirectory(make_config(slapd, start_tls=True, ca_file=slapd.ca_file))
    assert directory.authenticate(account.uid, account.password) is not None
    assert directory.authenticate(account.uid, "wrong") is None


def test_ldaps(slapd: SlapdServer, account: Account) -> None:  # noqa: F811
    directory = LdapDirectory(make_config(slapd, uris=[slapd.ldaps_uri], ca_file=slapd.ca_file))
    assert directory.authenticate(account.uid, account.password) is not None


def test_start_tls_with_untrusted_certificate(slapd: SlapdServer) -> None:  # noqa: F811
    # Without our CA the system trust store is used, which must not accept the test CA.
    directory = LdapDirectory(make_config(slapd, start_tls=True, ca_file=None))
    with pytest.raises(DirectoryUnavailable, match="(?i)certificate"):
        directory.lookup("someone")


def test_start_tls_hostname_mismatch() -> None:
    # A CA we trust, but a certificate for another host: must be refused all the same.
    with SlapdServer(tls_names=("ldap.invalid",)) as other:
        uid = unique("tlsname")
        other.add_user(uid, "pw-tls")
        plain = LdapDirectory(make_config(other))
        assert plain.authenticate(uid, "pw-tls") is not None  # reachable without TLS
        directory = LdapDirectory(make_config(other, start_tls=True, ca_file=other.ca_file))
        with pytest.raises(DirectoryUnavailable, match="(?i)doesn't match|certificate"):
            directory.authenticate(uid, "pw-tls")


# -- configuration and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1234", 1234),
        (" 1234 ", 1234),
        ("10B", 10),
        ("1KB", 1024),
        ("1 KiB", 1024),
        ("500 MB", 500 * MiB),
        ("500mib", 500 * MiB),
        ("10GB", 10 * GiB),
        ("10 GiB", 10 * GiB),
        ("1.5GB", 3 * GiB // 2),
        ("2TB", 2 * 1024**4),
        ("3 TiB", 3 * 1024**4),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-1", "-5GB", "1 XB", "1e9", "١٢٣", "1.GB", True, -1])
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_config_from_mapping(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"uris": ["ldap://a", "ldap://b"], "user_base": "ou=people,dc=example,dc=org"}
    config = LdapConfig.from_mapping(
        {**base, "bind_dn": "cn=svc", "bind_password": "pw", "timeout_seconds": 2}
    )
    assert config.uris == ("ldap://a", "ldap://b")
    assert config.timeout_seconds == 2.0
    assert config.login_attribute == "uid"
    assert config.cache_seconds == 60.0
    assert "pw" not in repr(config)

    secret = tmp_path / "bind.pw"
    secret.write_text("from-file\n")
    config = LdapConfig.from_mapping({**base, "bind_dn": "cn=svc", "bind_password_file": secret})
    assert config.bind_password == "from-file"

    monkeypatch.setenv("DAV_TEST_LDAP_PW", "from-env")
    config = LdapConfig.from_mapping(
        {**base, "bind_dn": "cn=svc", "bind_password_env": "DAV_TEST_LDAP_PW"}
    )
    assert config.bind_password == "from-env"

    assert LdapConfig.from_mapping({**base, "uris": "ldaps://one"}).uris == ("ldaps://one",)
    single = {"uri": "ldap://one", "user_base": "dc=example,dc=org"}
    assert LdapConfig.from_mapping(single).uris == ("ldap://one",)


@pytest.mark.parametrize(
    "extra",
    [
        {"user_bsae": "typo"},
        {"bind_dn": "cn=svc"},  # DN without password = unauthenticated bind
        {"bind_dn": "cn=svc", "bind_password": "a", "bind_password_env": "X"},
        {"bind_dn": "cn=svc", "bind_password_env": "DAV_TEST_SURELY_UNSET_VARIABLE"},
        {"bind_dn": "cn=svc", "bind_password_file": "/nonexistent/bind.pw"},
        {"uris": []},
        {"uri": "ldap://c"},  # together with uris
        {"uris": ["http://example.org"]},
        {"uris": ["ldaps://a"], "start_tls": True},
        {"start_tls": "yes"},
        {"timeout_seconds": 0},
        {"timeout_seconds": "5"},
        {"cache_seconds": -1},
        {"user_filter": "objectClass=person"},
    ],
)
def test_config_from_mapping_rejects(extra: dict[str, object]) -> None:
    base = {"uris": ["ldap://a"], "user_base": "ou=people,dc=example,dc=org"}
    with pytest.raises(ValueError):
        LdapConfig.from_mapping({**base, **extra})
