"""The response writer that skips cheroot's copies must still send every byte in order."""

from __future__ import annotations

import os
import socket
import threading

from cheroot import makefile

from davserver.dav import sockets


def _drain(sock: socket.socket, out: bytearray) -> None:
    while True:
        b = sock.recv(1 << 20)
        if not b:
            return
        out += b


def test_direct_writer_sends_small_and_large_writes_in_order(monkeypatch):
    buffered = []
    real = makefile.BufferedWriter.write
    monkeypatch.setattr(makefile.BufferedWriter, "write",
                        lambda self, b: buffered.append(len(b)) or real(self, b))
    a, b = socket.socketpair()
    a.settimeout(10)  # cheroot's sockets have a timeout: sends may be partial
    got = bytearray()
    reader = threading.Thread(target=_drain, args=(b, got))
    reader.start()
    w = sockets._make_file(a, "wb", 8192)
    assert isinstance(w, sockets.DirectWriter)
    parts = [b"HTTP/1.1 200 OK\r\n\r\n", os.urandom(3 << 20), b"x" * 100,
             memoryview(os.urandom(sockets.DIRECT_MIN))]
    for p in parts:
        assert w.write(p) == len(p)
    w.close()
    a.close()
    reader.join(10)
    assert bytes(got) == b"".join(bytes(p) for p in parts)
    assert w.bytes_written == sum(len(p) for p in parts)
    # only the two small writes took cheroot's copying path
    assert buffered == [19, 100]


def test_reader_side_is_cheroots():
    a, b = socket.socketpair()
    try:
        assert not isinstance(sockets._make_file(a, "rb", 8192), sockets.DirectWriter)
    finally:
        a.close()
        b.close()
