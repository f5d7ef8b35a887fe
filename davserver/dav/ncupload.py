"""Nextcloud's chunked upload (v2): how desktop and mobile clients send big files.

    MKCOL  /remote.php/dav/uploads/USER/<id>            start (Destination optional)
    PUT    /remote.php/dav/uploads/USER/<id>/<number>   one chunk (OC-Total-Length)
    PROPFIND  .../<id>                                  which chunks arrived (resume)
    MOVE   .../<id>/.file   Destination: .../files/USER/path   assemble
    DELETE .../<id>                                     abort

Uploads live in a per-user area outside every home (``.uploads/USER/<id>``, a name no
user can have), encrypted at rest, invisible in the files tree; their chunks count against
the user's quota while they wait. On local storage with encryption on, chunks sent in
order are encrypted straight into the final file's ciphertext and the MOVE only seals the
seams and commits it (vault.chunkstage); other chunks are vault files of their own, and
the MOVE then streams every chunk, in numeric order, into one vault write. Either way the
destination is the old file or the new one whatever happens, and the chunks go only
after that commit. Uploads left alone longer than ``[nextcloud] upload_max_age_hours``
are removed when the next one starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from urllib.parse import quote, unquote, urlparse
from xml.sax.saxutils import escape

from wsgidav.dav_error import DAVError

from davserver.dav.basicauth import Refusal, admit, authenticate
from davserver.dav.errors import plain_text
from davserver.dav.fastfiles import RECEIVE_BLOCK, receive_body
from davserver.dav.nc_put import Checksum, store_checksum, version_headers
from davserver.dav.propfind import rfc1123
from davserver.errors import Conflict, DavServerError, known
from davserver.instance import Instance
from davserver.vault.chunkstage import ChunkStage
from davserver.vault.files import storage_path
from davserver.vault.mounts import is_mount_path
from davserver.vault.shares import CREATE, UPDATE

log = logging.getLogger("davserver.uploads")

PREFIX = "/remote.php/dav/uploads/"
AREA = ".uploads"
_FILES_PREFIXES = ("/remote.php/dav/files/", "/remote.php/webdav/")
_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
_CHUNK_RE = re.compile(r"^[0-9]{1,20}$")
_BLOCK = 4 << 20
_CLEAN_EVERY = 600.0


class _Answer(Exception):
    """A finished answer: status line and one line of text."""

    def __init__(self, status: str, text: str, headers: list | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or []


def upload_dir(user: str, upload_id: str) -> str:
    return f"{AREA}/{user}/{upload_id}"


def clean_stale(instance: Instance, max_age: float, now: float | None = None) -> int:
    """Remove uploads nobody added to for ``max_age`` seconds; returns how many."""
    vault = instance.vault
    now = time.time() if now is None else now
    removed = 0
    if vault.storage.stat(AREA) is None:
        return 0
    for user in vault.storage.list_dir(AREA):
        if not user.is_dir:
            continue
        for up in vault.storage.list_dir(f"{AREA}/{user.name}"):
            # Chunks written in place change .data, not the folder.
            data = vault.storage.stat(f"{AREA}/{user.name}/{up.name}/.data") \
                if up.is_dir else None
            if max(up.mtime, data.mtime if data else 0) < now - max_age:
                try:
                    remove_upload(instance, f"{AREA}/{user.name}/{up.name}")
                    removed += 1
                except DavServerError as e:
                    log.warning("could not remove stale upload %s/%s: %s", user.name,
                                up.name, e)
    if removed:
        log.info("removed %d stale chunked uploads", removed)
    return removed


class RunningSha1:
    """The SHA1 of each upload's chunks so far, kept in this process between its chunk
    PUTs, so the checksum a desktop client sends with the MOVE (it asks for the type the
    capabilities prefer: SHA1) needs no pass over the file. Kept only for uploads from
    clients that say where each chunk goes (``OC-Chunk-Offset``, desktop clients), which
    are the ones that send it; any gap (a chunk out of order, a PUT that failed, chunks
    handled by another worker process) drops the state and the MOVE reads the file."""

    _MAX = 256

    def __init__(self) -> None:
        self._sofar: OrderedDict[str, tuple[int, object]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, folder: str, start: int):
        """A hash of the upload's first ``start`` bytes to continue, or None."""
        with self._lock:
            entry = self._sofar.pop(folder, None)
        if start == 0:
            return hashlib.sha1()
        return entry[1] if entry is not None and entry[0] == start else None

    def put(self, folder: str, upto: int, h) -> None:
        with self._lock:
            self._sofar[folder] = (upto, h)
            while len(self._sofar) > self._MAX:
                self._sofar.popitem(last=False)

    def digest(self, folder: str, total: int) -> str | None:
        with self._lock:
            entry = self._sofar.pop(folder, None)
        return entry[1].hexdigest() if entry is not None and entry[0] == total else None

    def forget(self, folder: str) -> None:
        with self._lock:
            self._sofar.pop(folder, None)


