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

#: Blocks at least this large are sent straight from the caller's buffer.
DIRECT_MIN = 16384
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
