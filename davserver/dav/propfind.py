"""A direct PROPFIND for the common case, built from one listing and two DB queries.

WsgiDAV's generic PROPFIND asks every member for every property through several method
calls and builds an element tree; on a folder of 10,000 files that is over a second. For
Depth 0/1 requests for all properties or a list of them, with no If header and no lock
anywhere on the way, this writes the same multistatus document straight from the vault's
listing (sizes, ETags and times come from the index: nothing is decrypted), the dead
properties of all members in one query, quota once per owner, the Nextcloud properties
(dav.nc_props) and the sharing ones (dav.share_props) per listing, also for folders
holding share mount points and inside mounts. Anything else (propname,
include, Depth infinity, locks present, unparsable bodies) falls through to WsgiDAV,
which stays the reference behaviour: litmus runs against both paths.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from urllib.parse import quote
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from wsgidav import util
from wsgidav.mw.base_mw import BaseMiddleware

from davserver.dav import nc_props, share_props
from davserver.dav.propcols import Column
from davserver.dav.resources import content_type
from davserver.vault.files import Node

_SAFE = "/" + "!*'()," + "$-_|."
_MAX_BODY = 1 << 20
_STATUS_OK = "HTTP/1.1 200 OK"
_STATUS_NOT_FOUND = "HTTP/1.1 404 Not Found"
_SUPPORTED_LOCK = (
    "<d:supportedlock><d:lockentry><d:lockscope><d:exclusive/></d:lockscope><d:locktype>"
    "<d:write/></d:locktype></d:lockentry><d:lockentry><d:lockscope><d:shared/></d:lockscope>"
    "<d:locktype><d:write/></d:locktype></d:lockentry></d:supportedlock>"
)
#: Namespaces of the Nextcloud properties, bound once in the multistatus element: a
#: listing asks for a dozen of them per entry.
_PREFIXES = {nc_props.OC: "oc", nc_props.NC: "nc"}
_MULTISTATUS = ('<?xml version="1.0" encoding="utf-8" ?>\n<d:multistatus xmlns:d="DAV:" '
                f'xmlns:oc="{nc_props.OC}" xmlns:nc="{nc_props.NC}">')
_FILE_PROPS = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype",
               "getlastmodified", "displayname", "getetag", "lockdiscovery", "supportedlock")
_DIR_PROPS = ("resourcetype", "creationdate", "quota-used-bytes", "quota-available-bytes",
              "getlastmodified", "displayname", "getetag", "lockdiscovery", "supportedlock")


class _Fallback(Exception):
    """Let WsgiDAV handle this request."""


@functools.lru_cache(maxsize=2048)
def _tags(name: str) -> tuple[str, str, str]:
    """(open, close, empty) element text of a Clark name: a listing asks the same few
    names for every entry."""
    if name.startswith("{DAV:}"):
        local = name[6:]
        return f"<d:{local}>", f"</d:{local}>", f"<d:{local}/>"
    ns, _, local = name[1:].partition("}")
    prefix = _PREFIXES.get(ns)
    if prefix is not None:  # bound on the multistatus element, not on every property
        return f"<{prefix}:{local}>", f"</{prefix}:{local}>", f"<{prefix}:{local}/>"
    decl = f'xmlns:x="{escape(ns, {chr(34): "&quot;"})}"'
    return f"<x:{local} {decl}>", f"</x:{local}>", f"<x:{local} {decl}/>"


def _clark_to_xml(name: str, inner: str | None) -> str:
    if inner:
        o, c, _e = _tags(name)
        return f"{o}{inner}{c}"
    return _tags(name)[2]


class FastPropfind(BaseMiddleware):
    def __init__(self, wsgidav_app, next_app, config):
        super().__init__(wsgidav_app, next_app, config)
        self.providers = config["davserver.providers"]
        self.locks = config["lock_storage"]
        self.db = config["davserver.instance"].db
        self.vault = config["davserver.instance"].dav_vault
        self.users = config["davserver.instance"].users
        self.shares = config["davserver.instance"].shares

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "PROPFIND":
            return self.next_app(environ, start_response)
        try:
            return self._propfind(environ, start_response)
        except _Fallback:
            return self.next_app(environ, start_response)

    # --- request -----------------------------------------------------------------------

    def _request(self, environ) -> list[str] | None:
        """Requested property names (None: allprop); _Fallback for anything else."""
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > _MAX_BODY or environ.get(
                "HTTP_TRANSFER_ENCODING"):
            raise _Fallback
        if int(length) == 0:
            return None
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = _Replay(body)
        try:
            root = fromstring(body, forbid_dtd=True)
        except (ParseError, DefusedXmlException, ValueError):
            raise _Fallback from None
        if root.tag != "{DAV:}propfind" or len(root) != 1:
            raise _Fallback
        child = root[0]
        if child.tag == "{DAV:}allprop" and len(child) == 0:
            return None
        if child.tag == "{DAV:}prop":
            return [p.tag for p in child]
        raise _Fallback

    def _resolve(self, environ):
        """(share prefix, provider, path in share): WsgiDAV has split them already."""
        provider = environ.get("wsgidav.provider")
        if provider not in self.providers:
            raise _Fallback
        return environ.get("SCRIPT_NAME", ""), provider, environ.get("PATH_INFO") or "/"

    def _locks_near(self, prefix: str) -> bool:
        return self.locks.has_lock_under(quote(prefix))

    def _propfind(self, environ, start_response):
        depth = environ.get("HTTP_DEPTH", "infinity")
        if depth not in ("0", "1") or "HTTP_IF" in environ:
            raise _Fallback
        user = environ.get("wsgidav.auth.user_name")
        prefix, provider, rel = self._resolve(environ)
        owner, home_rel = provider._split(rel, environ)
        if owner is None or owner != user:
            raise _Fallback  # users root and foreign homes: WsgiDAV answers those
        if self._locks_near(prefix):
            raise _Fallback
        names = self._request(environ)
        # As HomeProvider.get_resource_inst and list_members resolve it: a path in a
        # share mounted in the caller's tree, or their own (external storage mounted).
        mounts = self.shares.mounts(owner)
        target = self.shares.resolve(owner, home_rel, mounts)
        spath = target.spath if target.mount is not None else self.vault.resolve(
            owner, home_rel)
        node = self.vault.stat(spath)
        if node is None:
            raise _Fallback
        if node.is_dir and target.mount is None and mounts:
            node = self.shares.with_mounts_etag(owner, home_rel, node, mounts)
        entries = [(rel, node)]
        listing = node.is_dir and depth == "1"
        members: dict | None = None
        if listing:
            base = rel.rstrip("/")
            children = self.shares.listing(owner, home_rel, spath, mounts)
            entries += [(f"{base}/{n.name}", n) for n in children]
            members = ({name: t for name, t in self.shares.mounts_in(owner, home_rel, mounts)}
                       if target.mount is None and mounts else {})
        nodes = [n for _r, n in entries]
        dead = self._dead_props(spath, listing, [n.path for n in nodes[1:]
                                                 if n.path.rpartition("/")[0] != spath])
        quotas: dict[str, tuple[str, str | None]] = {}
        cols: dict[str, Column] = {}
        if names:
            cols.update(nc_props.columns(self.db, owner, names, nodes, listing))
            # After: the share-aware oc:permissions replaces the plain one.
            cols.update(share_props.listing_columns(self.shares, self.users, owner, names,
                                                    target, nodes, members, spath))
        parts = [_MULTISTATUS]
        plans: dict[tuple, Callable[..., str]] = {}
        for r, n in entries:
            quota = None
            if n.is_dir:
                who = n.path.split("/", 1)[0]
                quota = quotas.get(who) or quotas.setdefault(who, self._quota(who))
            d = dead.get(n.path, {})
            if names is None:
                parts.append(self._response(prefix, r, n, names, d, quota))
            else:
                parts.append(self._named(plans, names, prefix, r, n, d, quota, cols))
        parts.append("</d:multistatus>")
        body = "".join(parts).encode("utf-8")
        start_response("207 Multi-Status", [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Content-Length", str(len(body))), ("Date", util.get_rfc1123_time())])
        return [body]

    # --- response ----------------------------------------------------------------------

    def _dead_props(self, spath: str, children: bool,
                    others: list[str]) -> dict[str, dict[str, str]]:
        """Dead properties of ``spath`` (and its members), and of ``others``: entries
        listed from elsewhere (share mount points)."""
        out: dict[str, dict] = {}
        for i in range(0, len(others), 500):
            batch = others[i:i + 500]
            for path, name, value in self.db.query(
                    "SELECT path, name, value FROM props WHERE path IN "
                    f"({','.join('?' * len(batch))})", tuple(batch)):
                out.setdefault(path, {})[name] = value
        if children:
            rows = self.db.query(
                "SELECT path, name, value FROM props WHERE path = ? OR "
                "substr(path, 1, length(?) + 1) = ? || '/'", (spath, spath, spath))
        else:
            rows = self.db.query("SELECT path, name, value FROM props WHERE path = ?", (spath,))
        for path, name, value in rows:
            out.setdefault(path, {})[name] = value
        for props in out.values():  # XML text, decoded once for every use below
            for name, value in props.items():
                if isinstance(value, bytes):
                    props[name] = value.decode("utf-8")
        return out

    def _quota(self, owner: str) -> tuple[str, str | None]:
        used = self.vault.usage(owner)
        q = self.users.quota(owner)
        return str(used), (None if q is None else str(max(0, q - used)))

    def _live(self, rel: str, n: Node, quota) -> dict[str, str | None]:
        """Live property values as inner XML ('' for empty elements)."""
        created, modified = _times(n.mtime)
        v: dict[str, str | None] = {
            "resourcetype": "<d:collection/>" if n.is_dir else "",
            "creationdate": created,
            "getlastmodified": modified,
            "displayname": _escape(rel.rstrip("/").rsplit("/", 1)[-1]),
            "getetag": _escape(n.etag),
            "lockdiscovery": "",
            "supportedlock": None,  # written whole below
        }
        if n.is_dir:
            v["quota-used-bytes"] = quota[0]
            if quota[1] is not None:
                v["quota-available-bytes"] = quota[1]
        else:
            v["getcontentlength"] = str(n.size)
            v["getcontenttype"] = _content_type(n.name)
        return v

    def _response(self, prefix, rel, n: Node, names, dead, quota, computed=None,
                  shared=None) -> str:
        href = _href(prefix + rel)
        if n.is_dir and not href.endswith("/"):
            href += "/"
        if names is None and not dead and not n.is_dir:
            return self._file_allprop(href, rel, n)  # the hot case, one template
        live = self._live(rel, n, quota)
        found, missing = [], []
        order = names if names is not None else [
            "{DAV:}" + p for p in (_DIR_PROPS if n.is_dir else _FILE_PROPS)
            if p in live] + list(dead)
        for name in order:
            if name == "{DAV:}supportedlock":
                found.append(_SUPPORTED_LOCK)
            elif name.startswith("{DAV:}") and name[6:] in live:
                found.append(_clark_to_xml(name, live[name[6:]]))
            elif shared and name in shared:  # before computed: share-aware permissions
                found.append(_clark_to_xml(name, shared[name]))
            elif computed and name in computed:
                found.append(_clark_to_xml(name, computed[name]))
            elif name in dead:
                value = dead[name]
                found.append(value.decode("utf-8") if isinstance(value, bytes) else value)
            else:
                missing.append(_clark_to_xml(name, None))
        return _response_xml(href, found, missing)

    def _named(self, plans, names, prefix, rel, n: Node, dead, quota,
               cols: dict[str, Column]) -> str:
        """One response to a request naming its properties, from a renderer made per
        kind of entry (a listing has few kinds: files, folders, those with dead
        properties), so each entry costs one call, not a walk over the names."""
        # The columns are the same for every entry of a request: only dead properties
        # and the kind of entry vary the renderer.
        key = (n.is_dir, quota is not None and quota[1] is not None,
               tuple(dead) if dead else ())
        render = plans.get(key)
        if render is None:
            render = plans[key] = _named_plan(names, n.is_dir, key[1], dead, cols)
        href = _href(prefix + rel)
        if n.is_dir and not href.endswith("/"):
            href += "/"
        return render(href, rel, n, quota, dead)

    @staticmethod
    def _file_allprop(href: str, rel: str, n: Node) -> str:
        created, modified = _times(n.mtime)
        return (
            f"<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:resourcetype/>"
            f"<d:creationdate>{created}</d:creationdate>"
            f"<d:getcontentlength>{n.size}</d:getcontentlength>"
            f"<d:getcontenttype>{_content_type(n.name)}</d:getcontenttype>"
            f"<d:getlastmodified>{modified}</d:getlastmodified>"
            f"<d:displayname>{_escape(rel.rsplit('/', 1)[-1])}</d:displayname>"
            f"<d:getetag>{_escape(n.etag)}</d:getetag><d:lockdiscovery/>{_SUPPORTED_LOCK}"
            f"</d:prop><d:status>{_STATUS_OK}</d:status></d:propstat></d:response>")


#: Live property values as inner XML, as Python expressions of (rel, n, quota, t) for the
#: renderers _named_plan makes (t: the entry's (creationdate, getlastmodified) text).
_LIVE = {
    "creationdate": "t[0]",
    "getlastmodified": "t[1]",
    "displayname": "_escape(rel.rstrip('/').rsplit('/', 1)[-1])",
    "getetag": "_escape(n.etag)",
    "quota-used-bytes": "quota[0]",
    "quota-available-bytes": "quota[1]",
    "getcontentlength": "str(n.size)",
    "getcontenttype": "_content_type(n.name)",
}


def _named_plan(names, is_dir: bool, available: bool, dead,
                cols: dict[str, Column]) -> Callable[..., str]:
    """A function (href, rel, n, quota, dead) -> one <d:response>
    answering ``names`` for one kind of entry, in the order and with the statuses
    FastPropfind._response would give.

    Made from source text (one f-string) so that a 10,000-entry listing pays one call
    per entry, with each value an inline expression, instead of a walk over the names
    or a call per value. Only fixed text and the names of values go into the source;
    property names and fixed XML are passed in as constants, never spliced into code."""
    live = set(_DIR_PROPS if is_dir else _FILE_PROPS)
    if is_dir and not available:
        live.discard("quota-available-bytes")
    consts: dict[str, object] = {"_escape": _escape, "_content_type": _content_type,
                                 "_times": _times}
    found: list[str] = []  # f-string pieces
    missing: list[str] = []

    def const(value: object) -> str:
        """A replacement field naming ``value``, which the renderer gets as a global."""
        name = f"c{len(consts)}"
        consts[name] = value
        return "{" + name + "}"

    for name in names:
        if name == "{DAV:}supportedlock":
            found.append(const(_SUPPORTED_LOCK))
        elif name.startswith("{DAV:}") and name[6:] in live:
            local = name[6:]
            if local == "resourcetype":
                found.append(const(_clark_to_xml(name, "<d:collection/>" if is_dir else "")))
            elif local == "lockdiscovery":
                found.append(const(_clark_to_xml(name, None)))
            else:
                o, c, _e = _tags(name)
                found.append(const(o) + "{" + _LIVE[local] + "}" + const(c))
        elif name in cols:
            col = cols[name]
            fixed = col.folder if is_dir else col.file
            if col.by_path is None:  # the same for every entry of this kind
                found.append(const(_clark_to_xml(name, fixed)))
            else:
                o, c, _e = _tags(name)
                values, default = const(col.by_path)[1:-1], const(fixed)[1:-1]
                found.append(const(o) + "{" + f"{values}.get(n.path, {default})" + "}" + const(c))
        elif name in dead:
            found.append("{dead[" + const(name)[1:-1] + "]}")
        else:
            missing.append(const(_clark_to_xml(name, None)))
    body = _response_xml("{href}", found, missing)
    src = ("def render(href, rel, n, quota, dead):\n"
           + ("    t = _times(n.mtime)\n" if "{t[" in body else "")
           + f"    return f{body!r}\n")
    scope = dict(consts)
    exec(compile(src, "<propfind renderer>", "exec"), scope)  # noqa: S102
    return scope["render"]


def _response_xml(href: str, found: list[str], missing: list[str]) -> str:
    """One <d:response>: the found properties with 200, the missing ones with 404."""
    out = [f"<d:response><d:href>{href}</d:href>"]
    if found:
        out.append(f"<d:propstat><d:prop>{''.join(found)}</d:prop>"
                   f"<d:status>{_STATUS_OK}</d:status></d:propstat>")
    if missing:
        out.append(f"<d:propstat><d:prop>{''.join(missing)}</d:prop>"
                   f"<d:status>{_STATUS_NOT_FOUND}</d:status></d:propstat>")
    out.append("</d:response>")
    return "".join(out)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc1123(g: time.struct_time) -> str:
    """Same text as email.utils.formatdate(usegmt=True), several times faster."""
    return (f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year:04d} "
            f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT")


def _rfc3339(g: time.struct_time) -> str:
    return (f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}T"
            f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}Z")


@functools.lru_cache(maxsize=4096)
def _escaped_type(ctype: str) -> str:
    return escape(ctype)


def _content_type(name: str) -> str:
    return _escaped_type(content_type(name))


def _escape(text: str) -> str:
    """saxutils.escape, skipped for the usual text that has nothing to escape."""
    return escape(text) if ("&" in text or "<" in text or ">" in text) else text


#: Characters quote() leaves alone with safe=_SAFE: such a path is its own href.
_AS_IS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
                   + _SAFE)


def _href(path: str) -> str:
    return path if _AS_IS.issuperset(path) else quote(path, safe=_SAFE)


@functools.lru_cache(maxsize=8192)
def _times_of_second(second: int) -> tuple[str, str]:
    g = time.gmtime(second)
    return _rfc3339(g), rfc1123(g)


def _times(mtime: float) -> tuple[str, str]:
    """(creationdate, getlastmodified) text; files of one folder often share a second."""
    return _times_of_second(int(mtime)) if mtime >= 0 else (
        _rfc3339(time.gmtime(mtime)), rfc1123(time.gmtime(mtime)))


class _Replay:
    """A consumed request body, offered again to WsgiDAV when we fall back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = len(self._data) - self._pos
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk

    def readline(self, *args) -> bytes:
        return self.read()
