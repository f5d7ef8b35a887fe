"""The share keys a request acts with (vault.sharewraps.identities_for): only the caller's
shares are opened, the answer is kept until a share key file changes, and a change made
by another process of the node is seen at the next request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from davserver.vault import context
from davserver.vault.shares import USER
from tests.instances import make_instance

ROOT = Path(__file__).resolve().parent.parent
PASS = {u: f"{u}-password" for u in ("alice", "bob", "carol")}


@pytest.fixture
def inst(tmp_path):
    i = make_instance(tmp_path, user_mode=True)
    for u, p in PASS.items():
        i.users.add(u, p)
    i.ids = {u: i.unlock(u, p) for u, p in PASS.items()}
    with context.acting_as(*i.ids["alice"]):
        for n in range(12):
            i.vault.make_dir(f"alice/d{n}")
            i.vault.write_bytes(f"alice/d{n}/f", b"x")
    yield i
    i.close()


def _held(inst, user: str) -> set[str]:
    return {i.recipient for i in inst.sharewraps.identities_for(tuple(inst.ids[user]))}


def _share(inst, folder: str, user: str):
    with context.acting_as(*inst.ids["alice"]):
        return inst.shares.create("alice", folder, USER, user)


def test_identities_follow_shares_made_and_removed(inst):
    assert _held(inst, "bob") == set()
    s1 = _share(inst, "d0", "bob")
    assert _held(inst, "bob") == {f"share:{s1.id}:v1"}
    _share(inst, "d1", "carol")
    assert _held(inst, "bob") == {f"share:{s1.id}:v1"}  # carol's share is not bob's key
    s3 = _share(inst, "d2", "bob")
    assert _held(inst, "bob") == {f"share:{s1.id}:v1", f"share:{s3.id}:v1"}
    assert len(_held(inst, "alice")) == 3  # the owner holds them all
    with context.acting_as(*inst.ids["alice"]):
        inst.shares.remove(s1.id, actor="alice")
    assert _held(inst, "bob") == {f"share:{s3.id}:v1"}


def test_only_the_callers_shares_are_opened_and_then_kept(inst, monkeypatch):
    for n in range(10):
        _share(inst, f"d{n}", "carol")
    mine = _share(inst, "d11", "bob")
    keys = inst.sharewraps.keys
    opened, listed = [], []
    real_open, real_versions = keys.open, keys.versions
    monkeypatch.setattr(keys, "open", lambda sid, ids: (opened.append(sid),
                                                        real_open(sid, ids))[1])
    monkeypatch.setattr(keys, "versions", lambda sid: (listed.append(sid),
                                                       real_versions(sid))[1])
    assert _held(inst, "bob") == {f"share:{mine.id}:v1"}
    assert opened == [mine.id]  # not the 10 shares of carol
    opened.clear()
    listed.clear()
    for _ in range(3):  # later requests: no key file read at all
        assert _held(inst, "bob") == {f"share:{mine.id}:v1"}
    assert opened == [] and listed == []


CHILD = r"""
import sys
from pathlib import Path
from davserver.vault import context
from davserver.vault.shares import USER
from tests.instances import make_instance

inst = make_instance(Path(sys.argv[1]), user_mode=True)
with context.acting_as(inst.userkeys.unlock("alice", "alice-password")):
    print(inst.shares.create("alice", "d5", USER, "bob").id)
inst.close()
"""


def test_share_made_by_another_process_is_seen_at_the_next_request(inst, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(type(inst.sharewraps), "KEYS_TTL", 1e9)  # only the counter tells
    assert _held(inst, "bob") == set()  # kept
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    share_id = int(proc.stdout.strip())
    assert _held(inst, "bob") == {f"share:{share_id}:v1"}
    with context.acting_as(*inst.ids["bob"]):
        assert inst.vault.read_all("alice/d5/f") == b"x"
