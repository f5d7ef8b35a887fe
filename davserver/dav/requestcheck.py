"""Request paths and the Destination header checked before anything resolves them.

WsgiDAV decodes PATH_INFO as UTF-8 deep inside its stack and answers a path that is not
UTF-8 (an overlong ``%c0%ae``, a stray ``%ff``) with an exception cheroot turns into an
empty 500; a NUL byte or a name longer than the file system allows fails later still, in
the storage layer. Refusing them here, with one line saying why, keeps every layer
behind this one free of those cases. The same rules apply to the target of COPY/MOVE.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes, urlsplit

#: Bytes in one file or folder name: what Linux file systems (and S3 keys per segment in
#: practice) allow; Nextcloud refuses longer names too.
MAX_NAME_BYTES = 255


def path_problem(raw: bytes) -> str | None:
    """Why the decoded request path ``raw`` cannot name a file, or None if it can."""
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the request path is not valid UTF-8"
    if "\x00" in path:
        return "the request path contains a NUL character"
    for name in path.split("/"):
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            return f"a file or folder name is longer than {MAX_NAME_BYTES} bytes"
    return None


_IF_TOKEN = re.compile(r'\s*(<[^<>]*>|\[\s*(?:W/)?"[^"]*"\s*\]|Not\b|\(|\))', re.I)


def if_header_ok(value: str) -> bool:
    """RFC 4918 10.4: a sequence of lists, each "(" conditions ")" where a condition is
    [Not] <state token> or [Not] [ETag], optionally tagged with a <resource>.

    WsgiDAV reads the header with a lenient pattern and ignores what it does not
    understand, so a garbled If (a client bug, or a probe) would let a PUT through
    unconditionally; refusing it is what the RFC asks (400)."""
    pos, lists, in_list, conditions, negated, tagged = 0, 0, False, 0, False, False
    while pos < len(value.rstrip()):
        m = _IF_TOKEN.match(value, pos)
        if not m:
            return False
        tok, pos = m.group(1), m.end()
        if tok == "(":
            if in_list:
                return False
            in_list, conditions, tagged = True, 0, False
        elif tok == ")":
            if not in_list or not conditions or negated:
                return False
            in_list, lists = False, lists + 1
        elif tok.lower() == "not":
            if not in_list or negated:
                return False
            negated = True
        elif tok.startswith("<") and not in_list:
            if tagged:
                return False
            tagged = True  # a resource tag: a list must follow
        elif in_list:
            conditions, negated = conditions + 1, False
        else:
            return False
    return lists > 0 and not in_list and not tagged


def refusal(environ: dict) -> str | None:
    """The reason to answer 400 to this request, or None to serve it."""
    if "HTTP_HOST" not in environ and environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
        # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host;
        # the URLs it builds (Location, hrefs for clients that compare them) need one.
        return "an HTTP/1.1 request must carry a Host header"
    # PEP 3333: PATH_INFO holds the undecoded bytes as latin-1 code points.
    problem = path_problem(environ.get("PATH_INFO", "").encode("latin-1", "replace"))
    if problem:
        return problem
    dest = environ.get("HTTP_DESTINATION")
    if dest is not None:
        try:
            target = urlsplit(dest)
        except ValueError:
            return "the Destination header is not a URL"
        problem = path_problem(unquote_to_bytes(target.path.encode("latin-1", "replace")))
        if problem:
            return problem.replace("request path", "Destination")
    if_header = environ.get("HTTP_IF")
    if if_header is not None and not if_header_ok(if_header):
        return "malformed If header (RFC 4918 section 10.4)"
    return None
