"""The /settings pages over HTTP (requests, no browser), local users, in master-key and in
user-key mode: cookies, CSRF, security headers, password changes, logout, throttling."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import requests

from tests.browser import WEAK_KDF, csrf_of, element_text, web_login, web_post
from tests.live import LiveServer

SESSION_COOKIE = "davserver_session"
LOGIN_COOKIE = "davserver_login"


@pytest.fixture(scope="module", params=["master", "user"])
def srv(request, tmp_path_factory) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path_factory.mktemp(f"web-{request.param}"), users={},
                   config={"encryption": WEAK_KDF,
                           # all requests come from 127.0.0.1; only the throttling test
                           # (its own server) wants the real limit
                           "auth": {"throttle_max_failures": 1000}})
    try:
        s.create()
        if request.param == "user":
            s.run_cli("encryption:disable-master-key", "--yes")
        s.mode = request.param
        yield s.start()
    finally:
        s.stop()


def new_user(srv: LiveServer, prefix: str = "u") -> tuple[str, str]:
    name = f"{prefix}{secrets.token_hex(4)}"
    password = f"pw-{secrets.token_hex(8)}"
    srv.run_cli("user:add", name, "--password-from-env", env={"DAVSERVER_PASS": password})
    srv.users[name] = password
    return name, password


def set_cookies(r: requests.Response) -> dict[str, str]:
    """Set-Cookie headers of one response, by cookie name (the raw header text)."""
    out = {}
    for line in r.raw.headers.getlist("Set-Cookie"):
        out[line.split("=", 1)[0].strip()] = line
    return out


def cookie_attrs(line: str) -> dict[str, str]:
    parts = [p.strip() for p in line.split(";")]
    attrs = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        attrs[k.lower()] = v
    return attrs


def dav_status(srv: LiveServer, user: str, password: str, rel: str = "") -> int:
    return requests.request("PROPFIND", srv.url(user, rel), auth=(user, password),
                            headers={"Depth": "0"}, timeout=30).status_code


def assert_security_headers(r: requests.Response) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
    assert "form-action 'self'" in csp and "script-src" not in csp, csp
    assert r.headers.get("X-Frame-Options") == "DENY"
    assert r.headers.get("Cache-Control") == "no-store"
    assert r.headers.get("X-Content-Type-Options") == "nosniff"


# --- cookies and login ----------------------------------------------------------------


def test_login_cookies_are_httponly_strict_and_scoped(srv):
    name, pw = new_user(srv)
    s = requests.Session()
    page = s.get(f"{srv.base}/settings/login", timeout=30)
    assert page.status_code == 200
    login_cookie = set_cookies(page)[LOGIN_COOKIE]
    attrs = cookie_attrs(login_cookie)
    assert "httponly" in attrs and attrs["samesite"] == "Strict" and attrs["path"] == "/settings"

    r = s.post(f"{srv.base}/settings/login", allow_redirects=False, timeout=30,
               data={"csrf": csrf_of(page.text), "user": name, "password": pw})
    assert r.status_code == 303 and r.headers["Location"] == "/settings/encryption"
    cookies = set_cookies(r)
    attrs = cookie_attrs(cookies[SESSION_COOKIE])
    assert "httponly" in attrs, cookies[SESSION_COOKIE]
    assert attrs["samesite"] == "Strict" and attrs["path"] == "/settings"
    assert 0 < int(attrs["max-age"]) <= 24 * 3600
    token = cookies[SESSION_COOKIE].split(";")[0].split("=", 1)[1]
    assert len(token) >= 32
    assert cookie_attrs(cookies[LOGIN_COOKIE])["max-age"] == "0"  # one-time form token

    status = s.get(f"{srv.base}/settings/encryption", timeout=30)
    assert status.status_code == 200
    assert f"Encryption settings for {name}" in status.text
    assert element_text(status.text, "enc-state") == "enabled"
    if srv.mode == "master":
        assert "master key" in element_text(status.text, "mode")
        assert element_text(status.text, "key-state") is None
    else:
        assert "your own key" in element_text(status.text, "mode")
        assert element_text(status.text, "key-state") == "unlocked"
    assert 'id="password-section"' in status.text


def test_wrong_password_gives_error_page_and_no_session(srv):
    name, pw = new_user(srv)
    s, r = web_login(srv.base, name, pw + "x")
    assert r.status_code == 401
    assert "wrong user name or password" in r.text
    assert 'id="password"' in r.text  # the form again, with a fresh CSRF token
    assert SESSION_COOKIE not in s.cookies
    assert SESSION_COOKIE not in str(r.raw.headers.getlist("Set-Cookie"))
    r = s.get(f"{srv.base}/settings/encryption", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/settings/login"
    # Unknown users look the same.
    _s, r = web_login(srv.base, "nobody-" + secrets.token_hex(3), pw)
    assert r.status_code == 401 and "wrong user name or password" in r.text


def test_credentials_in_the_url_are_ignored(srv):
    name, pw = new_user(srv)
    s = requests.Session()
    r = s.get(f"{srv.base}/settings/login", params={"user": name, "password": pw},
              allow_redirects=False, timeout=30)
    assert r.status_code == 200 and SESSION_COOKIE not in set_cookies(r)
    r = s.post(f"{srv.base}/settings/login", allow_redirects=False, timeout=30,
               params={"user": name, "password": pw, "csrf": csrf_of(r.text)})
    assert r.status_code != 303 and SESSION_COOKIE not in set_cookies(r)


def test_session_token_is_never_in_a_url(srv):
    name, pw = new_user(srv)
    s, r = web_login(srv.base, name, pw)
    assert r.status_code == 200
    token = s.cookies[SESSION_COOKIE]
    seen = [r, *r.history]
    seen.append(web_post(s, srv.base, "password", r.text, old_password="x",
                         new_password="y" * 8, confirm_password="z" * 8))
    seen.append(s.get(f"{srv.base}/settings/", timeout=30))
    for resp in seen:
        assert token not in resp.url
        assert token not in resp.headers.get("Location", "")
        assert token not in resp.text  # not in any link, form action or hidden field
        assert_security_headers(resp)
    for line in srv.log_text().splitlines():
        assert token not in line


def test_security_headers_on_every_page(srv):
    name, pw = new_user(srv)
    s = requests.Session()
    responses = [s.get(f"{srv.base}/settings/login", timeout=30),
                 s.get(f"{srv.base}/settings/encryption", allow_redirects=False, timeout=30)]
    s, page = web_login(srv.base, name, pw, session=s)
    responses += [page, *page.history, s.get(f"{srv.base}/settings/nope", timeout=30),
                  s.post(f"{srv.base}/settings/password", data={"csrf": "bad"}, timeout=30)]
    assert [r.status_code for r in responses] == [200, 303, 200, 303, 404, 403]
    for r in responses:
        assert_security_headers(r)
    assert "<script" not in page.text.lower()


# --- CSRF -----------------------------------------------------------------------------


def test_posts_without_the_right_csrf_token_change_nothing(srv):
    name, pw = new_user(srv)
    other, other_pw = new_user(srv)
    s, page = web_login(srv.base, name, pw)
    s2, page2 = web_login(srv.base, other, other_pw)
    new = f"new-{secrets.token_hex(8)}"
    change = {"old_password": pw, "new_password": new, "confirm_password": new}
    for csrf in (None, "", "forged", csrf_of(page2.text)):  # the last: another session's
        data = dict(change) if csrf is None else {**change, "csrf": csrf}
        r = s.post(f"{srv.base}/settings/password", data=data, timeout=30)
        assert r.status_code == 403, (csrf, r.status_code)
        assert "form expired" in r.text
        assert dav_status(srv, name, pw) == 207 and dav_status(srv, name, new) == 401
    r = s.post(f"{srv.base}/settings/logout", data={}, timeout=30)
    assert r.status_code == 403
    assert s.get(f"{srv.base}/settings/encryption", timeout=30).status_code == 200  # still in

    # The login form: a POST without the login cookie (as from another site) is refused.
    fresh = requests.Session()
    r = fresh.post(f"{srv.base}/settings/login", allow_redirects=False, timeout=30,
                   data={"csrf": csrf_of(page.text), "user": name, "password": pw})
    assert r.status_code == 403 and SESSION_COOKIE not in set_cookies(r)
    login_page = fresh.get(f"{srv.base}/settings/login", timeout=30)
    r = fresh.post(f"{srv.base}/settings/login", allow_redirects=False, timeout=30,
                   data={"csrf": "forged", "user": name, "password": pw})
    assert r.status_code == 403 and SESSION_COOKIE not in set_cookies(r)
    assert csrf_of(login_page.text)  # untouched by the failed attempt's page


# --- password change ------------------------------------------------------------------


def test_change_password(srv):
    name, pw = new_user(srv)
    files = {"a.txt": b"first " + secrets.token_bytes(20), "b.bin": secrets.token_bytes(300_000)}
    for rel, data in files.items():
        r = requests.put(srv.url(name, rel), data=data, auth=(name, pw), timeout=30)
        assert r.status_code == 201
    s, page = web_login(srv.base, name, pw)
    new = f"new-{secrets.token_hex(8)}"

    r = web_post(s, srv.base, "password", page.text, old_password="wrong-password",
                 new_password=new, confirm_password=new)
    assert r.status_code == 400 and "current password is wrong" in element_text(r.text, "error")
    r = web_post(s, srv.base, "password", r.text, old_password=pw, new_password=new,
                 confirm_password=new + "x")
    assert r.status_code == 400 and "differ" in element_text(r.text, "error")
    assert dav_status(srv, name, pw) == 207 and dav_status(srv, name, new) == 401

    r = web_post(s, srv.base, "password", r.text, old_password=pw, new_password=new,
                 confirm_password=new)
    assert r.status_code == 200 and element_text(r.text, "message") == "Password changed."
    assert dav_status(srv, name, pw) == 401
    assert dav_status(srv, name, new) == 207
    for rel, data in files.items():  # in user-key mode: the key moved to the new password
        g = requests.get(srv.url(name, rel), auth=(name, new), timeout=30)
        assert g.status_code == 200 and g.content == data, (rel, g.status_code)
    srv.restart()  # nothing of this lived only in memory
    assert dav_status(srv, name, pw) == 401
    for rel, data in files.items():
        assert requests.get(srv.url(name, rel), auth=(name, new), timeout=30).content == data
    # The session survives the restart (sessions are in the DB) and the old password is
    # useless for the page too.
    assert s.get(f"{srv.base}/settings/encryption", timeout=30).status_code == 200
    _s, r = web_login(srv.base, name, pw)
    assert r.status_code == 401


def test_too_short_new_password_changes_nothing(srv):
    """A refused new password must leave everything as it was, the user's key included."""
    name, pw = new_user(srv)
    r = requests.put(srv.url(name, "a.txt"), data=b"mine", auth=(name, pw), timeout=30)
    assert r.status_code == 201
    s, page = web_login(srv.base, name, pw)
    r = web_post(s, srv.base, "password", page.text, old_password=pw, new_password="short",
                 confirm_password="short")
    assert r.status_code == 400 and "at least 8" in element_text(r.text, "error")
    assert dav_status(srv, name, "short") == 401
    g = requests.get(srv.url(name, "a.txt"), auth=(name, pw), timeout=30)
    assert g.status_code == 200 and g.content == b"mine", (
        f"{g.status_code}: the refused password change left the key sealed under the "
        "refused password")


