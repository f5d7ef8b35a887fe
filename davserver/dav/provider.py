"""Maps request paths to homes: ``/remote.php/dav/files/USER/...`` and ``/remote.php/webdav/...``.

Users reach only their own home and what is shared with them (mounted in their home, see
vault.shares): another user's path resolves to nothing (404), exactly as if it did not
exist, so names of other users' files never leak.
"""

from __future__ import annotations

from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVProvider

from davserver.dav import range_guard
from davserver.dav.errors import dav_errors
from davserver.dav.resources import FileResource, FolderResource, UsersRoot
from davserver.instance import Instance


class HomeProvider(DAVProvider):
    def __init__(self, instance: Instance, *, user_in_path: bool) -> None:
        super().__init__()
        self.instance = instance
        self.vault = instance.dav_vault  # the home with external storage mounted
        self.users = instance.users
        self.db = instance.db
        self.user_in_path = user_in_path

    def __repr__(self) -> str:
        return f"HomeProvider(user_in_path={self.user_in_path})"

    def is_readonly(self) -> bool:
        return False

    def _split(self, path: str, environ: dict) -> tuple[str | None, str]:
        """Return (owner, path inside the home); owner None for the users root."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") or "\x00" in p for p in parts):
            raise DAVError(HTTP_BAD_REQUEST, "invalid path")
        user = environ.get("wsgidav.auth.user_name") or ""
        if not self.user_in_path:
            return user, "/".join(parts)
        if not parts:
            return None, ""
        return parts[0], "/".join(parts[1:])

    def storage_path(self, path: str, environ: dict) -> str:
        """Storage key for a path of this share; refuses anything outside the caller's home."""
        owner, rel = self._split(path, environ)
        if owner is None or owner != environ.get("wsgidav.auth.user_name"):
            raise DAVError(HTTP_FORBIDDEN, "outside your home folder")
        return self._resolved(owner, rel)[0]

    @dav_errors
    def list_members(self, path: str, spath: str, environ: dict) -> list:
        """A folder's members as the caller sees them, shares mounted in it included."""
        owner, rel = self._split(path, environ)
        return self.instance.shares.listing(owner, rel, spath)

    def _resolved(self, owner: str, rel: str):
        """(storage path, share target): a share mounted in the home, else the home with
        external storage mounted in it."""
        target = self.instance.shares.resolve(owner, rel)
        if target.mount is not None:
            return target.spath, target
        return self.vault.resolve(owner, rel), target

    @dav_errors
    def get_resource_inst(self, path: str, environ: dict):
        self._count_get_resource_inst += 1
        user = environ.get("wsgidav.auth.user_name")
        if not user:
            return None
        owner, rel = self._split(path, environ)
        if owner is None:
            return UsersRoot(path, environ, user)
        if owner != user:
            return None
        spath, target = self._resolved(owner, rel)
        node = self.vault.stat(spath)
        if node is None:
            return None
        if node.is_dir:
            if target.mount is None:
                node = self.instance.shares.with_mounts_etag(user, rel, node)
            return FolderResource(path, environ, spath, node)
        res = FileResource(path, environ, spath, node)
        range_guard.drop_unusable(environ, node.size)  # before WsgiDAV's do_GET parses it
        if environ.get("REQUEST_METHOD") == "GET" and path.rstrip("/") == environ.get(
            "PATH_INFO", ""
        ).rstrip("/"):
            if target.mount is not None and self.instance.sharewraps.awaiting(
                    user, target.mount.share.id):
                raise DAVError(HTTP_FORBIDDEN, self.instance.sharewraps.AWAITING)
            res.prepare_read(ranged="HTTP_RANGE" in environ)
        return res
