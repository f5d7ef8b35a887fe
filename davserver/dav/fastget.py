"""A direct GET/HEAD for whole files, the request sync clients make most.

WsgiDAV's GET resolves the target twice, evaluates the If-* machinery and goes through the
request server's generic checks; for a 4 KiB file that costs more than decrypting it.
For a plain GET or HEAD of a file in the caller's own home (no Range, no conditional
header, no body, no Depth other than 0) this sends the same status, headers and bytes
straight from the vault. Everything else (folders, ranges, conditionals, errors) falls
through to WsgiDAV, which stays the reference behaviour: a test compares both paths
header by header, and litmus runs against the whole stack.
"""

from __future__ import annotations

import time

from wsgidav.mw.base_mw import BaseMiddleware

from davserver.dav.propfind import rfc1123
from davserver.dav.resources import content_type
from davserver.errors import DavServerError
from davserver.vault.files import storage_path

#: Request headers that need WsgiDAV's evaluation (ranges, preconditions).
_DEFER = ("HTTP_RANGE", "HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH",
          "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE", "HTTP_IF_RANGE")


class FastGet(BaseMiddleware):
    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        self.providers = config["davserver.providers"]
        self.vault = config["davserver.instance"].vault
        self.block_size = config["block_size"]
        self.enabled = config.get("davserver.fast_get", True)

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD") or not self.enabled:
            return self.next_app(environ, start_response)
        answer = self._serve(environ, start_response, method == "HEAD")
        if answer is None:
            return self.next_app(environ, start_response)
        return answer

    def _serve(self, environ, start_response, head: bool):
        if any(h in environ for h in _DEFER) or environ.get("HTTP_DEPTH", "0") != "0" \
                or (environ.get("CONTENT_LENGTH") or "0") != "0":
            return None
        provider = environ.get("wsgidav.provider")
        if provider not in self.providers:
            return None
        user = environ.get("wsgidav.auth.user_name")
        try:
            owner, rel = provider._split(environ.get("PATH_INFO") or "/", environ)
        except Exception:
            return None  # invalid paths get WsgiDAV's answer
        if not user or owner != user or not rel:
            return None
        spath = storage_path(owner, rel)
        try:
            node = self.vault.stat(spath)
            if node is None or node.is_dir:
                return None
            f = None if head else self.vault.open_read(spath)
        except DavServerError:
            return None  # refusals are logged and answered by the reference path
        start_response("200 OK", [
            ("Content-Length", str(node.size)),
            ("Last-Modified", rfc1123(time.gmtime(node.mtime))),
            ("Content-Type", content_type(node.name)),
            ("Date", rfc1123(time.gmtime())),
            ("ETag", f'"{node.etag}"'),
            ("Accept-Ranges", "bytes"),
        ])
        if f is None:
            return [b""]
        return _Body(f, self.block_size)


class _Body:
    """The response iterable: blocks of verified plaintext, and the file closed after."""

    def __init__(self, f, block_size: int) -> None:
        self._f = f
        self._bs = block_size

    def __iter__(self):
        read, bs = self._f.read, self._bs
        while True:
            block = read(bs)
            if not block:
                return
            yield block

    def close(self) -> None:
        self._f.close()
