"""The OCS Share API subset Nextcloud/ownCloud clients use for their share dialogs.

``/ocs/v{1,2}.php/apps/files_sharing/api/v1/shares[/<id>]`` and ``.../sharees``. Answers
come in Nextcloud's envelope, as JSON (``format=json`` or an Accept header asking for it)
or XML, with its status codes: v1 answers HTTP 200 with the OCS code in the body (100 for
success), v2 uses the HTTP status itself (200, 400, 403, 404). Requests must carry
``OCS-APIRequest: true``, as Nextcloud demands of API clients (its CSRF rule). Every action
goes through vault.shares, the same service as the CLI and the settings pages.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from davserver.dav.basicauth import Refusal, authenticate
from davserver.dav.resources import content_type
from davserver.errors import DavServerError, NotFound, known
from davserver.instance import Instance
from davserver.vault import context
from davserver.vault import shares as sh

log = logging.getLogger("davserver.ocs")

PREFIXES = ("/ocs/v1.php/apps/files_sharing/api/v1/", "/ocs/v2.php/apps/files_sharing/api/v1/")
_MAX_BODY = 1 << 16
_REASONS = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized",
            403: "403 Forbidden", 404: "404 Not Found", 405: "405 Method Not Allowed",
            412: "412 Precondition Failed", 429: "429 Too Many Requests",
            500: "500 Internal Server Error", 503: "503 Service Unavailable"}


class OcsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _xml(value, tag: str = "data") -> str:
    if isinstance(value, dict):
        inner = "".join(_xml(v, k) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_xml(v, "element") for v in value)
    elif value is None:
        return f"<{tag}/>"
    elif isinstance(value, bool):
        inner = "1" if value else "0"
    else:
        inner = escape(str(value))
    return f"<{tag}>{inner}</{tag}>"


class OcsSharesApp:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.shares: sh.ShareService = instance.shares

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        v2 = path.startswith("/ocs/v2.php/")
        rest = path.split("/api/v1/", 1)[1].strip("/")
        params = self._params(environ)
        want_json = params.get("format") == "json" or "json" in environ.get("HTTP_ACCEPT", "")
        try:
            if environ.get("HTTP_OCS_APIREQUEST", "").lower() != "true":
                raise OcsError(412, "CSRF check failed: send the header OCS-APIRequest: true")
            outcome = authenticate(self.instance, environ)
            if isinstance(outcome, Refusal):
                code = int(outcome.status.split()[0])
                raise OcsError(997 if code == 401 else code, outcome.text)
            context.set_current(outcome.identities)
            data = self._route(environ.get("REQUEST_METHOD", "GET"), rest, params,
                               outcome.user)
            return self._answer(start_response, v2, want_json, 100, "OK", data)
        except OcsError as e:
            return self._answer(start_response, v2, want_json, e.code, e.message, [])
        except Exception as e:
            err = known(e)
            code = None if err is None else {404: 404, 403: 403, 400: 400, 409: 400}.get(
                err.HTTP_STATUS)
            if code is None:
                log.exception("share API: %s %s", environ.get("REQUEST_METHOD"), path)
                return self._answer(start_response, v2, want_json, 996,
                                    "internal error; the server log has details", [])
            return self._answer(start_response, v2, want_json, code, str(err), [])

    # --- plumbing ----------------------------------------------------------------------

    @staticmethod
    def _params(environ) -> dict[str, str]:
        out = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        length = environ.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and 0 < int(length) <= _MAX_BODY:
            body = environ["wsgi.input"].read(int(length))
            ctype = environ.get("CONTENT_TYPE", "")
            if "json" in ctype:
                try:
                    doc = json.loads(body or b"{}")
                except ValueError:
                    raise OcsError(400, "invalid JSON body") from None
                if isinstance(doc, dict):
                    out.update({k: str(v) for k, v in doc.items() if v is not None})
            else:
                out.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"))
                            .items()})
        elif length.isdigit() and int(length) > _MAX_BODY:
            raise OcsError(400, "request body too large")
        return out

    def _answer(self, start_response, v2: bool, want_json: bool, code: int, message: str,
                data):
        ok = code == 100
        statuscode = (200 if ok else code) if v2 else code
        meta = {"status": "ok" if ok else "failure", "statuscode": statuscode,
                "message": message, "totalitems": "", "itemsperpage": ""}
        if v2:
            http = 200 if ok else (code if code in _REASONS else 500 if code >= 900 else 400)
        else:
            http = 401 if code == 997 else 412 if code == 412 else 200
        if code == 997:
            http = 401
        if want_json:
            body = json.dumps({"ocs": {"meta": meta, "data": data}}).encode()
            ctype = "application/json; charset=utf-8"
        else:
            body = ('<?xml version="1.0"?>\n<ocs>' + _xml(meta, "meta") + _xml(data)
                    + "</ocs>\n").encode()
            ctype = "text/xml; charset=UTF-8"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        if http == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="davserver", charset="UTF-8"'))
        start_response(_REASONS.get(http, f"{http} Error"), headers)
        return [body]

    # --- routes ------------------------------------------------------------------------

    def _route(self, method: str, rest: str, p: dict, user: str):
        if rest == "sharees" and method == "GET":
            return self._sharees(p, user)
        if rest == "shares":
            if method == "GET":
                return self._list(p, user)
            if method == "POST":
                return self._create(p, user)
        elif rest.startswith("shares/"):
            sid = rest[len("shares/"):]
            if not sid.isdigit():
                raise OcsError(404, "Wrong share ID, share does not exist")
            if method == "GET":
                return [self._format(self._visible(int(sid), user), user)]
            if method == "PUT":
                return self._format(self._update(int(sid), p, user), user)
            if method == "DELETE":
                self._manageable(int(sid), user)
                self.shares.remove(int(sid))
                return []
        else:
            raise OcsError(404, "unknown endpoint")
        raise OcsError(405, f"{method} is not supported here")

    def _visible(self, share_id: int, user: str) -> sh.Share:
        try:
            share = self.shares.get(share_id)
        except NotFound:
            raise OcsError(404, "Wrong share ID, share does not exist") from None
        if user in (share.owner, share.initiator) or user in self.shares.recipients(share):
            return share
        raise OcsError(404, "Wrong share ID, share does not exist")

    def _manageable(self, share_id: int, user: str) -> sh.Share:
        share = self._visible(share_id, user)
        if user not in (share.owner, share.initiator):
            raise OcsError(403, "Only the owner or the sharer can change a share")
        return share

    def _list(self, p: dict, user: str) -> list:
        if p.get("shared_with_me") == "true":
            return [self._format(m.share, user, mount=m.path)
                    for m in self.shares.mounts(user)]
        reshares = p.get("reshares") == "true"
        mine = [s for s in self.shares.list(user=user)
                if s.initiator == user or (reshares and s.owner == user)]
        if "path" in p:
            target = self.shares.resolve(user, sh.clean_rel(p["path"]))
            if self.shares.node_stat(target.spath) is None:
                raise OcsError(404, "Wrong path, file/folder does not exist")
            if p.get("subfiles") == "true":
                mine = [s for s in mine if s.spath.rpartition("/")[0] == target.spath]
            else:
                mine = [s for s in mine if s.spath == target.spath]
        return [self._format(s, user) for s in mine]

    def _create(self, p: dict, user: str) -> dict:
        path = p.get("path")
        if not path:
            raise OcsError(404, "Please specify a file or folder path")
        try:
            share_type = int(p.get("shareType", ""))
        except ValueError:
            raise OcsError(400, "Unknown share type") from None
        if share_type not in (sh.USER, sh.GROUP):
            raise OcsError(400, "Unknown share type")
        with_ = p.get("shareWith") or ""
        if not with_:
            raise OcsError(404, "Please specify a valid user" if share_type == sh.USER
                           else "Please specify a valid group")
        try:
            rel = sh.clean_rel(path)
        except DavServerError as e:
            raise OcsError(400, str(e)) from None
        target = self.shares.resolve(user, rel)
        node = self.shares.node_stat(target.spath) if rel else None
        if node is None:
            raise OcsError(404, "Wrong path, file/folder does not exist")
        try:
            # Without permissions: all the sharer holds (Nextcloud's default is all).
            perms = sh.parse_permissions(p.get("permissions"), default=target.permissions)
            expires = sh.parse_expiry(p.get("expireDate"))
        except DavServerError as e:
            raise OcsError(400, str(e)) from None
        if not node.is_dir:
            perms &= sh.FILE_MASK  # a file holds no create/delete (as in Nextcloud)
        try:
            share = self.shares.create(user, rel, share_type, with_, permissions=perms,
                                       expires=expires)
        except NotFound as e:
            raise OcsError(404, str(e)) from None
        return self._format(share, user)

    def _update(self, share_id: int, p: dict, user: str) -> sh.Share:
        self._manageable(share_id, user)
        kwargs = {}
        try:
            if "permissions" in p:
                kwargs["permissions"] = sh.parse_permissions(p["permissions"])
            if "expireDate" in p:
                kwargs["expires"] = sh.parse_expiry(p["expireDate"]) if p["expireDate"] \
                    else None
        except DavServerError as e:
            raise OcsError(400, str(e)) from None
        if not kwargs:
            raise OcsError(400, "Wrong or no update parameter given")
        return self.shares.update(share_id, **kwargs)

    def _sharees(self, p: dict, user: str) -> dict:
        term = (p.get("search") or "").lower()
        users, groups = [], []
        for u in self.instance.users.list():
            if u.name == user:
                continue
            label = u.display_name or u.name
            if term in u.name.lower() or term in label.lower():
                users.append({"label": label, "value": {"shareType": sh.USER,
                                                        "shareWith": u.name}})
        for g in self.instance.groups.list():
            if term in g.lower():
                groups.append({"label": g, "value": {"shareType": sh.GROUP, "shareWith": g}})
        exact = {"users": [u for u in users if u["value"]["shareWith"].lower() == term],
                 "groups": [g for g in groups if g["label"].lower() == term], "remotes": []}
        return {"exact": exact,
                "users": [u for u in users if u not in exact["users"]],
                "groups": [g for g in groups if g not in exact["groups"]], "remotes": []}

    # --- one share, as Nextcloud writes it ---------------------------------------------

    def _display(self, name: str) -> str:
        rec = self.instance.users.get(name)
        return (rec.display_name if rec and rec.display_name else name)

    def _format(self, s: sh.Share, user: str, mount: str | None = None) -> dict:
        node = self.shares.node_stat(s.spath) if s.spath else None
        is_dir = bool(node and node.is_dir)
        if mount is None:
            # The path as the caller sees it: their own tree, or through their mount.
            mount_path = self.shares.own_rel(user, s.spath) if s.owner == user else next(
                (m.path + s.spath[len(m.share.spath):] for m in self.shares.mounts(user)
                 if s.spath == m.share.spath or s.spath.startswith(m.share.spath + "/")),
                s.rel)
        else:
            mount_path = mount
        expires = None
        if s.expires:
            expires = time.strftime("%Y-%m-%d 00:00:00", time.gmtime(s.expires - 1))
        with_display = (self._display(s.share_with) if s.share_type == sh.USER
                        else s.share_with)
        name = s.spath.rsplit("/", 1)[-1] if s.spath else ""
        return {
            "id": str(s.id), "share_type": s.share_type, "uid_owner": s.initiator,
            "displayname_owner": self._display(s.initiator), "permissions": s.permissions,
            "stime": int(s.created), "parent": None, "expiration": expires, "token": None,
            "uid_file_owner": s.owner, "displayname_file_owner": self._display(s.owner),
            "path": "/" + mount_path, "item_type": "folder" if is_dir else "file",
            "mimetype": "httpd/unix-directory" if is_dir else content_type(name),
            "storage_id": f"home::{s.owner}", "storage": 1, "item_source": s.node_id,
            "file_source": s.node_id, "file_parent": None, "file_target": "/" + (
                mount or name), "share_with": s.share_with,
            "share_with_displayname": with_display, "mail_send": 0, "hide_download": 0,
            "can_edit": user in (s.owner, s.initiator), "can_delete": user in (
                s.owner, s.initiator),
        }
