"""WsgiDAV resources for files and folders in a user's home.

Each resource carries its storage path (``spath``) and the vault :class:`Node` it was made
from, so a PROPFIND of a large folder is one storage listing plus one index query, and
nothing is decrypted to answer it. Dead properties are kept in the metadata DB under the
storage path (not the URL), so the same file reached through ``/remote.php/webdav/`` and
``/remote.php/dav/files/USER/`` has one set of properties, and they follow moves.
"""

from __future__ import annotations

import functools
import mimetypes
import time

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection
from wsgidav.xml_tools import etree, string_to_xml

from davserver.dav import nc_props
from davserver.dav.errors import dav_errors, short_body
from davserver.errors import Conflict
from davserver.vault.files import Node, Upload

_LOCK_PROPS = ("{DAV:}lockdiscovery", "{DAV:}supportedlock")
OPENED_KEY = "davserver.opened"  # environ: (storage path, open file, its node), prepared GET
_QUOTA_PROPS = ("{DAV:}quota-used-bytes", "{DAV:}quota-available-bytes")


@functools.lru_cache(maxsize=4096)
def _type_of_suffix(suffix: str) -> str:
    return mimetypes.guess_type("x" + suffix)[0] or "application/octet-stream"


def content_type(name: str) -> str:
    """MIME type from the name (cached by suffix: listings ask it for every file)."""
    dot = name.find(".", 1)
    return _type_of_suffix(name[dot:].lower()) if dot > 0 else "application/octet-stream"


class _DeadProps:
    """Dead properties from the DB, keyed by storage path; mixed into both resource kinds."""

    spath: str
    _props: dict[str, bytes] | None = None

    def _dead(self) -> dict[str, bytes]:
        if self._props is None:
            self._props = self.provider.db.get_props(self.spath)
        return self._props

    def get_property_names(self, *, is_allprop):
        return super().get_property_names(is_allprop=is_allprop) + list(self._dead())

    def get_property_value(self, name):
        if name in nc_props.NAMES:
            return self._computed(name)
        if name in _QUOTA_PROPS and (not self.is_collection or (
                name.endswith("available-bytes") and self.get_available_bytes() is None)):
            # RFC 4331: quota is a property of collections, and an integer when present.
            # WsgiDAV would answer 200 with an empty element instead.
            raise DAVError(HTTP_NOT_FOUND)
        try:
            return super().get_property_value(name)
        except DAVError as e:
            if e.value != HTTP_NOT_FOUND:
                raise
        value = self._dead().get(name)
        if value is None:
            raise DAVError(HTTP_NOT_FOUND)
        return string_to_xml(value)

    @dav_errors
    def _computed(self, name):
        node = getattr(self, "node", None)
        if node is None:
            raise DAVError(HTTP_NOT_FOUND)
        user = self.environ.get("wsgidav.auth.user_name") or ""
        elem = etree.Element(name)
        elem.text = nc_props.values(self.provider.db, user, [name], [node], False)[
            node.path][name]
        return elem

    @dav_errors
    def set_property_value(self, name, value, *, dry_run=False):
        if name in nc_props.NAMES:
            raise DAVError(HTTP_FORBIDDEN, "computed property")
        if name in _LOCK_PROPS or name.startswith("{DAV:}"):
            return super().set_property_value(name, value, dry_run=dry_run)
        if dry_run:
            return None
        if value is None:
            self.provider.db.remove_prop(self.spath, name)
        else:
            self.provider.db.set_prop(self.spath, name, etree.tostring(value))
        self._props = None
        return None

    @dav_errors
    def remove_all_properties(self, *, recursive):
        self.provider.db.remove_props(self.spath, tree=recursive)


