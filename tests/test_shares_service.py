"""The share service in process (no HTTP): mount points, name clashes, share_folder,
expiry, node IDs that follow moves, re-share limits."""

from __future__ import annotations

import time

import pytest

from davserver.errors import NotFound, UserError
from davserver.vault import shares as sh
from tests.instances import make_instance

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL


@pytest.fixture
def inst(tmp_path):
    i = make_instance(tmp_path)
    for u in ("alice", "bob", "carol"):
        i.users.add(u, f"{u}pass123")
    i.vault.make_dir("alice/Photos")
    i.vault.write_bytes("alice/Photos/p.jpg", b"jpeg")
    i.vault.write_bytes("alice/notes.txt", b"notes")
    yield i
    i.close()


def test_mount_names_clash_like_nextcloud(inst):
    inst.vault.make_dir("bob/Photos")
    inst.vault.write_bytes("bob/notes.txt", b"bob's own")
    inst.shares.create("alice", "Photos", sh.USER, "bob")
    inst.shares.create("alice", "notes.txt", sh.USER, "bob")
    paths = sorted(m.path for m in inst.shares.mounts("bob"))
    assert paths == ["Photos (2)", "notes (2).txt"]
    t = inst.shares.resolve("bob", "Photos (2)/p.jpg")
    assert t.spath == "alice/Photos/p.jpg" and t.permissions == sh.READ
    assert inst.shares.resolve("bob", "Photos/x").spath == "bob/Photos/x"  # his own


def test_share_folder_setting(tmp_path):
    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True)
    from tests.instances import WEAK_KDF_TOML

    conf.write_text(WEAK_KDF_TOML + '\n[sharing]\nshare_folder = "/Shared"\n')
    i = make_instance(tmp_path)
    try:
        i.users.add("alice", "alicepass1")
        i.users.add("bob", "bobpass123")
        i.vault.make_dir("alice/A")
        i.shares.create("alice", "A", sh.USER, "bob")
        assert [m.path for m in i.shares.mounts("bob")] == ["Shared/A"]
        assert i.vault.stat("bob/Shared").is_dir  # made for the mount points
        assert [n.name for n in i.shares.listing("bob", "Shared", "bob/Shared")] == ["A"]
    finally:
        i.close()


def test_node_id_follows_owner_moves_and_dies_with_delete(inst):
    s = inst.shares.create("alice", "Photos", sh.USER, "bob")
    inst.vault.make_dir("alice/Archive")
    inst.vault.move("alice/Photos", "alice/Archive/Pics")
    assert inst.shares.get(s.id).spath == "alice/Archive/Pics"
    assert inst.shares.resolve("bob", "Photos/p.jpg").spath == "alice/Archive/Pics/p.jpg"
    inst.vault.delete("alice/Archive")
    assert inst.shares.mounts("bob") == []
    with pytest.raises(NotFound):
        inst.shares.get(s.id)


def test_expired_share_disappears(inst):
    s = inst.shares.create("alice", "Photos", sh.USER, "bob",
                           expires=sh.parse_expiry("2999-01-01"))
    assert inst.shares.mounts("bob")
    with inst.db.tx() as c:
        c.execute("UPDATE shares SET expires = ? WHERE id = ?", (time.time() - 1, s.id))
    assert inst.shares.mounts("bob") == []
    assert inst.shares.resolve("bob", "Photos/p.jpg").spath == "bob/Photos/p.jpg"


@pytest.mark.parametrize("text,bits", [("read", 1), ("read,update", 3), ("all", 31),
                                       ("15", 15), ("2", 3), ("share", 17)])
def test_permission_parsing(text, bits):
    assert sh.parse_permissions(text) == bits


@pytest.mark.parametrize("text", ["0", "32", "fly", "read,,x"])
def test_bad_permissions(text):
    with pytest.raises(UserError):
        sh.parse_permissions(text)


def test_file_shares_never_grant_create_or_delete(inst):
    s = inst.shares.create("alice", "notes.txt", sh.USER, "bob", permissions=sh.ALL)
    assert s.permissions == sh.FILE_MASK


def test_reshare_chain_and_update_limits(inst):
    s = inst.shares.create("alice", "Photos", sh.USER, "bob",
                           permissions=sh.READ | sh.UPDATE | sh.SHARE)
    r = inst.shares.create("bob", "Photos", sh.USER, "carol", permissions=sh.READ | sh.UPDATE)
    assert (r.owner, r.initiator) == ("alice", "bob")
    with pytest.raises(sh.ShareForbidden):
        inst.shares.update(r.id, permissions=sh.ALL)
    with pytest.raises(UserError):
        inst.shares.create("bob", "Photos", sh.USER, "alice")  # back to the owner
    inst.shares.update(s.id, permissions=sh.READ | sh.SHARE)
    with pytest.raises(NotFound):
        inst.shares.remove(r.id, actor="carol")  # not hers to remove
    inst.shares.remove(r.id, actor="bob")


def test_deleting_a_user_removes_their_shares(inst):
    inst.shares.create("alice", "Photos", sh.USER, "bob")
    inst.groups.add("g")
    inst.groups.add_user("g", "carol")
    inst.vault.make_dir("bob/B")
    inst.shares.create("bob", "B", sh.GROUP, "g")
    inst.users.delete("bob")
    assert inst.shares.list() == []
    assert inst.groups.members("g") == ["carol"]
    assert inst.shares.mounts("carol") == []


def test_encrypt_all_covers_team_folders(inst):
    from davserver.cli.encryption_cmds import _users
    from davserver.crypto import header
    from davserver.meta import settings
    from davserver.vault import convert

    inst.groups.add("g")
    f = inst.teamfolders.create("Team")
    inst.teamfolders.set_group(f.id, "g", sh.ALL)
    inst.db.set_setting(settings.ENABLED, "0")
    inst.vault.write_bytes(f".gf-{f.id}/plain.txt", b"written while encryption was off")
    assert not header.is_encrypted(inst.vault.head(f".gf-{f.id}/plain.txt"))
    inst.db.set_setting(settings.ENABLED, "1")
    assert f".gf-{f.id}" in _users(inst, None)
    report = convert.convert_all(inst.vault, _users(inst, None), encrypt=True)
    assert not report.failed
    assert header.is_encrypted(inst.vault.head(f".gf-{f.id}/plain.txt"))
    assert inst.vault.read_all(f".gf-{f.id}/plain.txt") == b"written while encryption was off"
