"""XML request bodies (PROPFIND, PROPPATCH, LOCK) checked once, before any handler.

WsgiDAV parses bodies with defusedxml, which stops entity tricks but not size or depth:
an 8 MiB attribute is read into memory and a PROPPATCH value nested 100,000 deep is
stored and then fails to serialise (a RecursionError reported as a per-property 500),
while a LOCK whose body has the wrong root element is granted as if it were right. This
layer reads the body (at most MAX_BYTES; a chunked one too, which WsgiDAV would ignore),
runs it through expat once with no DTD allowed and a depth limit, checks the root element
the method needs, and hands the same bytes on. Refusals are 413 (too large) or 400 with
one line saying what was wrong.
"""

from __future__ import annotations

import io
from xml.parsers import expat

from wsgidav.mw.base_mw import BaseMiddleware

from davserver.dav.errors import plain_text

#: Largest XML body accepted; real clients send a few KiB at most.
MAX_BYTES = 1 << 20
#: Deepest element nesting accepted (a PROPPATCH value is XML of the client's choosing).
MAX_DEPTH = 64
#: The root element each method's body must have (expat spells it "namespace local").
ROOTS = {"PROPFIND": "DAV: propfind", "PROPPATCH": "DAV: propertyupdate",
         "LOCK": "DAV: lockinfo"}


class _Refused(Exception):
    pass


def _read(environ) -> bytes:
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked:
        body = environ["wsgi.input"].read(MAX_BYTES + 1)
    elif not length:
        return b""
    elif not length.isdigit():
        raise _Refused("400 Bad Request", "invalid Content-Length")
    elif int(length) > MAX_BYTES:
        raise _Refused("413 Content Too Large",
                       f"XML request body larger than {MAX_BYTES} bytes")
    else:
        body = environ["wsgi.input"].read(int(length))
    if len(body) > MAX_BYTES:
        raise _Refused("413 Content Too Large",
                       f"XML request body larger than {MAX_BYTES} bytes")
    return body


def check(method: str, body: bytes) -> None:
    """Raise _Refused(status, reason) unless ``body`` is acceptable for ``method``."""
    parser = expat.ParserCreate(namespace_separator=" ")
    depth = 0
    root: list[str] = []

    def start(name, _attrs):
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise _Refused("400 Bad Request", f"XML nested deeper than {MAX_DEPTH} levels")
        if not root:
            root.append(name)

    def end(_name):
        nonlocal depth
        depth -= 1

    def doctype(*_args):
        raise _Refused("400 Bad Request", "XML with a document type (DTD) is not accepted")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = doctype
    try:
        parser.Parse(body, True)
    except expat.ExpatError as e:
        raise _Refused("400 Bad Request",
                       f"malformed XML body: {expat.ErrorString(e.code)}") from None
    if root and root[0] != ROOTS[method]:
        want, got = _clark(ROOTS[method]), _clark(root[0])
        raise _Refused("400 Bad Request", f"{method} body must be a {want} element, "
                                          f"not {got}")


def _clark(expat_name: str) -> str:
    ns, _, local = expat_name.rpartition(" ")
    return f"{{{ns}}}{local}" if ns else f"{local} (no namespace)"


class XmlBodies(BaseMiddleware):
    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        if method not in ROOTS:
            return self.next_app(environ, start_response)
        try:
            body = _read(environ)
            if body.strip():
                check(method, body)
        except _Refused as e:
            status, reason = e.args
            return plain_text(start_response, status, reason)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgidav.all_input_read"] = 1
        return self.next_app(environ, start_response)
