"""Single byte ranges for the direct GET path: which requests it may answer, and how.

Resumed downloads, multi-stream clients (rclone ``--multi-thread-streams``), browsers and
video players send one range per request. Only the unambiguous forms are taken here:

- ``bytes=a-b`` with a <= b, ``bytes=a-`` (a inside the file), ``bytes=-n`` with n > 0;
- ``If-Range`` with an entity tag or an HTTP date, judged as WsgiDAV judges it.

Anything else (several ranges, a start past the end, malformed or reversed specs, an empty
file) goes to WsgiDAV, which stays the reference for those answers (416, or its own way of
reading odd specs), so the two paths never disagree on a form only one of them handles.
"""

from __future__ import annotations

import re

from wsgidav import util

from davserver.dav import range_guard

_FROM = re.compile(r"bytes=(\d+)-(\d*)")
_SUFFIX = re.compile(r"bytes=-(\d+)")

#: What :func:`plan` answers: None = not for the direct path; FULL = send the whole file
#: with 200; otherwise (first byte, last byte) to send with 206.
FULL = (-1, -1)


def plan(environ: dict, size: int, etag: str, mtime: float) -> tuple[int, int] | None:
    """The part of a ``size``-byte file to send for this request's Range/If-Range."""
    spec = environ.get("HTTP_RANGE")
    if spec is None:
        return FULL  # If-Range without Range means nothing (RFC 9110 13.1.5)
    if size <= 0:
        return None
    if_range = environ.get("HTTP_IF_RANGE")
    if if_range is not None and not _if_range_holds(if_range, etag, mtime):
        return FULL
    spec = spec.strip()
    if not range_guard.usable(spec):
        return None  # WsgiDAV's path drops it (range_guard) and sends the whole file
    m = _FROM.fullmatch(spec)
    if m:
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else size - 1
        if first >= size or last < first:
            return None
        return first, min(last, size - 1)
    m = _SUFFIX.fullmatch(spec)
    if m and int(m.group(1)) > 0:
        return max(0, size - int(m.group(1))), size - 1
    return None


def _if_range_holds(value: str, etag: str, mtime: float) -> bool:
    """WsgiDAV's reading: an HTTP date must equal the whole seconds of Last-Modified,
    anything else is compared as an entity tag with quotes and blanks stripped."""
    secs = util.parse_time_string(value)
    if secs:
        return int(mtime) == secs
    return value.strip('" ') == etag
