"""Nextcloud's login flow v2: how a desktop or mobile client logs in from its wizard
without ever storing the user's own password.

1. The client POSTs ``/index.php/login/v2`` and gets a login URL (for the browser) and a
   poll token (kept to itself).
2. The user opens the login URL and types name and password here; the login is the usual
   one (throttled; in user-key mode it unlocks the key), and it creates an app password
   (davserver.auth.app_passwords), sealed under the client's poll token until collected.
3. The client POSTs its poll token to ``/index.php/login/v2/poll`` until it gets server,
   login name and app password (once; then the flow is gone). Flows expire after
   :data:`FLOW_SECONDS`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from html import escape
from urllib.parse import parse_qs

from davserver.auth.app_passwords import add_app_password
from davserver.crypto import primitives
from davserver.dav.errors import plain_text
from davserver.errors import known
from davserver.instance import Instance

FLOW_SECONDS = 20 * 60
PREFIXES = ("/index.php/login/v2", "/login/v2")
_MAX_FORM = 64 * 1024


def _h(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _base(environ) -> str:
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"


_SUITE = "x25519"
_INFO = b"davserver login flow v2 result"


def _poll_private(poll_token: str) -> bytes:
    """The private half of the key pair the result is sealed to: only the holder of the
    poll token can derive it; the server keeps the token's hash and the public half."""
    return primitives.hkdf_sha256(poll_token.encode(), salt=b"", info=_INFO)


def _form(environ) -> dict[str, str] | None:
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit() or int(length) > _MAX_FORM:
        return None
    body = environ["wsgi.input"].read(int(length)).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _json(start_response, status: str, data) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
    return [body]


def _page(start_response, status: str, title: str, inner: str) -> list[bytes]:
    body = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
            f"<body style='font-family:sans-serif;max-width:28em;margin:3em auto'>"
            f"<h1>{escape(title)}</h1>{inner}</body></html>").encode()
    start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                            ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                            ("X-Frame-Options", "DENY"),
                            ("Content-Security-Policy", "default-src 'none'; "
                             "style-src 'unsafe-inline'; form-action 'self'")])
    return [body]


class LoginFlow:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.db = instance.db

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix in PREFIXES:
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix):].strip("/")
                break
        else:
            return None
        method = environ.get("REQUEST_METHOD")
        self.db._conn().execute("DELETE FROM login_flows WHERE created < ?",
                                (time.time() - FLOW_SECONDS,))
        if rest == "" and method == "POST":
            return self._start(environ, start_response)
        if rest == "poll" and method == "POST":
            return self._poll(environ, start_response)
        if rest.startswith("flow/") and method in ("GET", "POST"):
            return self._flow(environ, start_response, rest[5:])
        return plain_text(start_response, "405 Method Not Allowed", "not allowed here")

    def _start(self, environ, start_response):
        poll, flow = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
        client = (environ.get("HTTP_USER_AGENT") or "sync client")[:200]
        public = primitives.public_from_private(_SUITE, _poll_private(poll))
        with self.db.tx() as c:
            c.execute("INSERT INTO login_flows(poll_hash, flow_hash, client, created, public) "
                      "VALUES(?, ?, ?, ?, ?)", (_h(poll), _h(flow), client, time.time(), public))
        base = _base(environ)
        return _json(start_response, "200 OK", {
            "poll": {"token": poll, "endpoint": f"{base}/index.php/login/v2/poll"},
            "login": f"{base}/index.php/login/v2/flow/{flow}"})

    def _poll(self, environ, start_response):
        form = _form(environ) or {}
        token = form.get("token", "")
        rows = self.db.query("SELECT user, sealed FROM login_flows WHERE poll_hash = ?",
                             (_h(token),)) if token else []
        if not rows or rows[0][1] is None:
            return _json(start_response, "404 Not Found", [])
        with self.db.tx() as c:
            gone = c.execute("DELETE FROM login_flows WHERE poll_hash = ?", (_h(token),)).rowcount
        if not gone:  # collected by a concurrent poll
            return _json(start_response, "404 Not Found", [])
        result = json.loads(primitives.hpke_open(_SUITE, _poll_private(token), rows[0][1],
                                                 _INFO))
        return _json(start_response, "200 OK", {"server": _base(environ),
                                                "loginName": result["user"],
                                                "appPassword": result["token"]})

    def _flow(self, environ, start_response, flow: str):
        rows = self.db.query("SELECT poll_hash, client, user, public FROM login_flows "
                             "WHERE flow_hash = ?", (_h(flow),))
        if not rows or rows[0][2] is not None:
            return _page(start_response, "404 Not Found", "Link expired",
                         "<p>This login link is no longer valid. Start again from your "
                         "client.</p>")
        poll_hash, client, _user, public = rows[0]
        if environ["REQUEST_METHOD"] == "GET":
            return self._form_page(start_response, "200 OK", client, "")
        form = _form(environ)
        if form is None:
            return plain_text(start_response, "413 Request Entity Too Large", "form too large")
        user, password = form.get("user", ""), form.get("password", "")
        try:
            principal = self.instance.login.login(user, password,
                                                  environ.get("REMOTE_ADDR", ""))
            identity = principal.identities[0] if principal.identities else None
            app_id, token = add_app_password(self.instance, user, client, identity=identity)
        except Exception as e:
            err = known(e)
            if err is None:
                raise
            status = {401: "401 Unauthorized", 429: "429 Too Many Requests",
                      403: "403 Forbidden", 503: "503 Service Unavailable"}.get(
                err.HTTP_STATUS, "400 Bad Request")
            return self._form_page(start_response, status, client, str(err))
        sealed = primitives.hpke_seal(_SUITE, public, json.dumps(
            {"user": user, "token": token}).encode(), _INFO)
        with self.db.tx() as c:
            done = c.execute("UPDATE login_flows SET user = ?, sealed = ? WHERE poll_hash = ? "
                             "AND user IS NULL", (user, sealed, poll_hash)).rowcount
        if not done:  # the flow expired or was used meanwhile: the password is not needed
            self.instance.app_passwords.revoke(user, app_id)
            return _page(start_response, "409 Conflict", "Link already used",
                         "<p>This login link was used already. Start again from your "
                         "client.</p>")
        return _page(start_response, "200 OK", "Access granted",
                     "<p>Your client is now connected. You can close this window.</p>")

    def _form_page(self, start_response, status: str, client: str, error: str):
        err = f"<p style='color:#b00'>{escape(error)}</p>" if error else ""
        return _page(start_response, status, "Connect a client", (
            f"<p>{escape(client)} asks for access to your files. Log in to grant it; it will "
            "get its own app password, which you can revoke at any time.</p>" + err +
            "<form method='post'><p><label>User name<br><input name='user' "
            "autocomplete='username' required></label></p><p><label>Password<br>"
            "<input name='password' type='password' autocomplete='current-password' "
            "required></label></p><p><button type='submit'>Grant access</button></p></form>"))