def test_password_reset_by_admin_cli_takes_effect_at_once(srv):
    """An administrator resets a password (say, a compromised account): the running
    server must stop accepting the old one right away, not after its auth cache expires."""
    name, pw = new_user(srv)
    assert dav_status(srv, name, pw) == 207  # the old password is now "warm" in the server
    new = f"reset-{secrets.token_hex(8)}"
    env = {"DAVSERVER_PASS": new, "DAVSERVER_OLD_PASS": pw}
    srv.run_cli("user:resetpassword", name, "--password-from-env", "--old-password-from-env",
                env=env)
    # The old password first: asking with the new one would make the server drop the
    # old one from its cache, which an attacker holding the old password would not do.
    assert dav_status(srv, name, pw) == 401, "old password still accepted after the reset"
    assert dav_status(srv, name, new) == 207


# --- logout and sessions --------------------------------------------------------------


def test_logout_invalidates_the_session(srv):
    name, pw = new_user(srv)
    s, page = web_login(srv.base, name, pw)
    token = s.cookies[SESSION_COOKIE]
    r = s.post(f"{srv.base}/settings/logout", allow_redirects=False, timeout=30,
               data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["Location"] == "/settings/login"
    assert cookie_attrs(set_cookies(r)[SESSION_COOKIE])["max-age"] == "0"

    # A client that kept the old cookie (or someone who stole it) gets the login page.
    replay = requests.Session()
    replay.cookies.set(SESSION_COOKIE, token, path="/settings")
    r = replay.get(f"{srv.base}/settings/encryption", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/settings/login"
    new = f"new-{secrets.token_hex(8)}"
    r = replay.post(f"{srv.base}/settings/password", allow_redirects=False, timeout=30,
                    data={"csrf": csrf_of(page.text), "old_password": pw,
                          "new_password": new, "confirm_password": new})
    assert r.status_code == 303 and r.headers["Location"] == "/settings/login"
    assert dav_status(srv, name, pw) == 207  # nothing changed

    forged = requests.Session()
    forged.cookies.set(SESSION_COOKIE, secrets.token_urlsafe(32), path="/settings")
    r = forged.get(f"{srv.base}/settings/encryption", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/settings/login"


# --- throttling -----------------------------------------------------------------------


def test_web_logins_are_throttled(server_factory):
    srv = server_factory(users={"carol": None}, config={"encryption": WEAK_KDF})
    pw = srv.users["carol"]
    statuses = []
    for _ in range(6):
        _s, r = web_login(srv.base, "carol", "wrong-password")
        statuses.append(r.status_code)
        assert "Traceback" not in r.text
    assert statuses == [401] * 5 + [429], statuses
    assert "too many failed logins" in r.text and 'id="password"' in r.text
    # Now even the right password is not checked, on the page or over WebDAV.
    s, r = web_login(srv.base, "carol", pw)
    assert r.status_code == 429 and SESSION_COOKIE not in s.cookies
    d = requests.request("PROPFIND", srv.url("carol"), auth=("carol", pw),
                         headers={"Depth": "0"}, timeout=30)
    assert d.status_code == 429 and int(d.headers["Retry-After"]) > 0
