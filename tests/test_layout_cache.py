"""Shares, groups and mounts are kept per process while the layout version stays
(meta.layout_schema): a change made by another process (a second Instance on the same
data directory, as the CLI or another worker is) must be seen by the next request."""

from __future__ import annotations

import pytest

from davserver.instance import Instance
from davserver.vault import shares as sh
from tests.instances import make_instance


@pytest.fixture
def pair(tmp_path):
    a = make_instance(tmp_path)
    for u in ("alice", "bob"):
        a.users.add(u, f"{u}pass123")
    a.vault.make_dir("alice/Docs")
    a.vault.write_bytes("alice/Docs/d.txt", b"doc")
    a.groups.add("team")
    store = tmp_path / "store"
    store.mkdir()
    b = Instance(a.config)  # the server process; `a` plays the admin's command
    yield a, b, str(store)
    b.close()
    a.close()


def view(b: Instance) -> tuple:
    """What bob's requests see: his groups, share mount points and storage mounts."""
    return (tuple(b.groups.groups_of("bob")),
            tuple(sorted((m.path, m.share.spath) for m in b.shares.mounts("bob"))),
            tuple(m.mount_point for m in b.dav_vault.mounts_for("bob")))


def _share_user(a, store):
    a.shares.create("alice", "Docs", sh.USER, "bob")


def _unshare(a, store):
    for s in a.shares.list():
        a.shares.remove(s.id)


def _join(a, store):
    a.groups.add_user("team", "bob")


def _leave(a, store):
    a.groups.remove_user("team", "bob")


def _owner_moves(a, store):
    a.vault.move("alice/Docs", "alice/Papers")


def _mount(a, store):
    a.mounts.create("/Ext", "local", "null::null", {"datadir": store})


def _unmount(a, store):
    for m in a.mounts.list():
        a.mounts.delete(m.id)


def _mount_for_others(a, store):
    for m in a.mounts.list():
        a.mounts.set_applicable(m.id, add_users=["alice"])


def _setup_group_share(a, store):
    a.groups.add_user("team", "bob")
    a.shares.create("alice", "Docs", sh.GROUP, "team")


CASES = {  # name: (set-up, change)
    "share with user": (None, _share_user),
    "unshare": (_share_user, _unshare),
    "join group": (None, _join),
    "leave group (group share)": (_setup_group_share, _leave),
    "owner moves shared folder": (_share_user, _owner_moves),
    "mount created": (None, _mount),
    "mount deleted": (_mount, _unmount),
    "mount no longer applicable": (_mount, _mount_for_others),
}


@pytest.mark.parametrize("name", list(CASES))
def test_other_process_change_seen_at_once(pair, name):
    a, b, store = pair
    setup, change = CASES[name]
    if setup is not None:
        setup(a, store)
    before = view(b)  # b keeps these answers now
    assert view(b) == before
    version = b.db.layout_version()
    change(a, store)
    assert b.db.layout_version() != version
    after = view(b)
    assert after != before, name
    assert after == view(Instance(a.config)), name  # what a fresh process sees


def test_file_writes_leave_the_layout_alone(pair):
    """Plain uploads must not empty the caches (the point of keeping them)."""
    a, b, _ = pair
    version = b.db.layout_version()
    a.vault.write_bytes("alice/Docs/e.txt", b"e")
    a.vault.move("alice/Docs/e.txt", "alice/e.txt")
    a.vault.delete("alice/e.txt")
    assert b.db.layout_version() == version
