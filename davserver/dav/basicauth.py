"""HTTP Basic authentication: one login per request, shared by the direct file path and
WsgiDAV's stack.

Digest is not offered: it would need the plaintext password (or an MD5 of it) on the
server, and in user-key mode only the password itself can unlock a user's key.

The direct path (dav.fastfiles) logs in before WsgiDAV's layers run. When it passes a
request on, it leaves the outcome in the environ, and :class:`BasicAuth` uses it instead
of logging in again: a failure is counted once and a directory is asked once.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from wsgidav.mw.base_mw import BaseMiddleware

from davserver.auth.forwarded import client_address
from davserver.auth.login import DirectoryDown, LoginFailed, Principal, Throttled
from davserver.dav.errors import plain_text
from davserver.instance import Instance
from davserver.vault import context
from davserver.vault.userkeys import KeyLocked

REALM = "davserver"
#: environ key of a login already made for this request (set only by this module's callers).
OUTCOME_KEY = "davserver.login"


class Refusal(NamedTuple):
    status: str
    text: str
    headers: list

    def respond(self, start_response):
        return plain_text(start_response, self.status, self.text, self.headers)


def _challenge(text: str) -> Refusal:
    return Refusal("401 Unauthorized", text,
                   [("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')])


def authenticate(instance: Instance, environ: dict) -> Principal | Refusal:
    header = environ.get("HTTP_AUTHORIZATION", "")
    if not header.lower().startswith("basic "):
        return _challenge("authentication required")
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        user, _, password = raw.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return Refusal("400 Bad Request", "malformed Authorization header", [])
    try:
        return instance.login.login(
            user, password, client_address(environ, instance.config.trusted_proxies))
    except LoginFailed as e:
        return _challenge(str(e))
    except Throttled as e:
        return Refusal("429 Too Many Requests", str(e), [("Retry-After", str(e.seconds))])
    except KeyLocked as e:
        return Refusal("403 Forbidden", str(e), [])
    except DirectoryDown as e:
        return Refusal("503 Service Unavailable", str(e), [("Retry-After", "30")])


def admit(environ: dict, principal: Principal) -> None:
    """The request runs as ``principal`` from here on."""
    context.set_current(principal.identities)
    environ["wsgidav.auth.realm"] = REALM
    environ["wsgidav.auth.user_name"] = principal.user
    environ["wsgidav.auth.roles"] = ()
    environ["wsgidav.auth.permissions"] = ()


class BasicAuth(BaseMiddleware):
    """WsgiDAV's authentication layer, in place of its HTTPAuthenticator."""

    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        self.instance: Instance = config["davserver.instance"]

    def __call__(self, environ, start_response):
        outcome = environ.pop(OUTCOME_KEY, None) or authenticate(self.instance, environ)
        if isinstance(outcome, Refusal):
            return outcome.respond(start_response)
        admit(environ, outcome)
        return self.next_app(environ, start_response)
