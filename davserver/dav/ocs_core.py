"""Nextcloud's OCS core endpoints that sync clients call before anything else:
``/ocs/v{1,2}.php/cloud/capabilities`` (what the server can do: chunking, checksums,
sharing) and ``/ocs/v{1,2}.php/cloud/user`` (who is logged in, for the account screen).

OCS answers come in an envelope whose status code differs by version: v1 says 100 for
success and answers HTTP 200 even for most failures, v2 repeats the HTTP status. JSON with
``?format=json`` or an ``Accept: application/json``, XML otherwise, as Nextcloud does.
Other ``/ocs/`` paths (the sharing API) are left to the next layer.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from davserver import __version__
from davserver.dav.basicauth import Refusal, authenticate
from davserver.instance import Instance

#: Nextcloud's version this server answers as (status.php says the same).
NC_VERSION = (30, 0, 0)
CHECKSUM_TYPES = ("SHA1", "MD5", "ADLER32")


def capabilities() -> dict:
    """What a client reads to decide how to talk to us. Other features (sharing) extend
    the ``files_sharing`` block in place."""
    return {
        "core": {"pollinterval": 60, "webdav-root": "remote.php/webdav",
                 "reference-api": False, "mod-rewrite-working": False},
        "dav": {"chunking": "1.0"},
        "files": {"bigfilechunking": True, "blacklisted_files": [".htaccess"],
                  "forbidden_filenames": [".htaccess"], "forbidden_filename_characters": [],
                  "undelete": False, "versioning": False, "comments": False},
        "checksums": {"supportedTypes": list(CHECKSUM_TYPES), "preferredUploadType": "SHA1"},
        "files_sharing": {"api_enabled": False, "public": {"enabled": False},
                          "resharing": False, "group_sharing": False,
                          "user": {"send_mail": False},
                          "federation": {"outgoing": False, "incoming": False}},
        "davserver": {"version": __version__},
    }


def _version_block() -> dict:
    major, minor, micro = NC_VERSION
    return {"major": major, "minor": minor, "micro": micro,
            "string": f"{major}.{minor}.{micro}", "edition": "", "extendedSupport": False}


def _to_xml(value, tag: str = "element") -> str:
    if isinstance(value, dict):
        inner = "".join(_to_xml(v, k) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(_to_xml(v, "element") for v in value)
    elif isinstance(value, bool):
        inner = "1" if value else ""
    elif value is None:
        inner = ""
    else:
        inner = escape(str(value))
    return f"<{tag}>{inner}</{tag}>"


def respond(environ, start_response, version: int, data, *, http: int = 200,
            message: str = "OK"):
    """An OCS envelope. ``http``: the outcome as an HTTP status (200, 401, 404 ...)."""
    wants_json = "json" in parse_qs(environ.get("QUERY_STRING", "")).get("format", [""])[0] \
        or "application/json" in environ.get("HTTP_ACCEPT", "")
    ok = http < 300
    code = (100 if ok else {401: 997, 404: 998}.get(http, 996)) if version == 1 else http
    meta = {"status": "ok" if ok else "failure", "statuscode": code, "message": message,
            "totalitems": "", "itemsperpage": ""}
    status = http if version == 2 or http == 401 else 200
    if wants_json:
        body = json.dumps({"ocs": {"meta": meta, "data": data if data is not None else []}})
        ctype = "application/json; charset=utf-8"
    else:
        body = ('<?xml version="1.0"?>\n<ocs>' + _to_xml(meta, "meta")
                + _to_xml(data if data is not None else [], "data") + "</ocs>\n")
        ctype = "text/xml; charset=UTF-8"
    raw = body.encode("utf-8")
    reasons = {200: "OK", 401: "Unauthorized", 404: "Not Found", 400: "Bad Request",
               405: "Method Not Allowed"}
    headers = [("Content-Type", ctype), ("Content-Length", str(len(raw)))]
    if http == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="davserver", charset="UTF-8"'))
    start_response(f"{status} {reasons.get(status, 'Error')}", headers)
    return [raw]


def user_info(instance: Instance, user: str) -> dict:
    rec = instance.db.get_user(user)
    quota = rec.quota_bytes if rec else None
    used = instance.vault.usage(user)
    free = None if quota is None else max(0, quota - used)
    return {
        "enabled": True, "id": user, "storageLocation": "", "lastLogin": 0,
        "backend": rec.backend if rec else "local",
        "quota": {"free": free if free is not None else -3, "used": used,
                  "total": quota if quota is not None else -3,
                  "relative": round(100.0 * used / quota, 2) if quota else 0,
                  "quota": quota if quota is not None else -3},
        "email": (rec.email if rec else None) or None,
        "display-name": (rec.display_name if rec else None) or user,
        "displayname": (rec.display_name if rec else None) or user,
        "phone": "", "address": "", "website": "", "twitter": "", "groups": [],
        "language": "en", "locale": "", "backendCapabilities": {"setDisplayName": False,
                                                                 "setPassword": False},
    }


def handle(instance: Instance, environ, start_response):
    """Answer a core OCS request, or None when the path is not one of ours."""
    path = environ.get("PATH_INFO", "")
    for version in (1, 2):
        prefix = f"/ocs/v{version}.php/cloud/"
        if path.startswith(prefix):
            break
    else:
        return None
    what = path[len(prefix):].rstrip("/")
    if what not in ("capabilities", "user"):
        return None
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        return respond(environ, start_response, version, None, http=405,
                       message="method not allowed")
    if what == "capabilities":
        return respond(environ, start_response, version,
                       {"version": _version_block(), "capabilities": capabilities()})
    if environ.get("HTTP_OCS_APIREQUEST", "").lower() != "true":
        return respond(environ, start_response, version, None, http=401,
                       message="the OCS-APIRequest: true header is required")
    outcome = authenticate(instance, environ)
    if isinstance(outcome, Refusal):
        if outcome.status.startswith("401"):
            return respond(environ, start_response, version, None, http=401,
                           message="current user is not logged in")
        return outcome.respond(start_response)
    return respond(environ, start_response, version, user_info(instance, outcome.user))
