"""Settings pages under /settings/: log in, see encryption status, fix a locked key,
opt in or out of recovery, change a local password.

Server-rendered (Jinja2) with no JavaScript. Sessions live in the DB (any node can serve
any request) under a SHA-256 of a random token held in an HttpOnly, SameSite=Strict
cookie; every POST carries a per-session CSRF token (the login form a double-submit
one). Passwords are only ever read from POST bodies, never from URLs, and nothing here
calls a flow the CLI does not also use (davserver.accounts).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape

from davserver import accounts
from davserver.auth.forwarded import client_address
from davserver.auth.login import DirectoryDown, LoginFailed, Throttled
from davserver.errors import DavServerError, UserError, known
from davserver.instance import Instance
from davserver.vault.userkeys import KeyLocked

log = logging.getLogger("davserver.web")

PREFIX = "/settings"
SESSION_COOKIE = "davserver_session"
LOGIN_COOKIE = "davserver_login"
SESSION_SECONDS = 3600
MAX_FORM_BYTES = 64 * 1024

_env = Environment(loader=PackageLoader("davserver.web", "templates"),
                   autoescape=select_autoescape(["html"]))


def _human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


_env.filters["size"] = _human_size

_SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self' 'unsafe-inline'; "
     "form-action 'self'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SettingsApp:
    def __init__(self, instance: Instance) -> None:
        self.inst = instance

    # --- plumbing ----------------------------------------------------------------------

    def _secure(self, environ) -> bool:
        return environ.get("wsgi.url_scheme") == "https"

    def _cookie(self, environ, name: str, value: str, max_age: int) -> tuple[str, str]:
        attrs = f"{name}={value}; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        if self._secure(environ):
            attrs += "; Secure"
        return ("Set-Cookie", attrs)

    @staticmethod
    def _cookies(environ) -> dict[str, str]:
        c = SimpleCookie()
        try:
            c.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
            return {}
        return {k: m.value for k, m in c.items()}

    @staticmethod
    def _form(environ) -> dict[str, str]:
        try:
            n = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            n = 0
        if n > MAX_FORM_BYTES:
            raise UserError("form too large")
        raw = environ["wsgi.input"].read(n).decode("utf-8", "replace") if n > 0 else ""
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def _render(self, start_response, template: str, status: str = "200 OK",
                headers: list | None = None, **ctx):
        body = _env.get_template(template).render(prefix=PREFIX, **ctx).encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Length", str(len(body)))]
                       + _SECURITY_HEADERS + (headers or []))
        return [body]

    @staticmethod
    def _redirect(start_response, where: str, headers: list | None = None):
        start_response("303 See Other", [("Location", where), ("Content-Length", "0")]
                       + _SECURITY_HEADERS + (headers or []))
        return [b""]

    def _session(self, environ):
        token = self._cookies(environ).get(SESSION_COOKIE)
        if not token:
            return None, None
        found = self.inst.db.get_session(_hash(token))
        return (token, found) if found else (None, None)

    # --- dispatch ----------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")[len(PREFIX):] or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/login":
                return (self._login_post if method == "POST" else self._login_get)(
                    environ, start_response)
            token, sess = self._session(environ)
            if sess is None:
                return self._redirect(start_response, f"{PREFIX}/login")
            user, csrf, key_locked = sess
            if method == "POST":
                form = self._form(environ)
                if not hmac.compare_digest(form.get("csrf", ""), csrf):
                    return self._render(start_response, "error.html", "403 Forbidden",
                                        message="The form expired. Reload the page and try "
                                        "again.")
                handler = {"/logout": self._logout, "/recovery": self._recovery,
                           "/key-password": self._key_password,
                           "/password": self._password}.get(path)
                if handler is None:
                    return self._render(start_response, "error.html", "404 Not Found",
                                        message="No such page.")
                return handler(environ, start_response, token, user, form)
            if path in ("/", "/encryption"):
                return self._status(start_response, user, csrf, key_locked)
            return self._render(start_response, "error.html", "404 Not Found",
                                message="No such page.")
        except Exception as e:
            err = known(e)
            if err is not None:
                return self._render(start_response, "error.html",
                                    f"{err.HTTP_STATUS} Error", message=str(err))
            log.exception("settings page failed")
            return self._render(start_response, "error.html", "500 Internal Server Error",
                                message="Something went wrong; the server log has details.")

    # --- pages -------------------------------------------------------------------------

    def _login_get(self, environ, start_response, error: str | None = None,
                   status: str = "200 OK"):
        nonce = secrets.token_urlsafe(24)
        return self._render(start_response, "login.html", status, error=error, csrf=nonce,
                            headers=[self._cookie(environ, LOGIN_COOKIE, nonce, 900)])

    def _login_post(self, environ, start_response):
        form = self._form(environ)
        expected = self._cookies(environ).get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
            return self._login_get(environ, start_response, "The form expired; try again.",
                                   "403 Forbidden")
        user, password = form.get("user", ""), form.get("password", "")
        try:
            principal = self.inst.login.login(
                user, password, client_address(environ, self.inst.config.trusted_proxies),
                allow_locked_key=True)
        except (LoginFailed, Throttled, DirectoryDown) as e:
            return self._login_get(environ, start_response, str(e), f"{e.HTTP_STATUS} Error")
        token = secrets.token_urlsafe(32)
        self.inst.db.add_session(_hash(token), principal.user, secrets.token_urlsafe(24),
                                 principal.key_locked, time.time() + SESSION_SECONDS)
        return self._redirect(start_response, f"{PREFIX}/encryption", [
            self._cookie(environ, SESSION_COOKIE, token, SESSION_SECONDS),
            self._cookie(environ, LOGIN_COOKIE, "", 0)])

    def _status(self, start_response, user: str, csrf: str, key_locked: bool,
                message: str | None = None, error: str | None = None, status: str = "200 OK"):
        inst = self.inst
        record = inst.users.get(user)
        mode = inst.mode()
        return self._render(
            start_response, "status.html", status, user=user, csrf=csrf, mode=mode,
            enabled=inst.encryption_enabled(), key_locked=key_locked,
            has_keys=inst.userkeys.has_keys(user),
            recovery_available=inst.userkeys.recovery_public() is not None,
            recovery_enabled=inst.recovery_opted_in(user),
            local=record is not None and record.backend == "local",
            used=inst.vault.usage(user), quota=record.quota_bytes if record else None,
            message=message, error=error)

    def _logout(self, environ, start_response, token, user, form):
        self.inst.db.delete_session(_hash(token))
        self.inst.userkeys.forget(user)  # logging out also drops the unlocked key
        return self._redirect(start_response, f"{PREFIX}/login",
                              [self._cookie(environ, SESSION_COOKIE, "", 0)])

    def _after(self, start_response, token, user, fn, done: str):
        """Run one flow and re-render the status page with its outcome."""
        _u, csrf, key_locked = self.inst.db.get_session(_hash(token))
        try:
            fn()
        except (DavServerError, KeyLocked) as e:
            return self._status(start_response, user, csrf, key_locked, error=str(e),
                                status="400 Bad Request")
        _u, csrf, key_locked = self.inst.db.get_session(_hash(token))
        return self._status(start_response, user, csrf, key_locked, message=done)

    def _recovery(self, environ, start_response, token, user, form):
        enable = form.get("enable") == "1"

        def run():
            accounts.set_recovery(self.inst, user, enable,
                                  password=form.get("password") if enable else None)

        return self._after(start_response, token, user, run,
                           "Recovery enabled: an administrator can restore your access."
                           if enable else "Recovery disabled.")

    def _key_password(self, environ, start_response, token, user, form):
        old, new = form.get("old_password", ""), form.get("new_password", "")

        def run():
            if not self.inst.login.check_password(user, new):
                raise UserError("the new password is not your current login password")
            accounts.update_key_password(self.inst, user, old, new)
            self.inst.db.update_session(_hash(token), key_locked=False)

        return self._after(start_response, token, user, run,
                           "Your key now opens with your current password; your files are "
                           "readable again.")

    def _password(self, environ, start_response, token, user, form):
        old, new = form.get("old_password", ""), form.get("new_password", "")

        def run():
            if new != form.get("confirm_password", ""):
                raise UserError("the two new passwords differ")
            accounts.change_local_password(self.inst, user, old, new)

        return self._after(start_response, token, user, run, "Password changed.")
