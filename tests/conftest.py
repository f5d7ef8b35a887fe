pytest_plugins = ["tests.conftest_ldap", "tests.conftest_storage"]

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.instances import make_instance  # noqa: E402
from tests.live import LiveServer, kill_all  # noqa: E402

# --- metadata on SQLite and, for tests marked pg, on PostgreSQL too (issue 18) ----------

def pytest_generate_tests(metafunc) -> None:
    if (metafunc.definition.get_closest_marker("pg")
            and "metadata_backend" in metafunc.fixturenames):
        metafunc.parametrize("metadata_backend", ["sqlite", "postgresql"], scope="module")


@pytest.fixture(scope="module", autouse=True)
def metadata_backend(request) -> str:
    """"sqlite", or "postgresql" for the second run of a test marked pg."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator:
    """One PostgreSQL cluster for every pg-marked test of the session."""
    from tests.pg_server import PgServer

    srv = PgServer().start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.remove()


@pytest.fixture(autouse=True)
def metadata_url(request, metadata_backend) -> Iterator[str]:
    """database.url for this test's instances: "" (SQLite in the data dir) or a fresh
    PostgreSQL schema; make_instance and server_factory use it."""
    if metadata_backend != "postgresql":
        yield ""
        return
    from tests import instances
    from tests.pg_metadata import drop_schema, new_schema

    dsn = request.getfixturevalue("pg_cluster").dsn
    url = new_schema(dsn)
    instances.DATABASE_URL = url
    try:
        yield url
    finally:
        instances.DATABASE_URL = ""
        drop_schema(dsn, url)


@pytest.fixture
def inst(tmp_path):
    """An in-process master-key instance with the user alice (password alicepass1)."""
    i = make_instance(tmp_path)
    i.users.add("alice", "alicepass1")
    yield i
    i.close()


@pytest.fixture
def server_factory(tmp_path, metadata_url) -> Iterator:
    """Make running servers: ``server_factory(users={"alice": None, "carol": "1MB"},
    config={"auth": {...}})``; all are stopped at teardown."""
    started: list[LiveServer] = []

    def make(users: dict[str, str | None] | None = None,
             config: dict[str, dict] | None = None) -> LiveServer:
        config = {k: dict(v) for k, v in (config or {}).items()}
        if metadata_url:
            config.setdefault("database", {})["url"] = metadata_url
        srv = LiveServer(tmp_path / f"srv{len(started)}", users, config)
        started.append(srv)
        return srv.create().start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request, metadata_backend) -> Iterator[LiveServer]:
    """One running server per module with users alice and bob (no quota); per backend
    in a module marked pg."""
    url = dsn = ""
    if metadata_backend == "postgresql":
        from tests.pg_metadata import new_schema

        dsn = request.getfixturevalue("pg_cluster").dsn
        url = new_schema(dsn)
    srv = LiveServer(tmp_path_factory.mktemp("server"),
                     config={"database": {"url": url}} if url else None)
    try:
        yield srv.create().start()
    finally:
        srv.stop()
        if url:
            from tests.pg_metadata import drop_schema

            drop_schema(dsn, url)


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
