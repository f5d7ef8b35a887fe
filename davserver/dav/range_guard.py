"""Which Range headers are handed to WsgiDAV's parser, and which are ignored.

WsgiDAV's ``util.obtain_content_ranges`` converts every digit string with ``int()`` (a
number of more than 4,300 digits raises ValueError: a 500) and merges the ranges in
quadratic time (5,000 one-byte ranges cost seconds of CPU per request), while it serves
only the first range anyway. RFC 9110 (14.2) lets a server ignore a Range header, and
answering 200 with the whole file is what every client handles, so a header that is not
a plain ``bytes=`` list of at most :data:`MAX_RANGES` valid ranges with numbers of at
most :data:`MAX_DIGITS` digits is dropped before WsgiDAV sees it (found by
tests/test_fuzz_parsers.py).
"""

from __future__ import annotations

import re

#: More ranges than any real client sends (players and sync clients send one).
MAX_RANGES = 16
#: Digits of one position: 10^18 bytes is beyond any file this server stores.
MAX_DIGITS = 18

_SPEC = rf"(?:\d{{1,{MAX_DIGITS}}}-\d{{0,{MAX_DIGITS}}}|-\d{{1,{MAX_DIGITS}}})"
_HEADER = re.compile(rf"bytes[ \t]*=[ \t]*{_SPEC}(?:[ \t]*,[ \t]*{_SPEC}){{0,{MAX_RANGES - 1}}}"
                     r"[ \t]*", re.ASCII)


_ONE = re.compile(r"(\d*)-(\d*)", re.ASCII)


def usable(value: str) -> bool:
    """True if the Range header ``value`` is one WsgiDAV may parse safely and reads right.

    Besides the syntax: every ``first-last`` needs first <= last and every suffix ``-n``
    needs n > 0. WsgiDAV would read ``1-0`` as the suffix ``-0`` and answer an empty 206
    ``bytes 2-1/2``; RFC 9110 (14.1.1) calls such a range invalid, and a header with one
    is ignored as a whole. Blanks around the value are optional white space (RFC 9110 5.6.3).
    """
    value = value.strip(" \t")
    if _HEADER.fullmatch(value) is None:
        return False
    for first, last in _ONE.findall(value):
        if first and last and int(first) > int(last):
            return False
        if not first and int(last) == 0:
            return False
    return True


def drop_unusable(environ: dict, size: int) -> None:
    """Remove a Range header that is to be ignored (see the module docstring) from a
    request for a file of ``size`` bytes. Every range of an empty file is one WsgiDAV
    would answer with ``bytes 0--1/0``: the (empty) file is sent instead."""
    value = environ.get("HTTP_RANGE")
    if value is not None and (size == 0 or not usable(value)):
        del environ["HTTP_RANGE"]
