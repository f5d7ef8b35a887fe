pytest_plugins = ["tests.conftest_ldap", "tests.conftest_storage"]

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.instances import make_instance  # noqa: E402
from tests.live import LiveServer, kill_all  # noqa: E402


@pytest.fixture
def inst(tmp_path):
    """An in-process master-key instance with the user alice (password alicepass1)."""
    i = make_instance(tmp_path)
    i.users.add("alice", "alicepass1")
    yield i
    i.close()


@pytest.fixture
def server_factory(tmp_path) -> Iterator:
    """Make running servers: ``server_factory(users={"alice": None, "carol": "1MB"},
    config={"auth": {...}})``; all are stopped at teardown."""
    started: list[LiveServer] = []

    def make(users: dict[str, str | None] | None = None,
             config: dict[str, dict] | None = None) -> LiveServer:
        srv = LiveServer(tmp_path / f"srv{len(started)}", users, config)
        started.append(srv)
        return srv.create().start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """One running server per module with users alice and bob (no quota)."""
    srv = LiveServer(tmp_path_factory.mktemp("server"))
    try:
        yield srv.create().start()
    finally:
        srv.stop()


def pytest_sessionfinish(session, exitstatus) -> None:
    kill_all()


# --- real services for the scale-out tests (issue 18) --------------------------------------

@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator:
    """A private redis-server on a free loopback port (tests/redis_server.py)."""
    from tests.redis_server import RedisServer

    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def pg_server() -> Iterator:
    """A temporary PostgreSQL cluster run as an unprivileged user (tests/pg_server.py)."""
    from tests.pg_server import PgServer

    srv = PgServer().start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.remove()


@pytest.fixture
def nginx_factory(tmp_path) -> Iterator:
    """``nginx_factory([port, ...])``: nginx round-robin over those loopback backends."""
    from tests.nginx_server import NginxServer

    started = []

    def make(backends: list[int]):
        srv = NginxServer(tmp_path / f"nginx{len(started)}", backends)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()