def remove_upload(instance: Instance, folder: str) -> None:
    """Remove an upload folder with everything it holds (its kept key too)."""
    instance.vault.delete(folder)
    _stage(instance).forget(folder)


def _stage(instance: Instance) -> ChunkStage:
    return ChunkStage(instance.vault, instance.recipients, instance.identities,
                      run_dir=instance.config.run_dir)


class ChunkedUploads:
    """Answers everything under :data:`PREFIX`."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.vault = instance.vault
        self.db = instance.db
        self.users = instance.users
        cfg = instance.config.extra.get("nextcloud", {})
        self.max_age = float(cfg.get("upload_max_age_hours", 24)) * 3600
        self._last_clean = 0.0
        self._clean_lock = threading.Lock()
        #: WsgiDAV's lock manager: a destination locked by someone else is refused (423).
        self.lock_manager = None
        self.stage = _stage(instance)
        self.sha1 = RunningSha1()

    def __call__(self, environ, start_response):
        outcome = authenticate(self.instance, environ)
        if isinstance(outcome, Refusal):
            return outcome.respond(start_response)
        admit(environ, outcome)
        try:
            return self._dispatch(environ, start_response, outcome.user)
        except _Answer as a:
            return plain_text(start_response, a.status, a.text, a.headers + _drain(environ))
        except DAVError as e:
            return plain_text(start_response, f"{e.value} {_reason(e.value)}",
                              e.context_info or _reason(e.value).lower(), _drain(environ))
        except Exception as e:
            err = known(e)
            if err is None:
                raise
            closing = _drain(environ)
            if err.HTTP_STATUS >= 500 and err.HTTP_STATUS != 507:
                log.error("%s %s: %s", environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"), e)
                return plain_text(start_response, f"{err.HTTP_STATUS} Error",
                                  "the upload failed; the server log has details", closing)
            return plain_text(start_response,
                              f"{err.HTTP_STATUS} {_reason(err.HTTP_STATUS)}", str(e), closing)

    # --- routing -----------------------------------------------------------------------

    def _dispatch(self, environ, start_response, user: str):
        parts = [p for p in environ.get("PATH_INFO", "")[len(PREFIX):].split("/") if p]
        method = environ.get("REQUEST_METHOD")
        if not parts or parts[0] != user:
            raise _Answer("404 Not Found", "no such upload folder")
        if len(parts) == 1:
            if method == "PROPFIND":
                return self._propfind(environ, start_response, user, None)
            raise _Answer("405 Method Not Allowed", "not allowed on the uploads root")
        upload_id = parts[1]
        if not _ID_RE.match(upload_id) or len(parts) > 3:
            raise _Answer("400 Bad Request", "invalid upload name")
        name = parts[2] if len(parts) == 3 else None
        if name is None:
            handler = {"MKCOL": self._mkcol, "PROPFIND": self._propfind,
                       "DELETE": self._delete}.get(method)
        elif name == ".file":
            handler = {"MOVE": self._assemble}.get(method)
        else:
            handler = {"PUT": self._put_chunk, "DELETE": self._delete,
                       "PROPFIND": self._propfind}.get(method)
        if handler is None:
            raise _Answer("405 Method Not Allowed", f"{method} is not allowed here")
        return handler(environ, start_response, user, upload_id, *(
            [name] if name is not None else []))

    # --- MKCOL / DELETE / PROPFIND -----------------------------------------------------

    def _mkcol(self, environ, start_response, user: str, upload_id: str):
        if (environ.get("CONTENT_LENGTH") or "0") != "0":
            raise _Answer("415 Unsupported Media Type", "MKCOL takes no body")
        self._maybe_clean()
        storage = self.vault.storage
        for d in (AREA, f"{AREA}/{user}"):
            if storage.stat(d) is None:
                try:
                    storage.make_dir(d)
                except Conflict:
                    pass
        path = upload_dir(user, upload_id)
        if storage.stat(path) is not None:
            raise _Answer("405 Method Not Allowed", "this upload exists already")
        storage.make_dir(path)
        if ChunkStage.usable(self.vault, self.instance.home_encryption_enabled()):
            try:
                self.stage.create(path, user)
            except BaseException:
                remove_upload(self.instance, path)
                raise
        start_response("201 Created", [("Content-Length", "0")])
        return [b""]

    def _delete(self, environ, start_response, user: str, upload_id: str,
                name: str | None = None):
        folder = upload_dir(user, upload_id)
        if name is None:
            if self.vault.storage.stat(folder) is None:
                raise _Answer("404 Not Found", "no such upload")
            with self.stage.hold(folder):
                remove_upload(self.instance, folder)
        else:
            with self.stage.hold(folder):
                part = self._part(folder, name)
                if part is None:
                    raise _Answer("404 Not Found", "no such chunk")
                if not part.placed:
                    self.vault.delete(f"{folder}/{part.name}")
                self.stage.stored_whole(folder, name)
                self.sha1.forget(folder)
        start_response("204 No Content", [("Content-Length", "0")])
        return [b""]

    def _propfind(self, environ, start_response, user: str, upload_id: str | None,
                  name: str | None = None):
        if _drain(environ):
            raise _Answer("413 Request Entity Too Large", "PROPFIND body too large")
        folder = f"{AREA}/{user}" if upload_id is None else upload_dir(user, upload_id)
        node = self.vault.stat(folder)
        if node is None and upload_id is not None:
            raise _Answer("404 Not Found", "no such upload")
        href = PREFIX + quote(folder[len(AREA) + 1:])
        depth = environ.get("HTTP_DEPTH", "1")
        parts = ['<?xml version="1.0" encoding="utf-8" ?>\n'
                 '<d:multistatus xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">']
        if name is not None:
            part = self._listed(folder, name)
            if part is None:
                raise _Answer("404 Not Found", "no such chunk")
            parts.append(_entry(f"{href}/{quote(name)}", *part))
        else:
            # no upload started yet: an empty folder
            parts.append(_entry(href + "/", None, node.mtime if node else time.time(),
                                node.etag if node else "0"))
            if depth != "0" and node is not None and upload_id is None:
                for child in sorted(self.vault.list_dir(folder), key=lambda n: n.name):
                    if child.is_dir:
                        parts.append(_entry(f"{href}/{quote(child.name)}/", None,
                                            child.mtime, child.etag))
            elif depth != "0" and node is not None:
                for part_name, listed in self._listing(folder).items():
                    parts.append(_entry(f"{href}/{quote(part_name)}", *listed))
        parts.append("</d:multistatus>")
        body = "".join(parts).encode()
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(len(body)))])
        return [body]

    def _part(self, folder: str, name: str):
        if not _CHUNK_RE.match(name):
            return None
        return next((p for p in self.stage.parts(folder) if p.name == name), None)

    def _listing(self, folder: str) -> dict:
        """name -> (size, mtime, etag) of the chunks present. A client resuming skips
        the chunks listed, so the placed ones are flushed first."""
        with self.stage.hold(folder):
            self.stage.flush(folder)
            parts = self.stage.parts(folder)
        nodes = {n.name: n for n in self.vault.list_dir(folder)}
        data = nodes.get(".data")
        out = {}
        for p in parts:
            if p.placed:
                out[p.name] = (p.size, data.mtime if data else time.time(),
                               f"{p.start:x}-{p.size:x}")
            elif p.name in nodes:
                out[p.name] = (p.size, nodes[p.name].mtime, nodes[p.name].etag)
        return out

    def _listed(self, folder: str, name: str):
        return self._listing(folder).get(name) if _CHUNK_RE.match(name) else None

    # --- chunks ------------------------------------------------------------------------

    def _pending_bytes(self, user: str, folder: str, name: str) -> int:
        """Bytes the user's other chunks hold (all uploads but this chunk)."""
        area = f"{AREA}/{user}"
        rows = self.db.query(
            "SELECT coalesce(sum(size), 0) FROM files WHERE substr(path, 1, length(?) + 1) "
            "= ? || '/' AND path != ?", (area, area, f"{folder}/{name}"))
        return int(rows[0][0]) + self.stage.pending_bytes(area, folder, int(name))

    def _put_chunk(self, environ, start_response, user: str, upload_id: str, name: str):
        if not _CHUNK_RE.match(name):
            raise _Answer("400 Bad Request", "chunk names are numbers")
        folder = upload_dir(user, upload_id)
        if self.vault.storage.stat(folder) is None:
            raise _Answer("404 Not Found", "no such upload; start it with MKCOL")
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or environ.get("HTTP_TRANSFER_ENCODING"):
            raise _Answer("411 Length Required", "a chunk needs a Content-Length")
        expected = int(length)
        quota = self.users.quota(user)
        total = environ.get("HTTP_OC_TOTAL_LENGTH") or ""
        if quota is not None and total.isdigit():
            room = self.vault.available(user, quota)
            if room is not None and int(total) > room:
                raise _Answer("507 Insufficient Storage",
                              f"the file ({total} bytes) does not fit in the {room} available")
        with self.stage.hold(folder):
            existed = self._part(folder, name) is not None
            reserved = self._pending_bytes(user, folder, name) if quota is not None else 0
            room = self.vault.available(user, quota)
            if room is not None and expected > room - reserved:
                raise _Answer("507 Insufficient Storage", f"{expected} bytes do not fit "
                              f"in the {max(0, room - reserved)} available")
            start = self.stage.placement(folder, int(name), expected)
            said = environ.get("HTTP_OC_CHUNK_OFFSET") or ""
            if start is not None and said.isdigit() and int(said) != start:
                start = None  # the client counts otherwise: keep the chunk as it is
            if start is None:
                self._put_whole(environ, user, folder, name, expected, quota, reserved)
            else:
                sha1 = self.sha1.take(folder, start) \
                    if "HTTP_OC_CHUNK_OFFSET" in environ else None
                placer = self.stage.placer(folder, start, expected, observe=sha1)
                try:
                    _receive(environ, placer, expected)
                    placer.finish()
                finally:
                    placer.close()
                self.stage.record(folder, name, placer)
                if sha1 is not None:
                    self.sha1.put(folder, start + expected, sha1)
        status = "204 No Content" if existed else "201 Created"
        start_response(status, [("Content-Length", "0")])
        return [b""]

    def _put_whole(self, environ, user: str, folder: str, name: str, expected: int,
                   quota: int | None, reserved: int) -> None:
        """A chunk stored as a vault file of its own (assembled by streaming)."""
        self.sha1.forget(folder)
        up = self.vault.begin_write(f"{folder}/{name}", quota=quota, expected_size=expected,
                                    owner=user, reserved=reserved)
        try:
            _receive(environ, up, expected)
            up.commit()
        except BaseException:
            up.abort()
            raise
        self.stage.stored_whole(folder, name)

    # --- assembly ----------------------------------------------------------------------

    def _destination(self, environ, user: str) -> str:
        dest = environ.get("HTTP_DESTINATION") or ""
        path = unquote(urlparse(dest).path)
        for prefix in _FILES_PREFIXES:
            if path.startswith(prefix):
                rel = path[len(prefix):]
                if prefix.endswith("/files/"):
                    owner, _, rel = rel.partition("/")
                    if owner != user:
                        raise _Answer("403 Forbidden", "the destination is outside your home")
                break
        else:
            raise _Answer("400 Bad Request", "Destination must be a path in your files")
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") or "\x00" in p for p in parts):
            raise _Answer("400 Bad Request", "invalid destination path")
        return storage_path(user, "/".join(parts))

    def _assemble(self, environ, start_response, user: str, upload_id: str, _name: str):
        folder = upload_dir(user, upload_id)
        if self.vault.storage.stat(folder) is None:
            raise _Answer("404 Not Found", "no such upload")
        home_dest = self._destination(environ, user)  # locks are by URL: this path
        target = self.instance.dav_vault  # the destination may be in a storage mount
        rel = home_dest.split("/", 1)[1]
        shared = self.instance.shares.resolve(user, rel)
        if shared.mount is not None:  # into something shared with the user
            dest = shared.spath
            exists = target.stat(dest) is not None
            self.instance.shares.require(shared, UPDATE if exists else CREATE,
                                         f"upload to {rel}")
        else:
            dest = target.resolve(user, rel)
        parent = target.stat(dest.rpartition("/")[0])
        if parent is None or not parent.is_dir:
            raise _Answer("409 Conflict", "the destination's folder does not exist")
        if self.lock_manager is not None:
            tokens = re.findall(r"<(opaquelocktoken:[^>]+)>", environ.get("HTTP_IF") or "")
            self.lock_manager.check_write_permission(
                url=quote(f"/remote.php/dav/files/{home_dest}"), depth="0", token_list=tokens,
                principal=user)
        with self.stage.hold(folder):
            if self.vault.storage.stat(folder) is None:
                raise _Answer("404 Not Found", "no such upload")
            answer = self._assemble_locked(environ, user, folder, target, dest)
        try:
            remove_upload(self.instance, folder)
        except DavServerError as e:  # the file is in place; the chunks go with cleaning
            log.warning("could not remove the chunks of %s: %s", folder, e)
        status, headers = answer
        start_response(status, [("Content-Length", "0")] + headers)
        return [b""]

    def _assemble_locked(self, environ, user: str, folder: str, target, dest: str):
        parts = self.stage.parts(folder)
        size = sum(p.size for p in parts)
        total = environ.get("HTTP_OC_TOTAL_LENGTH")
        if total is not None and (not total.isdigit() or int(total) != size):
            raise _Answer("400 Bad Request", f"the chunks hold {size} bytes, OC-Total-Length "
                          f"says {total}; nothing was stored (a chunk is missing or extra)")
        current = target.stat(dest)
        if current is not None and current.is_dir:
            raise _Answer("409 Conflict", "the destination is a folder")
        _check_preconditions(environ, current)
        rec = self.db.get_file(dest)
        generation = rec.generation if rec is not None and current is not None else 0
        mtime = environ.get("HTTP_X_OC_MTIME") or ""
        checksum = Checksum.parse(environ.get("HTTP_OC_CHECKSUM"))
        # A share's files count against its owner's quota, as their uploads do.
        quota = None if is_mount_path(dest) else self.users.quota(dest.split("/", 1)[0])
        if any(p.placed for p in parts) and self.stage.state(folder) is None:
            raise _Answer("409 Conflict", "this upload's data is gone (it was assembled "
                          "already, or cut short by a crash); start the upload again")
        in_place = not is_mount_path(dest) and self.instance.home_encryption_enabled() \
            and self.stage.in_place(folder, parts)
        how = ""
        if in_place:
            # Written in place: seal the edges, check, rename (no pass over the file).
            room = self.vault.available(dest.split("/", 1)[0], quota, replacing=dest)
            if room is not None and size > room:
                raise _Answer("507 Insufficient Storage",
                              f"the file ({size} bytes) does not fit in the {room} available")
            digest = self.sha1.digest(folder, size)
            file_id, data_key = self.stage.seal(folder, parts, size)
            if checksum is not None and checksum.kind == "SHA1" and digest is not None:
                how = " as the chunks arrived"
                if digest != checksum.expected:
                    raise _Answer("400 Bad Request", "the file does not match its SHA1 "
                                  "checksum (OC-Checksum); nothing was stored")
            elif checksum is not None:
                for block in self.stage.plaintext(folder, parts, _BLOCK):
                    checksum.update(block)
                checksum.check()
            up = self.stage.commit_upload(folder, dest, file_id, data_key, size, quota)
        else:
            up = target.begin_write(dest, quota=quota, expected_size=size)
            try:
                for block in self.stage.plaintext(folder, parts, _BLOCK):
                    if checksum is not None:
                        checksum.update(block)
                    up.write(block)
                if up.size != size:
                    raise _Answer("409 Conflict", "the upload changed while it was assembled")
                if checksum is not None:
                    checksum.check()
            except BaseException:
                up.abort()
                raise
        try:
            up.commit(mtime=float(mtime) if mtime.isdigit() else None,
                      expect_generation=generation)
        except Conflict:
            raise _Answer("412 Precondition Failed", "the destination changed while the "
                          "upload was assembled; nothing was stored") from None
        log.info("assembled %d chunks (%d bytes) into %s %s%s", len(parts), size, dest,
                 "in place" if in_place else "by streaming",
                 f", {checksum.kind} checked{how}" if checksum is not None else "")
        store_checksum(self.db, dest, checksum)
        headers = version_headers(target, self.db, dest, mtime.isdigit())
        return ("204 No Content" if current is not None else "201 Created"), headers

    def _maybe_clean(self) -> None:
        now = time.monotonic()
        if now - self._last_clean < _CLEAN_EVERY or not self._clean_lock.acquire(False):
            return
        try:
            self._last_clean = now
            clean_stale(self.instance, self.max_age)
        finally:
            self._clean_lock.release()


