"""Login throttling per client address behind a reverse proxy: X-Forwarded-For is
believed only from ``[server] trusted_proxies``, and only its rightmost untrusted hop."""

from __future__ import annotations

import pytest
import requests

from davserver.auth.forwarded import client_address, parse_trusted

PROXIES = parse_trusted(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(("peer", "xff", "trusted", "expected"), [
    ("127.0.0.1", "203.0.113.7", PROXIES, "203.0.113.7"),
    ("127.0.0.1", "198.51.100.1, 203.0.113.7", PROXIES, "203.0.113.7"),  # left is the client's
    ("127.0.0.1", "203.0.113.7, 10.1.2.3", PROXIES, "203.0.113.7"),  # through two proxies
    ("127.0.0.1", "10.1.2.3", PROXIES, "127.0.0.1"),  # only proxies: the peer
    ("127.0.0.1", "", PROXIES, "127.0.0.1"),
    ("127.0.0.1", "not-an-address", PROXIES, "127.0.0.1"),
    ("192.0.2.9", "203.0.113.7", PROXIES, "192.0.2.9"),  # not from a trusted proxy
    ("127.0.0.1", "203.0.113.7", (), "127.0.0.1"),  # nothing trusted: header ignored
    ("127.0.0.1", "2001:db8::1", PROXIES, "2001:db8::1"),
])
def test_client_address(peer, xff, trusted, expected):
    environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": xff}
    assert client_address(environ, trusted) == expected


def test_bad_trusted_proxies_refused_in_one_line(tmp_path):
    from davserver import config
    from davserver.errors import UserError

    p = tmp_path / "c.toml"
    p.write_text('[server]\ntrusted_proxies = ["not a network"]\n')
    with pytest.raises(UserError, match=r"trusted_proxies"):
        config.load(str(p), str(tmp_path / "d"))


def _fail_five(srv, xff: list[str]) -> None:
    for i in range(5):
        r = requests.get(srv.url("bob"), auth=("bob", "wrong"), timeout=10,
                         headers={"X-Forwarded-For": xff[i % len(xff)]})
        assert r.status_code == 401


def test_throttled_per_forwarded_address_from_a_trusted_proxy(server_factory):
    srv = server_factory(config={"server": {"trusted_proxies": ["127.0.0.1"]}})
    _fail_five(srv, ["203.0.113.7"])
    r = requests.get(srv.url("alice"), auth=srv.auth("alice"), timeout=10,
                     headers={"X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 429  # that address is throttled ...
    r = requests.get(srv.url("alice"), auth=srv.auth("alice"), timeout=10,
                     headers={"X-Forwarded-For": "203.0.113.8"})
    assert r.status_code == 200  # ... another client behind the same proxy is not


def test_forwarded_header_ignored_without_trusted_proxies(server_factory):
    srv = server_factory()
    _fail_five(srv, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])  # rotating: no escape
    r = requests.get(srv.url("alice"), auth=srv.auth("alice"), timeout=10,
                     headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 429
