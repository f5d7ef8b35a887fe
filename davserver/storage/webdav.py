"""Remote WebDAV backend: blobs and folders on another WebDAV server (Nextcloud, Apache
mod_dav, nginx dav, WsgiDAV, a NAS), over HTTP(S) with Basic auth.

* Uploads stream: the body goes out while it is written (chunked PUT on a helper thread
  fed through a small bounded queue), to a temporary name in ``.davserver-tmp/`` at the
  root, and a MOVE makes it visible under its name only once it is complete. A broken
  upload leaves at most a temp file there, which :meth:`WebDavStorage.cleanup` removes;
  the folder is hidden from listings.
* Reads are Range GETs (read-ahead window) pinned to the ETag of the first PROPFIND with
  ``If-Match``, so a file replaced mid-read fails instead of mixing versions.
* Every request has a connect and read timeout; idempotent requests are retried with
  backoff (urllib3 Retry). When that is used up: :class:`StorageUnavailable` (HTTP 503).
* Folder rename is the remote server's MOVE: as atomic as that server makes it.
"""

from __future__ import annotations

import email.utils
import logging
import os
import queue
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from defusedxml import ElementTree

from davserver.errors import (
    Conflict,
    StorageChanged,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage, checked_parts
from davserver.storage.readahead import Guarded, Window

log = logging.getLogger("davserver.storage.webdav")

TMP_DIR = ".davserver-tmp"
_DAV = "{DAV:}"
_PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
                  b"<d:resourcetype/><d:getcontentlength/><d:getlastmodified/><d:getetag/>"
                  b"</d:prop></d:propfind>")


@dataclass
class WebDavSettings:
    url: str                     # the folder on the remote server that is our root
    user: str = ""
    password: str = ""
    verify: bool | str = True    # False, or a CA bundle path
    retries: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        self.url = self.url.rstrip("/")


_END = object()
_ABORT = object()


class _Aborted(Exception):
    pass


