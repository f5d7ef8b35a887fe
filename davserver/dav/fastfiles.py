"""A direct GET, HEAD and PUT of whole files: the requests sync clients make most.

WsgiDAV resolves a target several times per request, evaluates the If-* machinery and
consults the lock manager a dozen times for a PUT; for a 4 KiB file that costs more than
encrypting or decrypting it. For the plain cases in the caller's own home this answers
with the same status, headers and bytes straight from the vault:

- GET/HEAD of a file with no conditional header, no body and Depth 0, whole or one byte
  range of it (the forms dav.ranges takes; If-Range included);
- PUT with a Content-Length, no conditional header, no Content-Range/-Encoding, into an
  existing folder, while no lock exists anywhere in the share (a lock on the target or a
  folder above it is checked again just before the commit, so a LOCK taken on it while the
  body arrives wins; one on another file of the user does not refuse the upload).

Everything else (folders, other ranges, conditionals, locks, chunked bodies, errors on GET)
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
from wsgidav.error_printer import ErrorPrinter
from wsgidav.wsgidav_app import WsgiDAVApp

from davserver.dav import ranges
from davserver.dav.basicauth import OUTCOME_KEY, Refusal, admit, authenticate
from davserver.dav.clientinput import ClientInput
from davserver.dav.errors import raise_as_dav_error, short_body
from davserver.dav.overlap import response_body
from davserver.dav.propfind import rfc1123
from davserver.dav.resources import content_type
from davserver.dav.share_guard import DAV_ROOT, WEBDAV_ROOT
from davserver.errors import DavServerError
from davserver.instance import Instance
from davserver.vault.files import storage_path

#: environ key: (storage path, ETag, first version?) of what a direct PUT just committed,
#: so the Nextcloud layer (dav.nc_put) names the version without looking it up again.
COMMITTED_KEY = "davserver.put.committed"

#: Request headers that need WsgiDAV's evaluation (preconditions).
_CONDITIONAL = ("HTTP_IF", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
                "HTTP_IF_UNMODIFIED_SINCE")
_DEFER_GET = _CONDITIONAL
_DEFER_PUT = _CONDITIONAL + ("HTTP_CONTENT_RANGE", "HTTP_CONTENT_ENCODING",
                             "HTTP_TRANSFER_ENCODING")


class FastFiles:
    """In front of WsgiDAV: answers what it can and passes the rest on unchanged.

    It logs in once (dav.basicauth) and hands the outcome to WsgiDAV's stack with what it
    passes on. The path is decoded and normalised with WsgiDAV's own helpers, and errors
    are rendered by WsgiDAV's ErrorPrinter, so answers match the reference byte for byte.
    """

    def __init__(self, dav: WsgiDAVApp, instance: Instance, providers: tuple,
                 locks, block_size: int) -> None:
        self.dav = dav
        self.instance = instance
        self.providers = providers
        self.vault = instance.vault
        self.users = instance.users
        self.locks = locks
        self.block_size = block_size

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD"):
            handler = self._get
            if any(h in environ for h in _DEFER_GET) or environ.get("HTTP_DEPTH", "0") != "0" \
                    or (environ.get("CONTENT_LENGTH") or "0") != "0":
                handler = None
        elif method == "PUT":
            handler = self._put
            length, mtime = environ.get("CONTENT_LENGTH") or "", environ.get("HTTP_X_OC_MTIME")
            if any(h in environ for h in _DEFER_PUT) or not length.isdigit() or (
                    mtime is not None and not mtime.isdigit()):
                handler = None
        else:
            handler = None
        target = handler and self._target(environ)
        if not target:
            return self.dav(environ, start_response)
        outcome = authenticate(self.instance, environ)
        if not isinstance(outcome, Refusal):
            admit(environ, outcome)
            owner, rel = target[1]._split(target[2], environ)
            spath = storage_path(owner, rel)
            if (owner == outcome.user and rel and not self.instance.shares.touches(owner, rel)
                    and self.instance.dav_vault.resolve(owner, rel) == spath):
                try:  # (shares and external storage mounts: WsgiDAV's path)
                    answer = handler(environ, start_response, target[0], spath, target[2])
                except DAVError as e:
                    return self._error(environ, start_response, e)
                if answer is not None:
                    return answer
        environ[OUTCOME_KEY] = outcome
        return self.dav(environ, start_response)

    def _target(self, environ) -> tuple | None:
        """(share, provider, path inside the share) as WsgiDAV will resolve them, if the
        share is a home share; None for anything else (WsgiDAV answers, errors included)."""
        try:
            path = util.normalize_path(util.re_encode_wsgi(environ.get("PATH_INFO") or "/"))
        except (UnicodeError, DAVError):
            return None
        share, provider = self.dav.resolve_provider(path)
        if provider not in self.providers:
            return None
        try:
            provider._split(path[len(share):], environ)
        except DAVError:
            return None
        return share, provider, path[len(share):]

    def _error(self, environ, start_response, e: DAVError):
        """What WsgiDAV answers for ``e``: its ErrorPrinter's page, and its rule that a
        body not read to the end closes the connection."""

        def raise_it(_environ, _start_response):
            raise e

        def finish(status, headers, exc_info=None):
            util.read_and_discard_input(environ)
            if util.get_content_length(environ) != 0 \
                    and not environ.get("wsgidav.all_input_read"):
                headers.append(("Connection", "close"))
            return start_response(status, headers, exc_info)

        return ErrorPrinter(self.dav, raise_it, self.dav.config)(environ, finish)

    def _locked(self, share: str, spath: str) -> bool:
        """Could a lock concern this write? Then WsgiDAV's path and the share guard
        (dav.share_guard) decide. Locks of other users on files of their own must not
        send every upload of the instance to the slow path."""
        if self.locks.has_lock_under(quote(share)):
            return True
        if not self.locks.has_lock_under(DAV_ROOT):
            return False  # no lock anywhere: the common case
        # A lock elsewhere names this file only through another URL of it: the legacy
        # form, or a recipient's URL when the file lies inside something shared.
        return self.locks.has_lock_under(WEBDAV_ROOT) or self.instance.shares.shared_out(spath)

    # --- GET / HEAD --------------------------------------------------------------------

    def _get(self, environ, start_response, share: str, spath: str, path: str):
        head = environ["REQUEST_METHOD"] == "HEAD"
        try:
            node = self.vault.stat(spath)
            if node is None or node.is_dir:
                return None
            part = ranges.plan(environ, node.size, node.etag, node.mtime)
            if part is None:
                return None  # a range form WsgiDAV answers (416, several ranges, ...)
            if head:
                f = None
            else:
                f = self.vault.open_read(spath, as_of=node)
                # The headers must describe the version being sent. Opened after the stat:
                # if a commit came in between, the sizes or file IDs differ, and the
                # reference path answers instead.
                if not node.describes(f):
                    f.close()
                    return None
                if part is not ranges.FULL:
                    try:
                        # As the reference path: the final chunk is authenticated before
                        # any part is served, so a cut file is refused, not half-served.
                        if hasattr(f, "verify_layout"):
                            f.verify_layout()
                        f.seek(part[0])
                    except BaseException:
                        f.close()
                        raise
        except DavServerError:
            return None  # refusals are logged and answered by the reference path
        length = node.size if part is ranges.FULL else part[1] - part[0] + 1
        headers = [
            ("Content-Length", str(length)),
            ("Last-Modified", rfc1123(time.gmtime(node.mtime))),
            ("Content-Type", content_type(node.name)),
            ("Date", rfc1123(time.gmtime())),
            ("ETag", f'"{node.etag}"'),
            ("Accept-Ranges", "bytes"),
        ]
        if part is ranges.FULL:
            start_response("200 OK", headers)
        else:
            headers.append(("Content-Range", f"bytes {part[0]}-{part[1]}/{node.size}"))
            start_response("206 Partial Content", headers)
        if f is None:
            return [b""]
        return response_body(f, self.block_size, length,
                             None if part is ranges.FULL else length)

    # --- PUT ---------------------------------------------------------------------------

    def _put(self, environ, start_response, share: str, spath: str, path: str):
        if self._locked(share, spath):
            return None
        length, mtime = environ["CONTENT_LENGTH"], environ.get("HTTP_X_OC_MTIME")
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
                if self.locks.has_lock_covering(quote(share + path)):
                    raise DAVError(HTTP_LOCKED, "a lock was taken while the body arrived; "
                                   "nothing was stored")
                rec = up.commit(mtime=float(mtime) if mtime is not None else None)
            except BaseException:
                up.abort()
                raise
            etag = rec.file_id.hex() if rec.file_id else getattr(self.vault.stat(spath),
                                                                  "etag", None)
        except Exception as e:
            raise_as_dav_error(e, f"PUT {spath}")
        if etag is not None:
            environ[COMMITTED_KEY] = (spath, etag, rec.generation == 1)
        headers = [("ETag", f'"{etag}"')] if etag is not None else None
        return util.send_status_response(
            environ, start_response, HTTP_NO_CONTENT if existing else HTTP_CREATED,
            add_headers=headers)

    def _receive(self, environ, up, expected: int) -> None:
        receive_body(environ, up, expected, direct_block=max(self.block_size, RECEIVE_BLOCK),
                     read_block=self.block_size)


#: Bytes gathered per write to the upload when receiving straight from cheroot's reader.
RECEIVE_BLOCK = 1 << 20


def receive_body(environ, sink, expected: int, *, direct_block: int, read_block: int) -> None:
    """The request body into ``sink.write`` (direct PUTs, upload chunks): in
    ``direct_block`` pieces straight from cheroot's reader where possible, else through
    ``wsgi.input.read`` in ``read_block`` pieces."""
    inp = environ["wsgi.input"]
    # The Guard wraps cheroot's reader (dav.clientinput): receive from the reader
    # itself, so its byte count stays right, with the wrapper's error translation.
    raw = inp.inner if isinstance(inp, ClientInput) else inp
    if _direct_reader(raw):
        if raw is inp:
            _receive_into(raw, sink, expected, direct_block)
        else:
            inp.guarded(_receive_into, raw, sink, expected, direct_block)
    else:
        read, left = inp.read, expected
        while left:
            block = read(min(read_block, left))
            if not block:
                raise short_body(expected - left, expected)
            sink.write(block)
            left -= len(block)
    environ["wsgidav.all_input_read"] = 1


def _direct_reader(inp) -> bool:
    """Is ``inp`` cheroot's known-length body over a buffered reader with readinto?

    Its ``read(n)`` goes through the pure-Python BufferedReader, which for every recv of a
    large read allocates and zero-fills an ``n``-byte buffer, copies what arrived into a
    new bytes object and joins them: several copies of each byte before the AEAD sees it.
    ``readinto`` receives into the caller's buffer instead."""
    return isinstance(getattr(inp, "remaining", None), int) and hasattr(
        getattr(inp, "rfile", None), "readinto1")


def _receive_into(inp, up, expected: int, bs: int) -> None:
    # readinto1, not readinto: the pure-Python readinto miscounts when its buffer holds
    # more than the space left in the caller's (ValueError); readinto1 makes one copy or
    # one recv per call, both sized correctly.
    buf = bytearray(min(bs, expected) or 1)
    view, left, readinto = memoryview(buf), expected, inp.rfile.readinto1
    while left:
        want, got = min(len(buf), left), 0
        while got < want:
            n = readinto(view[got:want])
            if not n:
                break
            got += n
        inp.remaining -= got
        left -= got
        if got:
            up.write(view[:got])  # the upload copies what it keeps
        if got < want:
            raise short_body(expected - left, expected)

