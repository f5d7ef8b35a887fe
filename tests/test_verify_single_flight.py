"""When a cached password check expires, concurrent requests of the user run one Argon2
check between them, not one each (bench/soak.py saw 2 GiB of RSS for a few seconds every
5 minutes: 30 requests in flight, 64 MiB each)."""

from __future__ import annotations

import threading

from davserver.auth import users as users_mod
from tests.live import wait_until


def test_concurrent_misses_share_one_check(inst, monkeypatch):
    svc = inst.users
    real = users_mod._context.verify
    calls = []
    release = threading.Event()

    def slow_verify(password, hashed):
        calls.append(password)
        release.wait(10)
        return real(password, hashed)

    monkeypatch.setattr(users_mod._context, "verify", slow_verify)
    tag = svc._verified.tag("alice", "alicepass1")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(svc.verify("alice",
                                                                           "alicepass1")))
               for _ in range(8)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: users_mod._flights.get(tag, [None, 0])[1] == 8, timeout=10)
    finally:
        release.set()
        for t in threads:
            t.join(30)
    assert results == [True] * 8
    assert len(calls) == 1
    assert tag not in users_mod._flights  # nothing left behind


def test_wrong_password_is_still_refused_for_every_waiter(inst):
    svc = inst.users
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(svc.verify("alice", "wrong-pw")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [False] * 4
    assert svc.verify("alice", "alicepass1")
