"""The WSGI application and the cheroot server around it.

Request path, outermost first:

    Guard        status.php, maintenance 503, last-resort 500 without a traceback
    Nextcloud    OCS core, login flow v2, chunked uploads, PUT checksums and headers
                 (dav.nextcloud)
    FastFiles    whole-file GET/HEAD/PUT in the caller's home, before WsgiDAV's layers
    WsgiDAV      ErrorPrinter -> BasicAuth, FastPropfind (ours) -> dir browser
                 -> RequestResolver
    HomeProvider resources -> vault
"""

from __future__ import annotations

import json
import logging
import os
import socket

from cheroot import wsgi
from wsgidav import util as wsgidav_util
from wsgidav.dir_browser import WsgiDavDirBrowser
from wsgidav.error_printer import ErrorPrinter
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from davserver import __version__
from davserver.dav import balance, sockets
from davserver.dav.basicauth import BasicAuth
from davserver.dav.clientinput import ClientInput
from davserver.dav.errors import KnownErrors, plain_text
from davserver.dav.fastfiles import FastFiles
from davserver.dav.locks import DbLockStorage
from davserver.dav.nextcloud import NextcloudLayer
from davserver.dav.ocs_shares import PREFIXES as OCS_SHARE_PREFIXES
from davserver.dav.ocs_shares import OcsSharesApp
from davserver.dav.propfind import FastPropfind
from davserver.dav.provider import HomeProvider
from davserver.dav.requestcheck import refusal
from davserver.dav.resources import OPENED_KEY
from davserver.dav.share_guard import SharePermissions
from davserver.dav.xmlbody import XmlBodies
from davserver.instance import Instance
from davserver.meta.shared_state import RETRY_AFTER, SharedStateUnavailable
from davserver.vault import context
from davserver.web.app import SettingsApp

log = logging.getLogger("davserver.http")

FILES_PREFIX = "/remote.php/dav/files"
WEBDAV_PREFIX = "/remote.php/webdav"


class Guard:
    """Outermost layer: answers what needs no login and catches what nothing else did."""

    def __init__(self, app, instance: Instance) -> None:
        self.app = app
        self.instance = instance
        self.settings = SettingsApp(instance)
        self.ocs_shares = OcsSharesApp(instance)

    def _maintenance(self) -> bool:
        self.instance.refresh()
        return self.instance.maintenance()

    def __call__(self, environ, start_response):
        answer = self._serve(environ, start_response)
        if environ.get("REQUEST_METHOD") == "HEAD":
            # cheroot sends whatever the app yields, and a HEAD answer with a body (our
            # own one-line errors: 400, 503 in maintenance) is read by the client as the
            # start of the next answer on the connection.
            return _Headless(answer)
        return answer

    def _serve(self, environ, start_response):
        context.set_current(())
        path = environ.get("PATH_INFO", "")
        if path == "/status.php":
            body = json.dumps({
                "installed": True, "maintenance": self._maintenance(),
                "needsDbUpgrade": False, "version": "30.0.0.0", "versionstring": "30.0.0",
                "edition": "", "productname": "davserver", "davserver": __version__,
                "extendedSupport": False,
            }).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        problem = refusal(environ)
        if problem:
            return plain_text(start_response, "400 Bad Request", problem)
        if "wsgi.input" in environ:
            environ["wsgi.input"] = ClientInput(environ["wsgi.input"])
        if path == "/settings" or path.startswith("/settings/"):
            if not self._maintenance():
                return self.settings(environ, start_response)
        if path.startswith(OCS_SHARE_PREFIXES) and not self._maintenance():
            return self.ocs_shares(environ, start_response)
        if self._maintenance():
            return plain_text(start_response, "503 Service Unavailable",
                              "davserver is in maintenance mode; try again later",
                              [("Retry-After", "120")])
        if self.instance.config.redis_url:
            start_response = _retry_after_on_503(start_response)
        try:
            return _Closing(self.app(environ, start_response), environ)
        except SharedStateUnavailable as e:
            _close_prepared(environ)
            log.error("%s %s: %s", environ.get("REQUEST_METHOD"), path, e)
            return plain_text(start_response, "503 Service Unavailable", str(e),
                              [("Retry-After", str(RETRY_AFTER))])
        except Exception:
            _close_prepared(environ)
            log.exception("unhandled error for %s %s", environ.get("REQUEST_METHOD"), path)
            return plain_text(start_response, "500 Internal Server Error",
                              "internal error; the server log has details")


def _retry_after_on_503(start_response):
    """A 503 that WsgiDAV renders (shared state down inside a handler) still tells the
    client when to come back."""

    def start(status, headers, exc_info=None):
        if status.startswith("503") and not any(h[0].lower() == "retry-after"
                                                for h in headers):
            headers = [*headers, ("Retry-After", str(RETRY_AFTER))]
        return start_response(status, headers, exc_info)

    return start


def _close_prepared(environ) -> None:
    held = environ.pop(OPENED_KEY, None)
    if held is not None:
        held[1].close()


