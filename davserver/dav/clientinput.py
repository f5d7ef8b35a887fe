"""The request body stream, with a client that stops sending turned into a clear 408.

cheroot raises the socket's own TimeoutError (or, on the next read, "cannot read from
timed out object") when a client goes silent mid-body, which every layer above took for
a bug: a logged traceback and a 500 for a client that is not listening anyway. Here a
failed read becomes :class:`ClientStopped`, one of our errors, so the upload is aborted
like any short body and the request ends with 408, and the stream is marked broken so
the server closes the connection instead of trying to read the rest (dav.sockets).
"""

from __future__ import annotations

from davserver.errors import DavServerError

#: Attribute set on cheroot's body reader once a read from the client failed.
BROKEN = "davserver_input_broken"


class ClientStopped(DavServerError):
    """the client stopped sending the request body; nothing was stored"""

    HTTP_STATUS = 408
    EXIT_CODE = 1


class BadFraming(DavServerError):
    """the request body is not valid chunked encoding; nothing was stored"""

    HTTP_STATUS = 400
    EXIT_CODE = 1


class ClientInput:
    """Wraps ``wsgi.input``; everything but the reads is passed through."""

    def __init__(self, inner) -> None:
        self._inner = inner

    @property
    def inner(self):
        """cheroot's reader, for a caller that receives into its own buffer."""
        return self._inner

    def guarded(self, fn, *args):
        """``fn(*args)`` with a failed read from the client turned into our errors."""
        return self._call(fn, *args)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError:  # TimeoutError, ConnectionResetError, "timed out object"
            self._broken()
            raise ClientStopped() from None
        except ValueError:  # cheroot's chunked reader: bad sizes, missing CRLF, cut short
            self._broken()
            raise BadFraming() from None

    def _broken(self) -> None:
        try:
            setattr(self._inner, BROKEN, True)
        except AttributeError:
            pass

    def read(self, *args):
        return self._call(self._inner.read, *args)

    def readline(self, *args):
        return self._call(self._inner.readline, *args)

    def readlines(self, *args):
        return self._call(self._inner.readlines, *args)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name):
        return getattr(self._inner, name)
