"""What Nextcloud clients expect around a PUT, on both the direct path and WsgiDAV's:

- ``OC-Checksum: SHA1:<hex>`` (or MD5, ADLER32) is verified while the body streams in;
  a mismatch fails the upload before its commit (400, nothing stored), a match is kept
  as the file's ``oc:checksums`` so other clients can check their downloads.
- The answer names the new version: ``ETag`` and ``OC-ETag`` (the ETag the next
  PROPFIND shows), ``OC-FileId`` (the stable oc:id) and ``X-OC-MTime: accepted`` when
  the client's modification time was applied.
"""

from __future__ import annotations

import hashlib
import zlib
from xml.sax.saxutils import escape

from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

from davserver.dav import nc_props
from davserver.dav.fastfiles import COMMITTED_KEY
from davserver.meta.db import MetaDB

_CHECKSUM_XML = '<oc:checksums xmlns:oc="http://owncloud.org/ns"><oc:checksum>{}</oc:checksum>' \
    "</oc:checksums>"


class Checksum:
    """A running checksum of one of the types clients send; None from :meth:`parse` for
    headers we cannot verify (they are then neither checked nor stored)."""

    def __init__(self, kind: str, expected: str) -> None:
        self.kind = kind
        self.expected = expected.lower()
        self._h = hashlib.sha1() if kind == "SHA1" else hashlib.md5() if kind == "MD5" \
            else None
        self._adler = 1

    @classmethod
    def parse(cls, header: str | None) -> Checksum | None:
        if not header:
            return None
        kind, _, value = header.strip().partition(":")
        kind = kind.upper()
        value = value.strip()
        if kind not in ("SHA1", "MD5", "ADLER32") or not value:
            return None
        try:
            int(value, 16)
        except ValueError:
            return None
        return cls(kind, value)

    def update(self, data: bytes) -> None:
        if self._h is not None:
            self._h.update(data)
        else:
            self._adler = zlib.adler32(data, self._adler)

    def matches(self) -> bool:
        if self._h is not None:
            return self._h.hexdigest() == self.expected
        return self._adler == int(self.expected, 16)

    def header(self) -> str:
        return f"{self.kind}:{self.expected}"

    def check(self) -> None:
        if not self.matches():
            raise DAVError(HTTP_BAD_REQUEST, f"the body does not match its {self.kind} "
                           "checksum (OC-Checksum); nothing was stored")


def store_checksum(db: MetaDB, spath: str, checksum: Checksum | None, *,
                   first_version: bool = False) -> None:
    """Keep a verified checksum as the file's oc:checksums; a write without one drops
    the previous version's, which would no longer be true (a first version has none:
    a delete takes a file's properties with it)."""
    if checksum is not None:
        db.set_prop(spath, nc_props.OC_CHECKSUMS,
                    _CHECKSUM_XML.format(escape(checksum.header())).encode())
    elif not first_version and db.query("SELECT 1 FROM props WHERE path = ? AND name = ?",
                  (spath, nc_props.OC_CHECKSUMS)):
        db.remove_prop(spath, nc_props.OC_CHECKSUMS)


class VerifyingInput:
    """The request body, checked against its checksum when its last byte is read: the
    reader (direct path or WsgiDAV) fails before it commits anything."""

    def __init__(self, inner, length: int, checksum: Checksum) -> None:
        self._inner = inner
        self._left = length
        self.checksum = checksum
        self.verified = length == 0 and checksum.matches()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._inner.read(n) if n else b""
        self._left -= len(data)
        self.checksum.update(data)
        if self._left == 0 and not self.verified:
            self.checksum.check()
            self.verified = True
        return data

    def readline(self, *args) -> bytes:
        return self.read()


def version_headers(vault, db: MetaDB, spath: str, mtime_given: bool,
                    etag: str | None = None) -> list[tuple[str, str]]:
    """ETag, OC-ETag, OC-FileId (and X-OC-MTime) of what is stored at ``spath`` now
    (``etag``: the version's, when the caller just committed it)."""
    if etag is None:
        node = vault.stat(spath)
        if node is None:
            return []
        etag = node.etag
    _fid, ocid = nc_props.file_id_of(db, spath)
    headers = [("ETag", f'"{etag}"'), ("OC-ETag", f'"{etag}"'),
               ("OC-FileId", ocid)]
    if mtime_given:
        headers.append(("X-OC-MTime", "accepted"))
    return headers


class PutHeaders:
    """Wraps a PUT to a file in a home: checksum on the way in, headers on the way out.
    ``locate(environ)`` is None for anything but a file in a home, else a function that
    gives its storage path once the request has logged in."""

    def __init__(self, app, instance, locate) -> None:
        self.app = app
        self.vault = instance.dav_vault  # headers of files in mounts too
        self.db = instance.db
        self.locate = locate

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method not in ("PUT", "MKCOL"):
            return self.app(environ, start_response)
        spath_of = self.locate(environ)
        if spath_of is None:
            return self.app(environ, start_response)
        if method == "MKCOL":
            return self._mkcol(environ, start_response, spath_of)
        checksum = Checksum.parse(environ.get("HTTP_OC_CHECKSUM"))
        length = environ.get("CONTENT_LENGTH") or ""
        body = None
        if checksum is not None and length.isdigit():
            body = VerifyingInput(environ["wsgi.input"], int(length), checksum)
            environ["wsgi.input"] = body
        mtime_given = (environ.get("HTTP_X_OC_MTIME") or "").isdigit()

        def start(status, headers, exc_info=None):
            if status[:3] in ("201", "204"):
                committed = environ.get(COMMITTED_KEY)  # the direct path's commit
                spath, etag, first = committed or (spath_of(), None, False)
                if spath is not None:
                    store_checksum(self.db, spath,
                                   checksum if body is not None and body.verified else None,
                                   first_version=first)
                    extra = version_headers(self.vault, self.db, spath, mtime_given, etag)
                    names = {k.lower() for k, _v in extra}
                    headers = [h for h in headers if h[0].lower() not in names] + extra
            return start_response(status, headers, exc_info)

        return self.app(environ, start)

    def _mkcol(self, environ, start_response, spath_of):
        """A new folder's OC-FileId, so the client need not ask for it."""

        def start(status, headers, exc_info=None):
            spath = spath_of() if status[:3] == "201" else None
            if spath is not None:
                headers = headers + [("OC-FileId", nc_props.file_id_of(self.db, spath)[1])]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
