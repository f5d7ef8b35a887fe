"""The real-service fixtures the scale-out tests stand on: each starts, answers, stops."""

from __future__ import annotations

import http.server
import threading

import requests


def test_redis_answers(redis_server):
    r = redis_server.client()
    assert r.ping() is True
    r.set("fixture-check", b"value", ex=30)
    assert r.get("fixture-check") == b"value"
    assert 0 < r.ttl("fixture-check") <= 30


def test_postgresql_answers(pg_server):
    import psycopg

    with psycopg.connect(pg_server.dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_nginx_round_robin(nginx_factory):
    backends = []
    for name in ("one", "two"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Named)
        srv.name = name
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        backends.append(srv)
    try:
        proxy = nginx_factory([b.server_address[1] for b in backends])
        seen = [requests.get(proxy.base + "/", timeout=10).text for _ in range(4)]
        assert sorted(seen) == ["one", "one", "two", "two"], seen
        assert seen[0] != seen[1]
        assert proxy.backends_used() == {b.server_address[1] for b in backends}
    finally:
        for b in backends:
            b.shutdown()
            b.server_close()