class FileResource(_DeadProps, DAVNonCollection):
    def __init__(self, path: str, environ: dict, spath: str, node: Node | None) -> None:
        super().__init__(path, environ)
        self.spath = spath
        self.node = node
        self._upload: Upload | None = None
        self._expected: int | None = None
        self._received = 0

    # --- live properties ---------------------------------------------------------------

    def get_content_length(self):
        return self.node.size if self.node else 0

    def get_content_type(self):
        return content_type(self.name)

    def get_creation_date(self):
        return self.node.mtime if self.node else time.time()

    def get_last_modified(self):
        return self.node.mtime if self.node else time.time()

    def get_etag(self):
        return self.node.etag if self.node else None

    def support_etag(self):
        return True

    def support_ranges(self):
        return True

    # --- content -----------------------------------------------------------------------

    @dav_errors
    def prepare_read(self, ranged: bool) -> None:
        """Open and authenticate before the response starts, so a refusal is a clean
        error status instead of a broken stream.

        WsgiDAV resolves the target of a GET more than once (the directory browser asks
        too); the open file is kept in the request's environ so it is opened and verified
        once. The Guard closes it if the request ends without reading it."""
        held = self.environ.get(OPENED_KEY)
        if held is not None and held[0] == self.spath:
            self.node = held[2]  # describe the version opened first, not a newer one
            return
        vault = self.provider.vault
        f = vault.open_read(self.spath)
        if self.node is not None and not self.node.describes(f):
            # Committed since the stat: describe the version that was opened, or give up.
            self.node = vault.stat(self.spath)
            if self.node is None or not self.node.describes(f):
                f.close()
                raise DAVError(HTTP_SERVICE_UNAVAILABLE,
                               "the file changed while it was being opened; try again",
                               add_headers=[("Retry-After", "1")])
        if ranged and hasattr(f, "verify_final"):
            try:
                f.verify_final()
            except BaseException:
                f.close()
                raise
        self.environ[OPENED_KEY] = (self.spath, f, self.node)

    @dav_errors
    def get_content(self):
        held = self.environ.get(OPENED_KEY)
        if held is not None and held[0] == self.spath:
            del self.environ[OPENED_KEY]
            return held[1]
        return self.provider.vault.open_read(self.spath)

    @dav_errors
    def begin_write(self, *, content_type=None):
        length = self.environ.get("CONTENT_LENGTH")
        self._expected = int(length) if length and length.isdigit() else None
        self._upload = self.provider.vault.begin_write(
            self.spath, quota=self.provider.users.quota(self.spath.split("/", 1)[0]),
            expected_size=self._expected)
        return self

    # The object returned by begin_write: WsgiDAV feeds the body to it.
    @dav_errors
    def write(self, data: bytes) -> None:
        self._received += len(data)
        self._upload.write(data)

    def close(self) -> None:
        if self._expected is not None and self._received != self._expected:
            raise short_body(self._received, self._expected)

    @dav_errors
    def end_write(self, *, with_errors):
        up, self._upload = self._upload, None
        if up is None:
            return
        if with_errors:
            up.abort()
            return
        rec = up.commit()
        self.node = self.provider.vault.stat(self.spath) or self.node
        if self.node is None:
            self.node = Node(self.spath, self.name, False, rec.size, rec.mtime,
                             rec.file_id.hex() if rec.file_id else "", rec.encrypted)

    @dav_errors
    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        if dry_run:
            return True
        ts = float(time_stamp) if not isinstance(time_stamp, str) or time_stamp.replace(
            ".", "", 1).isdigit() else util.parse_time_string(time_stamp)
        self.provider.vault.set_mtime(self.spath, ts)
        return True

    # --- namespace ---------------------------------------------------------------------

    @dav_errors
    def delete(self):
        self.provider.vault.delete(self.spath)
        self.remove_all_locks(recursive=True)

    @dav_errors
    def copy_move_single(self, dest_path, *, is_move):
        dest = self.provider.storage_path(dest_path, self.environ)
        self.provider.vault.copy_file(self.spath, dest,
                                      quota=self.provider.users.quota(dest.split("/", 1)[0]))
        self.provider.db.copy_props(self.spath, dest)

    def support_recursive_move(self, dest_path):
        return True

    @dav_errors
    def move_recursive(self, dest_path):
        self.provider.vault.move(self.spath, self.provider.storage_path(dest_path, self.environ))
        self.remove_all_locks(recursive=True)
        return []


