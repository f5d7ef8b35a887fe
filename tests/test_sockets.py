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


def _serve(app, monkeypatch):
    """A cheroot server with davserver's connection class; counts hand-backs of idle
    keep-alive connections to cheroot's selector."""
    from cheroot import connections, wsgi

    handed_back = []
    real_put = connections.ConnectionManager.put
    monkeypatch.setattr(connections.ConnectionManager, "put",
                        lambda self, conn: handed_back.append(conn) or real_put(self, conn))
    srv = wsgi.Server(("127.0.0.1", 0), app, numthreads=2)
    srv.ConnectionClass = sockets.Connection
    srv.prepare()
    threading.Thread(target=srv.serve, daemon=True).start()
    return srv, handed_back


def _hello(environ, start_response):
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _get_many(port: int, paths, pause: float = 0.0) -> list[bytes]:
    import http.client
    import time

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    for p in paths:
        c.request("GET", p)
        out.append(c.getresponse().read())
        time.sleep(pause)
    c.close()
    return out


def test_back_to_back_requests_stay_with_their_worker(monkeypatch):
    """A client's next request, sent at once, is served by the worker that answered the
    last one; the connection goes back to cheroot's selector only when the client
    pauses. Every answer is the right one either way."""
    monkeypatch.setattr(sockets, "NEXT_REQUEST_WAIT", 1.0)  # far above any client's turn
    srv, handed_back = _serve(_hello, monkeypatch)
    try:
        port = srv.bind_addr[1]
        paths = [f"/r{i}" for i in range(30)]
        assert _get_many(port, paths) == [p.encode() for p in paths]
        assert len(handed_back) <= 1  # 29 without the wait (one per request but the last)
        handed_back.clear()
        monkeypatch.setattr(sockets, "NEXT_REQUEST_WAIT", 0.05)
        assert _get_many(port, paths[:3], pause=0.3) == [p.encode() for p in paths[:3]]
        assert len(handed_back) == 3
    finally:
        srv.stop()


def test_no_waiting_when_turned_off(monkeypatch):
    monkeypatch.setattr(sockets, "NEXT_REQUEST_WAIT", 0)
    srv, handed_back = _serve(_hello, monkeypatch)
    try:
        paths = [f"/r{i}" for i in range(10)]
        assert _get_many(srv.bind_addr[1], paths) == [p.encode() for p in paths]
        assert len(handed_back) >= 9
    finally:
        srv.stop()