def _receive(environ, sink, expected: int) -> None:
    """The body into ``sink.write``, in big blocks straight from cheroot's reader where
    possible (as a direct PUT receives)."""
    environ["davserver.body_used"] = True
    receive_body(environ, sink, expected, direct_block=RECEIVE_BLOCK, read_block=_BLOCK)


def _check_preconditions(environ, current) -> None:
    """If-Match, and the ETag in an If header, name the version the client last saw."""
    etags = []
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match:
        etags += [t.strip().strip('"') for t in if_match.split(",")]
    if_header = environ.get("HTTP_IF")
    if if_header:
        etags += re.findall(r'\["?([^"\]]*)"?\]', if_header)
    if not etags:
        return
    if current is None or not any(t == "*" or t == current.etag for t in etags):
        raise _Answer("412 Precondition Failed", "the destination is not the version you "
                      "last saw; nothing was stored")


def _entry(href: str, size: int | None, mtime: float, etag: str) -> str:
    props = ["<d:resourcetype><d:collection/></d:resourcetype>" if size is None
             else "<d:resourcetype/>",
             f"<d:getlastmodified>{rfc1123(time.gmtime(mtime))}</d:getlastmodified>",
             f"<d:getetag>&quot;{escape(etag)}&quot;</d:getetag>"]
    if size is not None:
        props.append(f"<d:getcontentlength>{size}</d:getcontentlength>")
    return (f"<d:response><d:href>{escape(href)}</d:href><d:propstat><d:prop>{''.join(props)}"
            "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>")


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 412: "Precondition Failed", 423: "Locked",
            507: "Insufficient Storage"}


def _reason(code: int) -> str:
    return _REASONS.get(code, "Error")


def _drain(environ) -> list:
    """Read a small unused body so the connection stays usable; headers closing the
    connection when the rest of a body was not read."""
    if environ.get("wsgidav.all_input_read"):
        return []
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isdigit() and int(length) <= 1 << 20 and not environ.get("davserver.body_used"):
        environ["wsgi.input"].read(int(length))
        environ["wsgidav.all_input_read"] = 1
        return []
    return [("Connection", "close")] if length not in ("", "0") else []
