"""Login throttling counts failures in the DB: shared by worker processes, ends with its window."""

from __future__ import annotations

import time

import pytest

from davserver.auth.login import LoginFailed, Throttled
from davserver.auth.throttle import Throttle
from davserver.meta.db import MetaDB


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_limit_window_and_success(tmp_path):
    clock = Clock()
    t = Throttle(MetaDB(str(tmp_path / "db")), max_failures=3, window_seconds=60, clock=clock)
    keys = ("user:alice", "addr:10.0.0.1")
    for _ in range(2):
        t.failed(*keys)
        clock.now += 1
    assert t.retry_after(*keys) == 0
    t.failed(*keys)
    wait = t.retry_after(*keys)
    assert 0 < wait <= 60
    assert t.retry_after("user:bob", "addr:10.0.0.2") == 0  # others are not affected
    assert t.retry_after("user:bob", "addr:10.0.0.1") > 0  # ... except from that address
    clock.now += 61
    assert t.retry_after(*keys) == 0  # the window passed
    for _ in range(3):
        t.failed(*keys)
    t.succeeded("user:alice")
    assert t.retry_after("user:alice", "addr:10.0.0.9") == 0
    assert t.retry_after("user:carol", "addr:10.0.0.1") > 0  # the address stays counted


def test_failures_are_shared_between_processes(tmp_path):
    """Two Throttle objects on one DB stand for two worker processes."""
    clock = Clock()
    a = Throttle(MetaDB(str(tmp_path / "db")), max_failures=4, window_seconds=60, clock=clock)
    b = Throttle(MetaDB(str(tmp_path / "db")), max_failures=4, window_seconds=60, clock=clock)
    a.failed("user:alice")
    b.failed("user:alice")
    a.failed("user:alice")
    assert a.retry_after("user:alice") == b.retry_after("user:alice") == 0
    b.failed("user:alice")
    assert a.retry_after("user:alice") > 0 and b.retry_after("user:alice") > 0


def test_rows_per_key_stay_bounded(tmp_path):
    clock = Clock()
    db = MetaDB(str(tmp_path / "db"))
    t = Throttle(db, max_failures=5, window_seconds=60, clock=clock)
    for _ in range(50):
        t.failed("addr:10.0.0.1")
        clock.now += 0.5
    assert db.query("SELECT count(*) FROM login_failures")[0][0] == 5


def test_login_clears_only_failures_on_record(tmp_path):
    """A success after failures forgets the user's count; a clean login does not write."""
    from tests.instances import make_instance

    inst = make_instance(tmp_path)
    login = inst.login
    for _ in range(2):
        with pytest.raises(LoginFailed):
            login.login("admin", "wrong-password", "10.0.0.1")
    assert login.throttle.check("user:admin")[1] == {"user:admin"}
    login.login("admin", "adminpass1", "10.0.0.1")
    assert login.throttle.check("user:admin", "addr:10.0.0.1")[1] == {"addr:10.0.0.1"}
    statements = []
    inst.db._conn().set_trace_callback(statements.append)
    login.login("admin", "adminpass1", "10.0.0.1")
    inst.db._conn().set_trace_callback(None)
    assert not [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len([s for s in statements if "login_failures" in s]) == 1  # the check only
    assert len([s for s in statements if "FROM users" in s]) == 1


def test_kept_answers_end_with_a_write_by_any_process(tmp_path):
    """Between writes to users and login_failures a process answers the user row and
    "no failures" from memory; a write from another process (its own MetaDB on the same
    files) ends that at once, so a reset password or a throttled address takes effect on
    the next request."""
    from davserver.meta.db import MetaDB
    from tests.instances import make_instance

    inst = make_instance(tmp_path)
    inst.db.ACCOUNTS_TTL = 3600.0  # no expiry inside the test: only the writes count
    login = inst.login
    login.login("admin", "adminpass1", "10.0.0.2")

    def statements_of_a_login(password="adminpass1", addr="10.0.0.2"):
        statements = []
        inst.db._conn().set_trace_callback(statements.append)
        try:
            login.login("admin", password, addr)
        finally:
            inst.db._conn().set_trace_callback(None)
        return statements

    assert statements_of_a_login() == []
    other = MetaDB(inst.db.path)  # what a second worker or an admin command uses
    for _ in range(login.throttle.max_failures):
        other.add_failures(["addr:10.0.0.2"], time.time(), keep=login.throttle.max_failures,
                           since=time.time() - login.throttle.window)
    with pytest.raises(Throttled):
        login.login("admin", "adminpass1", "10.0.0.2")
    other.clear_failures(["addr:10.0.0.2"])
    assert any("login_failures" in s for s in statements_of_a_login())
    assert statements_of_a_login() == []
    other.update_user("admin", password_hash=inst.db.get_user("admin").password_hash)
    assert [s for s in statements_of_a_login() if "FROM users" in s]
    inst.users.reset_password("admin", "a-new-password-2")  # through the service
    with pytest.raises(LoginFailed):
        login.login("admin", "adminpass1", "10.0.0.2")
    login.login("admin", "a-new-password-2", "10.0.0.3")  # clears the user's failure
    assert statements_of_a_login("a-new-password-2", "10.0.0.3")  # ... so this one asks
    assert statements_of_a_login("a-new-password-2", "10.0.0.3") == []
    inst.db.ACCOUNTS_TTL = 1e-9  # another node's writes bump nothing here: age ends it
    assert len(statements_of_a_login("a-new-password-2", "10.0.0.3")) == 2


@pytest.mark.parametrize("per_address", [None, 10, 0], ids=["same", "higher", "off"])
def test_address_limit_is_its_own_setting(tmp_path, per_address):
    """throttle_max_failures_per_address: by default the per-user limit; higher for
    addresses many users share (NAT, reverse proxy); 0 counts users only."""
    clock = Clock()
    t = Throttle(MetaDB(str(tmp_path / "db")), max_failures=3, window_seconds=60,
                 clock=clock, max_failures_per_address=per_address)
    for i in range(3):
        t.failed(f"user:u{i}", "addr:10.0.0.1")
    blocked_at_3 = t.retry_after("user:new", "addr:10.0.0.1") > 0
    assert blocked_at_3 == (per_address is None)
    for i in range(3, 12):
        t.failed(f"user:u{i}", "addr:10.0.0.1")
    assert (t.retry_after("user:new", "addr:10.0.0.1") > 0) == (per_address != 0)
    # the per-user limit is unchanged whatever the address limit
    for _ in range(3):
        t.failed("user:alice", "addr:10.0.0.2")
    assert t.retry_after("user:alice", "addr:10.0.0.9") > 0


def test_address_limit_from_config(tmp_path):
    from davserver.config import load

    conf = tmp_path / "c.toml"
    conf.write_text("[auth]\nthrottle_max_failures = 4\n")
    data = str(tmp_path / "data")
    assert load(str(conf), data).throttle_max_failures_per_address is None
    conf.write_text("[auth]\nthrottle_max_failures = 4\n"
                    "throttle_max_failures_per_address = 50\n")
    assert load(str(conf), data).throttle_max_failures_per_address == 50
