"""Direct PUT bodies received from cheroot's own reader (readinto1 into one buffer).

The in-process tests elsewhere hand WsgiDAV a BytesIO; here the body comes through the
reader cheroot gives a real request (its known-length wrapper over a buffered socket
file), at sizes around its internal buffer and the receive block, so every split of
buffered and directly received bytes is crossed."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from cheroot.makefile import MakeFile
from cheroot.server import KnownLengthRFile

from davserver.dav import fastfiles
from tests.test_fastfiles import _request, apps  # noqa: F401 - the module's fixture

BUF = 8192  # cheroot's reader buffer (io.DEFAULT_BUFFER_SIZE)
SIZES = [0, 1, BUF - 1, BUF, BUF + 1, 3 * BUF + 5, fastfiles.RECEIVE_BLOCK - 1,
         fastfiles.RECEIVE_BLOCK + BUF + 3, 2 * fastfiles.RECEIVE_BLOCK + 17]


def _cheroot_body(data: bytes, declared: int, prefix: int = 0):
    """A KnownLengthRFile as cheroot builds it, fed over a socket pair by a thread that
    sends in uneven pieces (``prefix`` bytes first, as if they came with the headers)."""
    a, b = socket.socketpair()
    rfile = MakeFile(b, "rb", BUF)

    def send():
        view, pos = memoryview(data), 0
        for step in [prefix] + [7919, 65536, 1000, 300_001] * 100:
            if pos >= len(data):
                break
            a.sendall(view[pos:pos + max(1, step)])
            pos += max(1, step)
        a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    if prefix:
        rfile.peek(1)  # the reader's buffer already holds the first bytes
    return KnownLengthRFile(rfile, declared), (a, b, t)


@pytest.mark.parametrize("size", SIZES)
def test_body_from_cheroot_reader_is_stored_exactly(apps, size):  # noqa: F811
    fast, _, inst = apps
    data = os.urandom(size)
    body, (a, b, t) = _cheroot_body(data, size, prefix=min(size, 100))
    assert fastfiles._direct_reader(body)
    try:
        status, _, _ = _request(fast, "PUT", f"/remote.php/dav/files/alice/dir/rx{size}",
                                body, CONTENT_LENGTH=str(size))
    finally:
        t.join()
        a.close()
        b.close()
    assert status.startswith("201") and inst.vault.read_all(f"alice/dir/rx{size}") == data
    assert body.remaining == 0  # cheroot sees the body consumed (keep-alive stays usable)


def test_short_body_from_cheroot_reader_stores_nothing(apps):  # noqa: F811
    fast, _, inst = apps
    data = os.urandom(fastfiles.RECEIVE_BLOCK + 5)
    body, (a, b, t) = _cheroot_body(data, len(data) + 10)
    try:
        status, _, page = _request(fast, "PUT", "/remote.php/dav/files/alice/dir/rxshort",
                                   body, CONTENT_LENGTH=str(len(data) + 10))
    finally:
        t.join()
        a.close()
        b.close()
    assert status.startswith("400") and b"nothing was stored" in page
    assert inst.vault.stat("alice/dir/rxshort") is None
