"""The one table from our errors to HTTP: DavServerError.HTTP_STATUS, wrapped as DAVError.

Messages are the errors' user-facing text; internals (paths on disk, tracebacks, which
check failed) stay in the log.
"""

from __future__ import annotations

import functools
import logging
from typing import NoReturn

from wsgidav import dav_error
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_INSUFFICIENT_STORAGE, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from davserver.errors import DavServerError, KeyNotFound, VersionMismatch, known

log = logging.getLogger("davserver.dav")

# WsgiDAV has no reason phrase for 507 and would send "507 Status".
dav_error.ERROR_DESCRIPTIONS.setdefault(HTTP_INSUFFICIENT_STORAGE, "507 Insufficient Storage")


def plain_text(start_response, status: str, text: str, headers: list | None = None):
    """An answer of our own (not WsgiDAV's): one line of text for people and scripts."""
    body = (text.rstrip("\n") + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [body]


def _file_id(detail: str) -> str | None:
    """The file ID a KeyNotFound names, if it names one (never a path or a user)."""
    head = detail.split(" ", 1)[0]
    return head if len(head) >= 16 and all(c in "0123456789abcdef" for c in head) else None


def to_dav_error(e: DavServerError) -> DAVError:
    if isinstance(e, VersionMismatch):
        msg = ("the stored file does not match the server's index and was not served; "
               "an administrator can inspect it with 'davserver encryption:fix-encrypted-version'")
    elif type(e) is KeyNotFound and _file_id(e.detail):
        # A file placed by another tool (or another instance) on a store: say which one.
        msg = (f"no key for file ID {_file_id(e.detail)} in this server's key store; "
               "the file cannot be decrypted here")
    elif e.HTTP_STATUS >= 500 and e.HTTP_STATUS != 507 and e.HTTP_STATUS != 503:
        msg = "the stored file could not be read safely; the server log has details"
    else:
        msg = str(e)
    retry = getattr(e, "RETRY_AFTER", None)
    return DAVError(e.HTTP_STATUS, context_info=msg,
                    add_headers=[("Retry-After", str(retry))] if retry else None)


def short_body(received: int, expected: int) -> DAVError:
    """The client went away before sending the whole body: never store a prefix."""
    return DAVError(HTTP_BAD_REQUEST,
                    f"body ended after {received} of {expected} bytes; nothing was stored")


def raise_as_dav_error(e: Exception, where: str) -> NoReturn:
    """Raise the DAVError for one of our errors (or a full disk), logged if it is the
    server's fault; anything else is a bug and is raised as it is."""
    err = known(e)
    if err is None and isinstance(e, DAVError) and e.value == 500:
        # WsgiDAV wraps what fails while it reads a PUT body (our ClientStopped, say)
        # as a 500 of its own: answer the wrapped error's status instead.
        err = known(e.src_exception) if e.src_exception is not None else None
    if err is None:
        raise e
    if err.HTTP_STATUS >= 500:
        log.error("%s: %s", where, e)
    raise to_dav_error(err) from None


def dav_errors(fn):
    """Translate our errors raised inside a WsgiDAV callback into DAVErrors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise_as_dav_error(e, fn.__qualname__)

    return wrapper


class KnownErrors(BaseMiddleware):
    """Just inside WsgiDAV's ErrorPrinter: one of our errors, or a full disk, that escapes
    a WsgiDAV handler outside our provider (the lock storage, for one) is answered with
    its own status, such as 507, instead of a 500 naming the exception."""

    def __call__(self, environ, start_response):
        app_iter = None
        try:
            app_iter = self.next_app(environ, start_response)
            yield from app_iter
        except Exception as e:
            raise_as_dav_error(e, f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}")
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
