"""Socket writes without cheroot's copies.

cheroot's response writer appends every block to a bytearray and then sends
``bytes(buffer)``: two copies of each block in user space, and on a partial send the rest
is copied again. Serving a large file on a 2-core machine is bound by CPU, and those
copies cost about as much as decrypting the block. Large blocks are therefore handed
to ``socket.sendall`` as they are (it loops over partial sends in C, without copying);
small writes (status line, headers) keep cheroot's path. TLS connections use the SSL
adapter's own file objects and are not affected.
"""

from __future__ import annotations

import select

from cheroot import makefile, server

from davserver.dav import balance
from davserver.dav.clientinput import BROKEN

#: Blocks at least this large are sent straight from the caller's buffer.
DIRECT_MIN = 16384
#: Request line plus headers, in bytes: more is answered 413 (cheroot's default is no
#: limit, so a client could make a worker buffer headers until memory runs out).
MAX_HEADER_BYTES = 64 * 1024
#: Seconds a worker thread waits for the next request on a connection it just answered.
NEXT_REQUEST_WAIT = 0.002


class DirectWriter(makefile.StreamWriter):
    def __init__(self, sock, mode: str = "wb", bufsize: int = -1) -> None:
        super().__init__(sock, mode, bufsize)
        self._sock = sock

    def write(self, b) -> int:
        if len(b) < DIRECT_MIN or self._write_buf or isinstance(b, str):
            return super().write(b)
        self._checkClosed()
        with self._write_lock:
            self._sock.sendall(b)
        self.bytes_written += len(b)
        return len(b)


def _make_file(sock, mode: str = "r", bufsize: int = -1):
    if "r" in mode:
        return makefile.MakeFile(sock, mode, bufsize)
    return DirectWriter(sock, mode, bufsize)


class StrictHeaderReader(server.HeaderReader):
    """cheroot's header parser, refusing framing it would otherwise guess at.

    cheroot keeps the last of two Content-Length headers and accepts a signed one
    ("-5" stores an empty file); a proxy in front may have used the other value, which is
    how requests are smuggled. Both are refused (400, and the connection is closed).
    """

    def __call__(self, rfile, hdict=None):
        seen: dict[bytes, list[bytes]] = {}

        class Recording(dict):
            def __setitem__(self, k, v):
                seen.setdefault(k, []).append(v)
                super().__setitem__(k, v)

        parsed = super().__call__(rfile, Recording())
        lengths = seen.get(b"Content-Length", [])
        if len(set(lengths)) > 1:
            raise ValueError("conflicting Content-Length headers")
        if lengths and not lengths[0].isdigit():
            raise ValueError("malformed Content-Length header")
        if hdict is None:
            hdict = {}
        hdict.update(parsed)
        return hdict


class Request(server.HTTPRequest):
    """cheroot's request with strict framing: a request with both Content-Length and
    Transfer-Encoding is refused (RFC 9112 6.1 allows either; refusing cannot be
    smuggled past). cheroot's own refusals (501 for an unknown Transfer-Encoding, for
    one) always carry a line of text, so a client learns why."""

    header_reader = StrictHeaderReader()

    def read_request_headers(self) -> bool:
        ok = super().read_request_headers()
        if ok and b"Content-Length" in self.inheaders and self.chunked_read:
            self.simple_response("400 Bad Request",
                                 "both Content-Length and Transfer-Encoding were sent")
            ok = False
        if not ok:
            self.close_connection = True
        return ok

    def send_headers(self) -> None:
        # cheroot reads the rest of an unread body before answering; from a client whose
        # reads already failed that raises again: close the connection instead.
        if getattr(self.rfile, BROKEN, False):
            self.close_connection = True
        super().send_headers()

    def simple_response(self, status, msg="") -> None:
        super().simple_response(status, msg or f"{status}\n")


class Connection(server.HTTPConnection):
    """cheroot's connection with DirectWriter for plain (non-TLS) sockets, and a short
    wait for the client's next request.

    After each answer cheroot hands a keep-alive connection back to its selector thread,
    which wakes when the next request arrives and queues it for a worker: two thread
    hand-offs, a selector registration and a removal per request, about 70 us of a
    0.5 ms small-file GET here. Sync clients send their next request within a fraction
    of a millisecond, so the worker that answered waits up to NEXT_REQUEST_WAIT for it
    and serves it directly. It does not wait while other connections are queued for a
    worker or the server is stopping, so a busy server loses no capacity to it.
    """

    RequestHandlerClass = Request

    def __init__(self, srv, sock, makefile_=makefile.MakeFile) -> None:
        super().__init__(srv, sock, _make_file if makefile_ is makefile.MakeFile
                         else makefile_)
        balance.counted_open(self)

    def close(self) -> None:
        balance.counted_close(self)
        super().close()

    def communicate(self) -> bool:
        keep = super().communicate()
        while keep and self._next_request_soon():
            keep = super().communicate()
        return keep

    def _next_request_soon(self) -> bool:
        if self.rfile.has_data():
            return True
        if not self.server.ready or NEXT_REQUEST_WAIT <= 0 or self.server.requests.qsize:
            return False
        p = select.poll()
        p.register(self.socket, select.POLLIN)
        return bool(p.poll(NEXT_REQUEST_WAIT * 1000))