class _DavReader(BlobReader):
    def __init__(self, store: WebDavStorage, key: str) -> None:
        self._store = store
        self._key = key
        e, etag = store._propfind_one(key)
        if e is None or e.is_dir:
            raise StorageNotFound(key)
        self.size = e.size
        self._etag = etag
        self._window = Window(self.size, self._get, self._stream)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._window.read_at(offset, length)

    def _get(self, offset: int, length: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if self._etag:
            headers["If-Match"] = self._etag
        r = self._store._request("GET", self._key, headers=headers, stream=True)
        try:
            if r.status_code == 206:
                return r.content
            if r.status_code == 200:  # Range ignored: skip to the offset
                out = bytearray()
                for block in r.iter_content(1 << 16):
                    out += block
                    if len(out) >= offset + length:
                        break
                return bytes(out[offset:offset + length])
            if r.status_code == 412:
                raise StorageChanged(f"{self._key} was replaced while it was read")
            self._store._raise_for(r, self._key)
            raise StorageError(f"GET {self._key}: HTTP {r.status_code}")
        finally:
            r.close()

    def _stream(self, offset: int) -> Guarded:
        headers = {"Range": f"bytes={offset}-"}
        if self._etag:
            headers["If-Match"] = self._etag
        r = self._store._request("GET", self._key, headers=headers, stream=True)
        if r.status_code == 412:
            r.close()
            raise StorageChanged(f"{self._key} was replaced while it was read")
        if r.status_code not in (200, 206):
            r.close()
            self._store._raise_for(r, self._key)
        body = Guarded(r.raw, self._key, on_close=r.close)
        if r.status_code == 200:  # Range ignored: skip to the offset
            left = offset
            while left > 0:
                skipped = body.read(min(left, 1 << 20))
                if not skipped:
                    break
                left -= len(skipped)
        return body

    def close(self) -> None:
        self._window.drop()


class _DavWriter(BlobWriter):
    QUEUE_BLOCKS = 8

    def __init__(self, store: WebDavStorage, key: str) -> None:
        self._store = store
        self._key = key
        self._tmp = f"{TMP_DIR}/put-{uuid.uuid4().hex}"
        store._ensure_tmp_dir()
        self._q: queue.Queue = queue.Queue(self.QUEUE_BLOCKS)
        self._status: int | None = None
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._send, name="dav-put", daemon=True)
        self._thread.start()

    def _body(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted()
            yield item

    def _send(self) -> None:
        try:
            r = self._store._session().put(
                self._store._url(self._tmp), data=self._body(),
                timeout=self._store._timeouts)
            self._status = r.status_code
            r.close()
        except BaseException as e:  # noqa: BLE001 - reported to the writer's caller
            self._error = e

    def _put(self, item) -> None:
        if not self._thread.is_alive():
            raise self._failure()
        try:
            self._q.put(item, timeout=self._store.s.read_timeout)
        except queue.Full:
            raise StorageUnavailable(f"remote WebDAV stalled while storing {self._key}") \
                from None

    def _failure(self) -> StorageError:
        e = self._error
        if e is None:
            return StorageError(f"PUT {self._key}: HTTP {self._status}")
        return _from_requests(e, self._key)

    def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or abort")
        if data:
            self._put(bytes(data))

    def commit(self) -> None:
        if self._done:
            raise StorageError("upload already finished")
        s = self._store
        try:
            self._put(_END)
            self._thread.join(s.s.read_timeout + s.s.connect_timeout)
            if self._thread.is_alive():
                raise StorageUnavailable(f"remote WebDAV did not confirm {self._key}")
            if self._error is not None or self._status not in (200, 201, 204):
                raise self._failure()
            target = s.stat(self._key)
            if target is not None and target.is_dir:
                raise Conflict(f"{self._key} is a folder")
            r = s._request("MOVE", self._tmp, headers={
                "Destination": s._url(self._key), "Overwrite": "T"})
            if r.status_code == 409:
                raise Conflict("parent folder does not exist")
            if r.status_code not in (201, 204):
                s._raise_for(r, self._key)
            self._done = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._thread.is_alive():
            try:
                self._q.put(_ABORT, timeout=1)
            except queue.Full:
                pass
            self._thread.join(self._store.s.connect_timeout)
        try:
            self._store._request("DELETE", self._tmp)
        except StorageError as e:
            log.warning("could not remove the temp file of %s: %s", self._key, e)


class WebDavStorage(Storage):
    local_durability = False
    kind = "webdav"

    def __init__(self, settings: WebDavSettings) -> None:
        self.s = settings
        self._local = threading.local()
        self._tmp_ready = False
        self._base_path = urlsplit(settings.url).path.rstrip("/")

    @property
    def _timeouts(self) -> tuple[float, float]:
        return (self.s.connect_timeout, self.s.read_timeout)

    def _session(self):
        """One session per thread and process (requests' sessions are not thread-safe,
        and a forked worker must not share its parent's connections)."""
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        pid = os.getpid()
        sess = getattr(self._local, "session", None)
        if sess is None or self._local.pid != pid:
            sess = requests.Session()
            if self.s.user:
                sess.auth = (self.s.user, self.s.password)
            sess.verify = self.s.verify
            # Bodies are read raw (ranges, streams): no transfer compression.
            sess.headers["Accept-Encoding"] = "identity"
            retry = Retry(total=self.s.retries, connect=self.s.retries, read=self.s.retries,
                          backoff_factor=0.2, status_forcelist=(502, 503, 504),
                          allowed_methods=frozenset({"GET", "HEAD", "PROPFIND", "DELETE",
                                                     "MKCOL", "OPTIONS"}),
                          raise_on_status=False)
            sess.mount("http://", HTTPAdapter(max_retries=retry))
            sess.mount("https://", HTTPAdapter(max_retries=retry))
            self._local.session = sess
            self._local.pid = pid
        return sess

    def _url(self, key: str, folder: bool = False) -> str:
        try:
            parts = checked_parts(key)
        except ValueError as e:
            raise StorageError(str(e)) from None
        path = "/".join(quote(p, safe="") for p in parts)
        url = f"{self.s.url}/{path}" if path else self.s.url + "/"
        return url + "/" if folder and path else url

    def _request(self, method: str, key: str, *, folder: bool = False, **kw):
        kw.setdefault("timeout", self._timeouts)
        try:
            r = self._session().request(method, self._url(key, folder), **kw)
        except Exception as e:  # noqa: BLE001 - mapped to our errors
            raise _from_requests(e, key) from None
        if r.status_code in (401, 403) and method != "GET":
            r.close()
            raise StorageError(f"remote WebDAV refused {method} {key}: HTTP {r.status_code} "
                               "(check user and password)")
        if r.status_code >= 500 or r.status_code == 507:
            r.close()
            if r.status_code == 507:
                from davserver.errors import StorageFull

                raise StorageFull(" (remote WebDAV)")
            raise StorageUnavailable(f"remote WebDAV answered {r.status_code} to {method}")
        return r

    def _raise_for(self, r, key: str):
        if r.status_code == 404:
            raise StorageNotFound(key)
        if r.status_code in (401, 403):
            raise StorageError(f"remote WebDAV refused {key}: HTTP {r.status_code}")
        if r.status_code in (405, 409, 412):
            raise Conflict(f"{key}: remote answered {r.status_code}")
        raise StorageError(f"{key}: remote answered HTTP {r.status_code}")

    def _ensure_tmp_dir(self) -> None:
        if not self._tmp_ready:
            r = self._request("MKCOL", TMP_DIR, folder=True)
            if r.status_code not in (201, 405):
                self._raise_for(r, TMP_DIR)
            self._tmp_ready = True

    def _propfind(self, key: str, depth: str) -> list[tuple[str, Entry, str]]:
        r = self._request("PROPFIND", key, folder=depth == "1", data=_PROPFIND_BODY,
                          headers={"Depth": depth, "Content-Type": "application/xml"})
        if r.status_code == 404:
            raise StorageNotFound(key)
        if r.status_code != 207:
            self._raise_for(r, key)
        try:
            root = ElementTree.fromstring(r.content)
        except Exception:  # noqa: BLE001 - a garbled answer is the remote's failure
            raise StorageError(f"PROPFIND {key}: unreadable answer") from None
        out = []
        for resp in root.iter(f"{_DAV}response"):
            href = unquote(urlsplit(resp.findtext(f"{_DAV}href") or "").path).rstrip("/")
            props = {}
            for ps in resp.iter(f"{_DAV}propstat"):
                if "200" not in (ps.findtext(f"{_DAV}status") or ""):
                    continue
                for prop in ps.iter(f"{_DAV}prop"):
                    for child in prop:
                        props[child.tag] = child
            rt = props.get(f"{_DAV}resourcetype")
            is_dir = rt is not None and rt.find(f"{_DAV}collection") is not None
            size = int((props.get(f"{_DAV}getcontentlength").text or 0)
                       if f"{_DAV}getcontentlength" in props and not is_dir else 0)
            mtime = 0.0
            lm = props.get(f"{_DAV}getlastmodified")
            if lm is not None and lm.text:
                try:
                    mtime = email.utils.parsedate_to_datetime(lm.text).timestamp()
                except (TypeError, ValueError):
                    pass
            et = props.get(f"{_DAV}getetag")
            name = href.rsplit("/", 1)[-1]
            out.append((href, Entry(name, is_dir, size, mtime), et.text if et is not None
                        and et.text else ""))
        return out

    def _propfind_one(self, key: str) -> tuple[Entry | None, str]:
        try:
            rows = self._propfind(key, "0")
        except StorageNotFound:
            return None, ""
        if not rows:
            return None, ""
        _href, e, etag = rows[0]
        parts = checked_parts(key)
        return Entry(parts[-1] if parts else "", e.is_dir, e.size, e.mtime), etag

    # --- the interface -----------------------------------------------------------------

    def stat(self, key: str) -> Entry | None:
        return self._propfind_one(key)[0]

    def list_dir(self, key: str) -> list[Entry]:
        rows = self._propfind(key, "1")
        parts = checked_parts(key)
        own = "/".join([self._base_path] + parts).rstrip("/")
        this = next((e for href, e, _etag in rows if href == own), None)
        if this is None or not this.is_dir:
            raise StorageNotFound(key)
        return [e for href, e, _etag in rows
                if href != own and e.name and e.name not in (".", "..")
                and not (not parts and e.name == TMP_DIR)]

    def open_reader(self, key: str) -> BlobReader:
        return _DavReader(self, key)

    def writer(self, key: str) -> BlobWriter:
        if not checked_parts(key):
            raise Conflict("cannot write the root folder")
        return _DavWriter(self, key)

    def delete(self, key: str) -> None:
        e = self.stat(key)
        if e is None:
            raise StorageNotFound(key)
        if e.is_dir:
            raise Conflict(f"{key} is a folder")
        r = self._request("DELETE", key)
        if r.status_code not in (200, 204):
            self._raise_for(r, key)

    def make_dir(self, key: str) -> None:
        if not checked_parts(key):
            raise Conflict("the root folder exists")
        r = self._request("MKCOL", key, folder=True)
        if r.status_code == 405:
            raise Conflict(f"{key} exists")
        if r.status_code == 409:
            raise Conflict("parent folder does not exist")
        if r.status_code != 201:
            self._raise_for(r, key)

    def remove_dir(self, key: str) -> None:
        if not checked_parts(key):
            raise Conflict("cannot remove the root folder")
        if self.list_dir(key):
            raise Conflict(f"{key} is not empty")
        r = self._request("DELETE", key, folder=True)
        if r.status_code not in (200, 204):
            self._raise_for(r, key)

    def rename(self, src: str, dst: str) -> None:
        e = self.stat(src)
        if e is None:
            raise StorageNotFound(src)
        if self.stat(dst) is not None:
            raise Conflict(f"{dst} exists")
        r = self._request("MOVE", src, folder=e.is_dir, headers={
            "Destination": self._url(dst, e.is_dir), "Overwrite": "F"})
        if r.status_code in (409, 412):
            raise Conflict(f"cannot move {src} to {dst}: remote answered {r.status_code}")
        if r.status_code not in (201, 204):
            self._raise_for(r, src)

    def cleanup(self) -> int:
        """Remove temp files of uploads that never reached their MOVE."""
        try:
            leftovers = [e for e in self.list_dir(TMP_DIR)
                         if not e.is_dir and e.name.startswith("put-")]
        except StorageNotFound:
            return 0
        n = 0
        for e in leftovers:
            r = self._request("DELETE", f"{TMP_DIR}/{e.name}")
            n += r.status_code in (200, 204)
        return n


def _from_requests(e: BaseException, key: str) -> StorageError:
    import requests

    if isinstance(e, StorageError):
        return e
    if isinstance(e, requests.Timeout | requests.ConnectionError):
        return StorageUnavailable(f"remote WebDAV not reachable for {key}: {type(e).__name__}")
    if isinstance(e, _Aborted):
        return StorageError(f"upload of {key} aborted")
    return StorageError(f"remote WebDAV request for {key} failed: {type(e).__name__}")
