"""A direct GET, HEAD and PUT of whole files: the requests sync clients make most.

WsgiDAV resolves a target several times per request, evaluates the If-* machinery and
consults the lock manager a dozen times for a PUT; for a 4 KiB file that costs more than
encrypting or decrypting it. For the plain cases in the caller's own home this answers
with the same status, headers and bytes straight from the vault:

- GET/HEAD of a file with no Range, no conditional header, no body and Depth 0;
- PUT with a Content-Length, no conditional header, no Content-Range/-Encoding, into an
  existing folder, while no lock exists anywhere in the share (checked again just before
  the commit, so a LOCK taken while the body arrives wins).

Everything else (folders, ranges, conditionals, locks, chunked bodies, errors on GET)
falls through to WsgiDAV, which stays the reference behaviour: a test compares both paths
header by header, and litmus runs against the whole stack.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_CREATED,
    HTTP_LOCKED,
    HTTP_NO_CONTENT,
    DAVError,
)
from wsgidav.mw.base_mw import BaseMiddleware

from davserver.dav.errors import short_body, to_dav_error
from davserver.dav.propfind import rfc1123
from davserver.dav.resources import content_type
from davserver.errors import DavServerError
from davserver.vault.files import storage_path

#: Request headers that need WsgiDAV's evaluation (preconditions).
_CONDITIONAL = ("HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
                "HTTP_IF_UNMODIFIED_SINCE")
_DEFER_GET = _CONDITIONAL + ("HTTP_RANGE", "HTTP_IF_RANGE")
_DEFER_PUT = _CONDITIONAL + ("HTTP_CONTENT_RANGE", "HTTP_CONTENT_ENCODING",
                             "HTTP_TRANSFER_ENCODING")


class FastFiles(BaseMiddleware):
    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        instance = config["davserver.instance"]
        self.providers = config["davserver.providers"]
        self.vault = instance.vault
        self.users = instance.users
        self.locks = config["lock_storage"]
        self.block_size = config["block_size"]
        self.enabled = config.get("davserver.fast_files", True)

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        answer = None
        if not self.enabled:
            pass
        elif method in ("GET", "HEAD"):
            answer = self._get(environ, start_response, method == "HEAD")
        elif method == "PUT":
            answer = self._put(environ, start_response)
        if answer is None:
            return self.next_app(environ, start_response)
        return answer

    def _own_path(self, environ) -> tuple[str, str] | None:
        """(share prefix, storage path) of a path inside the caller's home, else None."""
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
        return environ.get("SCRIPT_NAME", ""), storage_path(owner, rel)

    def _locked(self, prefix: str) -> bool:
        return self.locks.has_lock_under(quote(prefix))

    # --- GET / HEAD --------------------------------------------------------------------

    def _get(self, environ, start_response, head: bool):
        if any(h in environ for h in _DEFER_GET) or environ.get("HTTP_DEPTH", "0") != "0" \
                or (environ.get("CONTENT_LENGTH") or "0") != "0":
            return None
        target = self._own_path(environ)
        if target is None:
            return None
        spath = target[1]
        try:
            node = self.vault.stat(spath)
            if node is None or node.is_dir:
                return None
            if head:
                f = None
            else:
                f = self.vault.open_read(spath)
                # The headers must describe the version being sent. Opened after the stat:
                # if a commit came in between, the sizes or file IDs differ, and the
                # reference path answers instead.
                if not node.describes(f):
                    f.close()
                    return None
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

    # --- PUT ---------------------------------------------------------------------------

    def _put(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH") or ""
        mtime = environ.get("HTTP_X_OC_MTIME")
        if any(h in environ for h in _DEFER_PUT) or not length.isdigit() or (
                mtime is not None and not mtime.isdigit()):
            return None
        target = self._own_path(environ)
        if target is None or self._locked(target[0]):
            return None
        spath = target[1]
        parent = spath.rpartition("/")[0]
        try:
            existing = self.vault.storage.stat(spath)
            folder = self.vault.storage.stat(parent)
        except DavServerError:
            return None
        if (existing is not None and existing.is_dir) or folder is None or not folder.is_dir:
            return None  # 405 / 409 from WsgiDAV
        expected = int(length)
        try:
            up = self.vault.begin_write(spath, quota=self.users.quota(spath.split("/", 1)[0]),
                                        expected_size=expected)
            try:
                self._receive(environ, up, expected)
                if self._locked(target[0]):
                    raise DAVError(HTTP_LOCKED, "a lock was taken while the body arrived; "
                                   "nothing was stored")
                rec = up.commit(mtime=float(mtime) if mtime is not None else None)
            except BaseException:
                up.abort()
                raise
            etag = rec.file_id.hex() if rec.file_id else getattr(self.vault.stat(spath),
                                                                  "etag", None)
        except DavServerError as e:
            raise to_dav_error(e) from None
        headers = [("ETag", f'"{etag}"')] if etag is not None else None
        return util.send_status_response(
            environ, start_response, HTTP_NO_CONTENT if existing else HTTP_CREATED,
            add_headers=headers)

    def _receive(self, environ, up, expected: int) -> None:
        read, bs, left = environ["wsgi.input"].read, self.block_size, expected
        while left:
            block = read(min(bs, left))
            if not block:
                raise short_body(expected - left, expected)
            up.write(block)
            left -= len(block)
        environ["wsgidav.all_input_read"] = 1


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
