"""Share permissions for every WebDAV method that reaches storage, before WsgiDAV acts.

One layer rather than a check in each resource callback: WsgiDAV reaches storage from many
places (PUT, LOCK on an unmapped URL, PROPPATCH, COPY/MOVE of trees member by member),
and a request refused here has touched nothing. The rules themselves live in
vault.shares; this layer only says which bit each method needs. It also handles what a
recipient does to a mount point itself: MOVE renames it in their tree only, DELETE takes
the share out of their tree; neither touches the owner's files.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlparse

from wsgidav import util
from wsgidav.mw.base_mw import BaseMiddleware

from davserver.dav import lock_scope
from davserver.dav.errors import plain_text
from davserver.errors import DavServerError, known
from davserver.vault.shares import CREATE, DELETE, UPDATE, ShareForbidden, ShareService, Target


class ShareLocked(DavServerError):
    """locked: {detail}"""

    HTTP_STATUS = 423
    EXIT_CODE = 8


#: Where WebDAV lock URLs live: the two URL forms of the users' trees (dav.app).
DAV_ROOT = "/remote.php/"
FILES_ROOT = "/remote.php/dav/files/"
WEBDAV_ROOT = "/remote.php/webdav/"

#: Methods that only read: any share grants them.
_READING = {"GET", "HEAD", "OPTIONS", "PROPFIND", "UNLOCK", "REPORT", "SEARCH"}


class SharePermissions(BaseMiddleware):
    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        self.providers = config["davserver.providers"]
        self.instance = config["davserver.instance"]
        self.shares: ShareService = self.instance.shares
        self.locks = config["lock_storage"]

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        provider = environ.get("wsgidav.provider")
        user = environ.get("wsgidav.auth.user_name")
        lock_scope.set_user(user)  # /remote.php/webdav/ locks of others are not theirs
        if method in _READING or provider not in self.providers or not user:
            return self.next_app(environ, start_response)
        try:
            owner, rel = provider._split(environ.get("PATH_INFO") or "/", environ)
            if owner != user:
                return self.next_app(environ, start_response)  # 404s are WsgiDAV's
            mounts = self.shares.mounts(user)
            if not mounts:
                # Their own node: a member's lock on their mount URL of it still counts.
                if method not in ("LOCK", "MKCOL") and self.locks.has_lock_under(
                        DAV_ROOT) and self._locked_by_other(
                        Target(f"{user}/{rel}".rstrip("/"), 31), user):
                    raise ShareLocked("this file is locked by a user it is shared with")
                return self.next_app(environ, start_response)
            target = self.shares.resolve(user, rel, mounts)
            answer = self._check(environ, start_response, method, provider, user, target,
                                 mounts)
        except Exception as e:
            err = known(e)
            if err is None or err.HTTP_STATUS >= 500:
                raise
            return self._refuse(environ, start_response, err)
        if answer is not None:
            return answer
        return self.next_app(environ, start_response)

    def _locked_by_other(self, target: Target, user: str) -> bool:
        """Locks are kept per URL: one the owner (or another member) took on any URL of
        the node, or of a folder above it, must stop this user's write through theirs.

        Each user reaches the node through two URL forms, /remote.php/dav/files/USER/PATH
        and /remote.php/webdav/PATH, where PATH is the owner's path or the member's mount
        path. A lock counts when it was taken by the user whose URL it is: the same
        /remote.php/webdav/PATH names another file for everyone else."""
        manager = self.wsgidav_app.lock_manager
        owner, _, rel = target.spath.partition("/")
        reach = [] if owner.startswith(".") else [(owner, rel)]  # team folders: no owner
        reach += self.shares.mounts_of_node(target.spath)
        for who, path in reach:
            if who == user:
                continue
            for url in (f"{FILES_ROOT}{who}/{path}", f"{WEBDAV_ROOT}{path}"):
                with lock_scope.unscoped():
                    locks = manager.get_indirect_url_lock_list(quote(url.rstrip("/")))
                if any(lock.get("principal") == who for lock in locks):
                    return True
        return False

    def _exists(self, target: Target) -> bool:
        return self.instance.vault.storage.stat(target.spath) is not None

    def _check(self, environ, start_response, method, provider, user, target, mounts):
        require = ShareService.require
        if method in ("MOVE", "COPY"):
            dest = self._destination(environ, provider, user, mounts)
            if method == "MOVE" and target.is_mount_root:
                if dest is None:
                    return None  # WsgiDAV answers the bad Destination
                self.shares.move_mount(user, target.mount, dest[0])
                return _done(environ, start_response, "201 Created")
            if method == "MOVE" and target.mount is not None:
                same_parent = dest is not None and dest[1].mount is target.mount and \
                    dest[1].spath.rpartition("/")[0] == target.spath.rpartition("/")[0]
                require(target, UPDATE if same_parent else DELETE,
                        "moving out of this share" if not same_parent else "renaming here")
            if dest is not None and dest[1].mount is not None:
                if self._locked_by_other(dest[1], user):
                    raise ShareLocked("the destination is locked by another user of the share")
                if dest[1].is_mount_root:
                    raise ShareForbidden("a shared folder cannot be overwritten")
                require(dest[1], UPDATE if self._exists(dest[1]) else CREATE,
                        "writing into this share")
            return None
        if method == "DELETE" and target.is_mount_root:
            self.shares.leave(user, target.mount)  # their view only: locks do not apply
            return _done(environ, start_response, "204 No Content")
        if method not in ("LOCK", "MKCOL") and self._locked_by_other(target, user):
            raise ShareLocked("this file is locked by another user of the share")
        if target.mount is None:
            return None
        if method == "DELETE":
            require(target, DELETE, "deleting in this share")
        elif method == "PUT":
            exists = self._exists(target)
            require(target, UPDATE if exists else CREATE,
                    "changing files in this share" if exists else "uploading into this share")
        elif method in ("MKCOL",):
            require(target, CREATE, "creating folders in this share")
        elif method in ("PROPPATCH", "LOCK"):
            exists = self._exists(target)
            require(target, UPDATE if exists else CREATE, "changing files in this share")
        else:
            require(target, UPDATE, f"{method} in this share")
        return None

    def _destination(self, environ, provider, user, mounts) -> tuple[str, Target] | None:
        """(path in the user's tree, target) of the Destination header, if it is ours."""
        raw = environ.get("HTTP_DESTINATION")
        if not raw:
            return None
        path = unquote(urlparse(raw).path)
        prefix = environ.get("SCRIPT_NAME", "")
        if not path.startswith(prefix + "/"):
            return None
        try:
            owner, rel = provider._split(path[len(prefix):], environ)
        except Exception:
            return None
        if owner != user:
            return None
        return rel, self.shares.resolve(user, rel, mounts)

    def _refuse(self, environ, start_response, err: DavServerError):
        status = {403: "403 Forbidden", 404: "404 Not Found", 400: "400 Bad Request",
                  409: "409 Conflict", 423: "423 Locked"}.get(
            err.HTTP_STATUS, f"{err.HTTP_STATUS} Error")
        headers = []
        if util.get_content_length(environ):
            headers.append(("Connection", "close"))  # the body was not read
        return plain_text(start_response, status, str(err), headers)


def _done(environ, start_response, status: str):
    start_response(status, [("Content-Length", "0")])
    return [b""]
