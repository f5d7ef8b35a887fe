"""Several worker processes on one port: one truth for locks and commits, and clean life cycles."""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.live import LiveServer

WORKERS = 3
LOCK_BODY = ('<?xml version="1.0"?><d:lockinfo xmlns:d="DAV:"><d:lockscope><d:exclusive/>'
             '</d:lockscope><d:locktype><d:write/></d:locktype></d:lockinfo>')


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(cond, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def srv(tmp_path):
    s = LiveServer(tmp_path, users={"alice": None},
                   config={"server": {"workers": WORKERS}}).create().start()
    assert wait_until(lambda: len(children(s.proc.pid)) == WORKERS - 1)  # + the first one
    _wait_serving(s, [s.proc.pid, *children(s.proc.pid)])
    yield s
    s.stop()


def fresh(method: str, srv: LiveServer, path: str, **kw) -> requests.Response:
    """One request on a new connection: the kernel picks the worker each time."""
    kw.setdefault("auth", srv.auth("alice"))
    with requests.Session() as s:
        return s.request(method, srv.url("alice", path), timeout=30,
                         headers={"Connection": "close", **kw.pop("headers", {})}, **kw)


def test_connections_are_spread_over_the_workers(srv):
    """Each worker (the first process too) takes some of 30 connections kept open, told
    apart by their open sockets."""
    workers = [srv.proc.pid, *children(srv.proc.pid)]
    conns = [_open_kept(srv.port) for _ in range(30)]
    try:
        served = {pid for pid in workers for c in conns
                  if _has_peer(pid, c.sock.getsockname()[1])}
        assert served == set(workers)
    finally:
        for c in conns:
            c.close()


def _open_kept(port: int, method: str = "GET", path: str = "/status.php",
               headers: dict | None = None, status: int = 200):
    """A keep-alive connection that has had one answer and stays open."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    assert r.status == status
    r.read()
    return c


def _wait_serving(srv: LiveServer, pids: list[int]) -> None:
    """Until every worker accepts connections (and so counts in the spreading)."""
    assert wait_until(lambda: all(f"worker {p} serving" in srv.log_text() for p in pids), 30)


def _held(pids: list[int], conns) -> dict[int, int]:
    return {pid: sum(_has_peer(pid, c.sock.getsockname()[1]) for c in conns) for pid in pids}


def _established(pid: int, port: int) -> int:
    """Connections to ``port`` that process ``pid`` holds (01: TCP_ESTABLISHED)."""
    return sum(local == port and state == "01" for local, _r, state in _tcp_sockets(pid))


def test_held_connections_are_spread_evenly_also_to_a_replacement(tmp_path, monkeypatch):
    """Keep-alive connections opened one after another end up evenly on the workers, and
    a worker started to replace a dead one gets the next ones. (Workers leave a new
    connection to a less loaded one for DAVSERVER_ACCEPT_WAIT seconds: long here, so
    the outcome does not depend on how fast a process is scheduled.)"""
    monkeypatch.setenv("DAVSERVER_ACCEPT_WAIT", "0.5")
    srv = LiveServer(tmp_path, config={"server": {"workers": WORKERS}}).create().start()
    conns = []
    try:
        assert wait_until(lambda: len(children(srv.proc.pid)) == WORKERS - 1)
        workers = [srv.proc.pid, *children(srv.proc.pid)]
        _wait_serving(srv, workers)
        conns = [_open_kept(srv.port) for _ in range(3 * WORKERS)]
        # Counted from the sockets each process holds: other clients' count too.
        load = [_established(pid, srv.port) for pid in workers]
        assert max(load) - min(load) <= 1 and sum(load) >= len(conns), load
        # A worker dies with its connections; its replacement takes the next three, as
        # the others hold three or more each.
        victim = children(srv.proc.pid)[0]
        dead = [c for c in conns if _has_peer(victim, c.sock.getsockname()[1])]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: [p for p in children(srv.proc.pid) if p not in workers])
        new = [p for p in children(srv.proc.pid) if p not in workers]
        _wait_serving(srv, new)
        for c in dead:
            c.close()
        conns = [c for c in conns if c not in dead]
        assert all(_established(p, srv.port) >= 3 for p in workers if p != victim)
        more = [_open_kept(srv.port) for _ in range(3)]
        conns += more
        assert _held(new, more) == {new[0]: 3}
    finally:
        for c in conns:
            c.close()
        srv.stop()


def _tcp_sockets(pid: int) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of the TCP sockets process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes:
                out.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                            f[3]))
    return out


def _has_peer(pid: int, port: int) -> bool:
    """Does process ``pid`` hold the server side of the connection from ``port``?"""
    return any(remote == port for _local, remote, _state in _tcp_sockets(pid))


def _listens(pid: int, port: int) -> bool:
    """Has process ``pid`` a listening socket on ``port``? (0A: TCP_LISTEN)"""
    return any(local == port and state == "0A" for local, _r, state in _tcp_sockets(pid))


def test_a_lock_holds_in_every_worker(srv):
    assert fresh("PUT", srv, "doc.txt", data=b"v1").status_code == 201
    r = fresh("LOCK", srv, "doc.txt", data=LOCK_BODY, headers={"Timeout": "Second-300"})
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"]
    for _ in range(15):
        assert fresh("PUT", srv, "doc.txt", data=b"intruder").status_code == 423
    for i in range(6):
        r = fresh("PUT", srv, "doc.txt", data=f"v{i}".encode(), headers={"If": f"({token})"})
        assert r.status_code == 204
    assert fresh("UNLOCK", srv, "doc.txt", headers={"Lock-Token": token}).status_code == 204
    for _ in range(6):
        assert fresh("PUT", srv, "doc.txt", data=b"free again").status_code == 204
    assert fresh("GET", srv, "doc.txt").content == b"free again"


def test_concurrent_locks_grant_exactly_one(srv):
    for round_ in range(10):
        name = f"contended-{round_}.txt"
        assert fresh("PUT", srv, name, data=b"x").status_code == 201
        barrier = threading.Barrier(12)
        statuses: list[int] = []

        def grab(barrier=barrier, statuses=statuses, name=name):
            barrier.wait()
            statuses.append(fresh("LOCK", srv, name, data=LOCK_BODY).status_code)

        threads = [threading.Thread(target=grab) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [423] * 11, statuses


def test_concurrent_uploads_to_one_path_stay_consistent(srv):
    bodies = [os.urandom(300_000 + i) for i in range(16)]
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def upload(body):
        barrier.wait()
        statuses.append(fresh("PUT", srv, "same.bin", data=body).status_code)

    threads = [threading.Thread(target=upload, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s in (201, 204) for s in statuses), (statuses, srv.log_tail())
    got = fresh("GET", srv, "same.bin")
    assert got.status_code == 200 and got.content in bodies, (got.status_code,
                                                              srv.log_tail())
    keys = srv.key_files()
    assert len(keys) == 1, (keys, srv.log_tail())  # every replaced version's key is gone
    assert srv.tmp_files() == []


def test_a_dead_worker_is_replaced(srv):
    before = children(srv.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    assert wait_until(lambda: len(children(srv.proc.pid)) == WORKERS - 1
                      and before[0] not in children(srv.proc.pid))
    assert wait_until(lambda: _listens(children(srv.proc.pid)[-1], srv.port))
    for _ in range(10):
        assert fresh("PUT", srv, "after.txt", data=b"ok").status_code in (201, 204)
    assert "starting a new one" in srv.log_text()


def test_killed_parent_takes_its_workers_along(srv):
    workers = children(srv.proc.pid)
    srv.kill()  # SIGKILL: no chance to clean up
    assert wait_until(lambda: not any(alive(p) for p in workers))
    # A process whose main thread is already a zombie may still have threads holding the
    # listening socket for a moment (the kernel then completes handshakes nobody accepts),
    # so poll: what must hold is that the port ends up refused.
    assert wait_until(lambda: _refused(srv.port))


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_sigterm_stops_every_process_and_restart_works(srv):
    workers = children(srv.proc.pid)
    assert fresh("PUT", srv, "kept.txt", data=b"kept").status_code == 201
    srv.stop()
    assert srv.proc.returncode == 0
    assert not any(alive(p) for p in workers)
    srv.start()
    assert fresh("GET", srv, "kept.txt").content == b"kept"


def test_group_sigterm_reaching_workers_first_starts_no_replacement(srv):
    """systemd stops a service by signalling every process of its group, in no order:
    workers that got SIGTERM before the first process must not be replaced."""
    workers = children(srv.proc.pid)
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=30)
    assert srv.proc.returncode == 0
    assert "starting a new one" not in srv.log_text()
    strays = [p for p in Path("/proc").iterdir() if p.name.isdigit()
              and f"--worker-of\0{srv.proc.pid}".encode() in _cmdline(p)]
    assert not strays and not any(alive(p) for p in workers)


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_second_server_on_the_same_port_is_refused(srv, tmp_path):
    other = LiveServer(tmp_path / "other", users={"alice": None},
                       config={"server": {"workers": 2}}).create()
    res = other.run_cli("serve", "--host", "127.0.0.1", "--port", str(srv.port), check=False,
                        timeout=30)
    assert res.returncode != 0
    assert "cannot listen" in (res.stderr + res.stdout)
    assert len((res.stderr + res.stdout).strip().splitlines()) <= 3  # no traceback


def test_every_worker_follows_an_admin_command_at_once(srv):
    """Settings changed by another process are seen by all workers on the next request,
    not after a cache period: no request is refused after 'maintenance:mode --off'."""
    assert fresh("PUT", srv, "m.txt", data=b"m").status_code == 201
    for _ in range(3):
        srv.run_cli("maintenance:mode", "--on")
        assert [fresh("GET", srv, "m.txt").status_code for _ in range(12)] == [503] * 12
        srv.run_cli("maintenance:mode", "--off")
        assert [fresh("GET", srv, "m.txt").status_code for _ in range(12)] == [200] * 12


@pytest.mark.parametrize("mode", ["master", "user"])
def test_one_password_check_serves_every_worker(tmp_path, mode):
    """Argon2id (~100 ms, 64 MiB) runs once per user and password, not once per worker:
    the workers share the tables of verified passwords and unlocked user keys."""
    s = LiveServer(tmp_path, users={"alice": None},
                   config={"server": {"workers": WORKERS}, "logging": {"level": "debug"}})
    s.create()
    if mode == "user":
        s.run_cli("encryption:disable-master-key", "--yes")
    s.start()
    try:
        assert wait_until(lambda: len(children(s.proc.pid)) == WORKERS - 1)
        workers = [s.proc.pid, *children(s.proc.pid)]
        _wait_serving(s, workers)
        token = base64.b64encode(f"alice:{s.users['alice']}".encode()).decode()
        conns = [_open_kept(s.port, "PROPFIND", "/remote.php/dav/files/alice/",
                            {"Depth": "0", "Authorization": f"Basic {token}"}, 207)
                 for _ in range(30)]
        served = {pid for pid in workers for c in conns
                  if _has_peer(pid, c.sock.getsockname()[1])}
        for c in conns:
            c.close()
        assert served == set(workers)
        log = s.log_text()
        assert log.count("checking the password of 'alice'") == 1
        assert log.count("unlocking the key of 'alice'") == (mode == "user")
        assert fresh("PUT", s, "f.txt", data=b"readable in every worker").status_code == 201
        for _ in range(12):
            assert fresh("GET", s, "f.txt").content == b"readable in every worker"
    finally:
        s.stop()
