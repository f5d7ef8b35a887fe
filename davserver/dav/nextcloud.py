"""The Nextcloud-client layer, just inside the Guard: the endpoints a Nextcloud client
needs besides WebDAV on the files (OCS core, login flow v2, chunked uploads, placeholders
for trash and versions, favourites REPORT) and the headers it expects around every PUT.
"""

from __future__ import annotations

from wsgidav import util
from wsgidav.dav_error import DAVError

from davserver.dav import ocs_core
from davserver.dav.basicauth import Refusal, authenticate
from davserver.dav.errors import plain_text
from davserver.dav.nc_put import PutHeaders
from davserver.dav.ncupload import PREFIX as UPLOADS_PREFIX
from davserver.dav.ncupload import ChunkedUploads
from davserver.instance import Instance
from davserver.web.login_flow import PREFIXES as LOGIN_PREFIXES
from davserver.web.login_flow import LoginFlow

#: Nextcloud endpoints that do not exist here yet: a clean 404, not a WsgiDAV page.
_ABSENT = ("/remote.php/dav/trashbin/", "/remote.php/dav/versions/")
_FILES = ("/remote.php/dav/files/", "/remote.php/webdav")
_EMPTY_MULTISTATUS = b'<?xml version="1.0" encoding="utf-8" ?>\n<d:multistatus xmlns:d="DAV:"/>'


class NextcloudLayer:
    def __init__(self, app, instance: Instance, dav, providers: tuple) -> None:
        self.app = app  # what is not a Nextcloud endpoint goes on there (through self.put)
        self.instance = instance
        self.dav = dav
        self.providers = providers
        self.uploads = ChunkedUploads(instance)
        self.uploads.lock_manager = dav.lock_manager
        self.login_flow = LoginFlow(instance)
        self.put = PutHeaders(app, instance, self._locate)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/ocs/"):
            answer = ocs_core.handle(self.instance, environ, start_response)
            if answer is not None:
                return answer
        elif path.startswith(LOGIN_PREFIXES):
            answer = self.login_flow(environ, start_response)
            if answer is not None:
                return answer
        elif path.startswith(UPLOADS_PREFIX) or path == UPLOADS_PREFIX.rstrip("/"):
            return self.uploads(environ, start_response)
        elif path.startswith(_ABSENT) or path in (p.rstrip("/") for p in _ABSENT):
            return plain_text(start_response, "404 Not Found",
                              "trash and versions are not kept by this server")
        elif environ.get("REQUEST_METHOD") == "REPORT" and path.startswith(_FILES):
            return self._report(environ, start_response)
        return self.put(environ, start_response)

    def _report(self, environ, start_response):
        """Favourites (oc:filter-files) and other file reports: none kept, so the answer
        is an empty result, as Nextcloud gives for a user without favourites."""
        outcome = authenticate(self.instance, environ)
        if isinstance(outcome, Refusal):
            return outcome.respond(start_response)
        length = environ.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) <= 1 << 20:
            environ["wsgi.input"].read(int(length))
        else:
            return plain_text(start_response, "413 Request Entity Too Large",
                              "REPORT body too large")
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(len(_EMPTY_MULTISTATUS)))])
        return [_EMPTY_MULTISTATUS]

    def _locate(self, environ):
        """For a path in a home share, a function giving its storage path once the
        request has logged in (None if the caller may not write there)."""
        try:
            path = util.normalize_path(util.re_encode_wsgi(environ.get("PATH_INFO") or "/"))
        except (UnicodeError, DAVError):
            return None
        share, provider = self.dav.resolve_provider(path)
        if provider not in self.providers:
            return None
        rel = path[len(share):]

        def spath() -> str | None:
            user = environ.get("wsgidav.auth.user_name")
            try:
                owner, inside = provider._split(rel, environ)
            except DAVError:
                return None
            if not user or owner != user or not inside:
                return None
            return self.instance.dav_vault.resolve(owner, inside)  # mounts too

        return spath