class _Closing:
    """The response iterable, plus closing a prepared file nobody read (errors, HEAD)."""

    def __init__(self, inner, environ) -> None:
        self._inner = inner
        self._environ = environ

    def __iter__(self):
        return iter(self._inner)

    def close(self) -> None:
        try:
            if hasattr(self._inner, "close"):
                self._inner.close()
        finally:
            _close_prepared(self._environ)


class _Headless:
    """A response's headers without its body (HEAD), still closing what it holds."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __iter__(self):
        # Run the inner response to its end all the same: WsgiDAV's responses are
        # generators that call start_response only when iterated.
        for _chunk in self._inner:
            pass
        yield from ()

    def close(self) -> None:
        if hasattr(self._inner, "close"):
            self._inner.close()


def _lock_storage(instance: Instance):
    """In the metadata DB for one node; in Redis when nodes share one (``redis.url``)."""
    cfg = instance.config
    if cfg.redis_url:
        from davserver.dav.redis_locks import RedisLockStorage
        from davserver.meta.shared_state import redis_client

        return RedisLockStorage(redis_client(cfg.redis_url))
    return DbLockStorage(instance.db, os.path.join(cfg.run_dir, "davlocks.lock"))


# WsgiDAV signs its error pages with its name and version (read at each error from this
# module attribute): a free hint to anyone probing for a known bug. Say only whose page it is.
wsgidav_util.public_wsgidav_info = "davserver"


def build_app(instance: Instance, *, fast_files: bool = True):
    """``fast_files=False`` leaves GET/PUT to WsgiDAV (the reference the tests compare to)."""
    cfg = instance.config
    locks = _lock_storage(instance)
    files = HomeProvider(instance, user_in_path=True)
    webdav = HomeProvider(instance, user_in_path=False)
    dav_config = {
        "provider_mapping": {FILES_PREFIX: files, WEBDAV_PREFIX: webdav},
        "davserver.instance": instance,
        "davserver.providers": (files, webdav),
        "middleware_stack": [ErrorPrinter, KnownErrors, BasicAuth, XmlBodies, SharePermissions,
                             FastPropfind, WsgiDavDirBrowser, RequestResolver],
        "lock_storage": locks,
        "property_manager": None,
        "block_size": cfg.block_size,
        "honor_mtime_header": True,
        "verbose": 1,
        "suppress_version_info": True,
        "add_header_MS_Author_Via": True,
        "logging": {"enable": False, "enable_loggers": []},
        "dir_browser": {"enable": True, "response_trailer": "davserver", "show_user": True,
                        "davmount": False, "ms_sharepoint_support": False},
        "http_authenticator": {"accept_basic": True, "accept_digest": False,
                               "default_to_digest": False, "domain_controller": None},
        "simple_dc": {"user_mapping": {}},
    }
    dav = WsgiDAVApp(dav_config)
    # WsgiDAV's lock manager checks for conflicts and then grants under its own in-process
    # lock; with several worker processes that must be the shared one.
    dav.lock_manager._lock = locks.shared_lock
    inner = dav if not fast_files else FastFiles(dav, instance, (files, webdav), locks,
                                                 cfg.block_size)
    return Guard(NextcloudLayer(inner, instance, dav, (files, webdav)), instance)


#: Idle keep-alive connections one worker process keeps open.
KEEP_ALIVE_LIMIT = 256


class _Server(wsgi.Server):
    """cheroot's server, optionally on a listening socket shared by several workers."""

    shared_socket: socket.socket | None = None

    def bind(self, family, type, proto=0):
        if self.shared_socket is None:
            return super().bind(family, type, proto)
        self.socket = self.shared_socket
        self.bind_addr = self.resolve_real_bind_addr(self.socket)
        return self.socket

    def prepare(self) -> None:
        super().prepare()
        if self.shared_socket is not None:
            # Another worker may take a connection this one was woken for: never wait in
            # accept() (cheroot returns on EAGAIN), and leave new ones to a less loaded
            # worker for a moment (dav.balance).
            self.socket.setblocking(False)
            plain, self._connections = self._connections, balance.BalancedConnections(self)
            plain._selector.close()


def make_server(instance: Instance, *, shared_socket: socket.socket | None = None
                ) -> wsgi.Server:
    """``shared_socket``: the listening socket of several worker processes (dav.prefork)."""
    cfg = instance.config
    server = _Server(
        (cfg.host, cfg.port), build_app(instance, fast_files=cfg.fast_files),
        numthreads=cfg.threads,
        timeout=int(cfg.socket_timeout), server_name="davserver",
        request_queue_size=128,  # cheroot's default backlog of 5 refuses bursts of clients
    )
    server.shared_socket = shared_socket
    # cheroot answers "Connection: close" once 10 idle keep-alive connections wait in one
    # process; sync clients keep theirs for hours, and a new connection (and TLS
    # handshake) for every request would cost far more than an idle socket does.
    server.keep_alive_conn_limit = KEEP_ALIVE_LIMIT
    server.max_request_body_size = 0
    server.max_request_header_size = sockets.MAX_HEADER_BYTES
    server.ConnectionClass = sockets.Connection
    if cfg.certfile and cfg.keyfile:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(cfg.certfile, cfg.keyfile)
    return server