class FolderResource(_DeadProps, DAVCollection):
    def __init__(self, path: str, environ: dict, spath: str, node: Node) -> None:
        super().__init__(path, environ)
        self.spath = spath
        self.node = node
        self._members: list[Node] | None = None

    def _nodes(self) -> list[Node]:
        if self._members is None:
            self._members = dav_errors(self.provider.vault.list_dir)(self.spath)
        return self._members

    def _child_path(self, name: str) -> str:
        return util.join_uri(self.path, name)

    def get_member_names(self):
        return [n.name for n in self._nodes()]

    def get_member(self, name):
        return self.provider.get_resource_inst(self._child_path(name), self.environ)

    def get_member_list(self):
        out = []
        for n in self._nodes():
            cls = FolderResource if n.is_dir else FileResource
            out.append(cls(self._child_path(n.name), self.environ, n.path, n))
        return out

    def get_creation_date(self):
        return self.node.mtime

    def get_last_modified(self):
        return self.node.mtime

    def get_etag(self):
        return self.node.etag

    def support_etag(self):
        return True

    def get_used_bytes(self):
        return self.provider.vault.usage(self.spath.split("/", 1)[0])

    def get_available_bytes(self):
        owner = self.spath.split("/", 1)[0]
        quota = self.provider.users.quota(owner)
        if quota is None:
            return None
        return self.provider.vault.available(owner, quota)

    @dav_errors
    def create_empty_resource(self, name):
        spath = f"{self.spath}/{name}"
        res = FileResource(self._child_path(name), self.environ, spath, None)
        if self.environ.get("REQUEST_METHOD") != "PUT":
            # LOCK on an unmapped URL creates an empty file (RFC 4918 7.3); a PUT
            # instead commits its own content atomically, so nothing is created here.
            self.provider.vault.write_bytes(spath, b"")
            res.node = self.provider.vault.stat(spath)
        return res

    @dav_errors
    def create_collection(self, name):
        self.provider.vault.make_dir(f"{self.spath}/{name}")

    def support_recursive_delete(self):
        return True

    @dav_errors
    def delete(self):
        if self.spath.count("/") == 0:
            raise DAVError(HTTP_FORBIDDEN, "the home folder itself cannot be deleted")
        self.provider.vault.delete(self.spath)
        self.remove_all_locks(recursive=True)
        return []

    @dav_errors
    def copy_move_single(self, dest_path, *, is_move):
        dest = self.provider.storage_path(dest_path, self.environ)
        try:
            self.provider.vault.make_dir(dest)
        except Conflict:
            if self.provider.vault.stat(dest) is None:
                raise
        self.provider.db.copy_props(self.spath, dest)

    def support_recursive_move(self, dest_path):
        return True

    @dav_errors
    def move_recursive(self, dest_path):
        if self.spath.count("/") == 0:
            raise DAVError(HTTP_FORBIDDEN, "the home folder itself cannot be moved")
        self.provider.vault.move(self.spath, self.provider.storage_path(dest_path, self.environ))
        self.remove_all_locks(recursive=True)
        return []


class UsersRoot(DAVCollection):
    """``/remote.php/dav/files/``: lists only the caller's own home."""

    def __init__(self, path: str, environ: dict, user: str) -> None:
        super().__init__(path, environ)
        self.user = user

    def get_member_names(self):
        return [self.user]

    def get_member(self, name):
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def get_display_info(self):
        return {"type": "Directory"}

    def create_collection(self, name):
        raise DAVError(HTTP_FORBIDDEN)

    def create_empty_resource(self, name):
        raise DAVError(HTTP_FORBIDDEN)

    def delete(self):
        raise DAVError(HTTP_FORBIDDEN)
