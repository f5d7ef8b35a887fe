"""User-key mode on external storage: a personal mount's files are wrapped for its user's
key (and the recovery key when they opted in), as their home files are; a mount several
users see stays keyed for the master key. In process, with the mount on a real moto S3
server process."""

from __future__ import annotations

import pytest

from davserver import accounts
from davserver.crypto import header as hdr
from davserver.errors import KeyNotFound
from davserver.vault import context
from davserver.vault.userkeys import KeyLocked
from tests.instances import make_instance
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY


@pytest.fixture
def inst(tmp_path):
    i = make_instance(tmp_path, user_mode=True)
    i.users.add("alice", "alicepass1")
    i.users.add("bob", "bobpass123")
    yield i
    i.close()


def s3_config(moto) -> dict:
    host, port = moto.endpoint.split("//")[1].rsplit(":", 1)
    return {"bucket": moto.new_bucket(), "hostname": host, "port": port, "region": REGION,
            "use_ssl": "false", "use_path_style": "true", "key": ACCESS_KEY,
            "secret": SECRET_KEY}


def recipients_of(inst, spath: str) -> list[str]:
    rec = inst.db.get_file(spath)
    assert rec is not None and rec.file_id is not None
    return sorted(w.recipient.split(":")[0] for w in inst.keys.load(rec.file_id))


@pytest.mark.parametrize("recovery", [False, True], ids=["no-recovery", "recovery"])
def test_personal_mount_is_keyed_for_its_user(inst, moto, recovery):
    cfg = s3_config(moto)
    m = inst.mounts.create("/Mine", "amazons3", "amazons3::accesskey", cfg, user="alice")
    mv = inst.dav_vault
    if recovery:
        inst.userkeys.enable_recovery("recovery-pw-1")
    alice = inst.login.login("alice", "alicepass1")
    if recovery:
        accounts.set_recovery(inst, "alice", True, password="alicepass1")
    spath = mv.resolve("alice", "Mine/secret.txt")
    assert spath == f"{m.root}/secret.txt"
    with context.acting_as(*alice.identities):
        mv.write_bytes(spath, b"only alice's password opens this")

    raw = moto.client().get_object(Bucket=cfg["bucket"], Key="secret.txt")["Body"].read()
    assert hdr.is_encrypted(raw[:64]) and b"alice's password" not in raw
    assert recipients_of(inst, spath) == (["recovery", "user"] if recovery else ["user"])

    # Without her password nobody reads it: no identities, the admin's, the master key's.
    with pytest.raises(KeyLocked):
        mv.read_all(spath)
    admin = inst.login.login("admin", "adminpass1")
    with context.acting_as(*admin.identities), pytest.raises(KeyNotFound):
        mv.read_all(spath)
    with pytest.raises(KeyNotFound):
        inst.keys.unwrap(inst.db.get_file(spath).file_id, [inst.master()])
    # After her login she does.
    again = inst.login.login("alice", "alicepass1")
    with context.acting_as(*again.identities):
        assert mv.read_all(spath) == b"only alice's password opens this"
    if recovery:
        rec_id = inst.userkeys.unlock_recovery("recovery-pw-1")
        with context.acting_as(rec_id):
            assert mv.read_all(spath) == b"only alice's password opens this"


def test_mount_for_several_users_stays_on_the_master_key(inst, moto):
    m = inst.mounts.create("/Team", "amazons3", "amazons3::accesskey", s3_config(moto))
    inst.mounts.set_applicable(m.id, add_users=["alice", "bob"])
    mv = inst.dav_vault
    alice = inst.login.login("alice", "alicepass1")
    spath = mv.resolve("alice", "Team/shared.txt")
    with context.acting_as(*alice.identities):
        mv.write_bytes(spath, b"for alice and bob")
    assert recipients_of(inst, spath) == ["master"]
    bob = inst.login.login("bob", "bobpass123")
    with context.acting_as(*bob.identities):
        assert mv.read_all(mv.resolve("bob", "Team/shared.txt")) == b"for alice and bob"


def test_share_inside_a_personal_mount_in_user_key_mode(inst, moto):
    """enable_sharing on a personal mount: the share key wraps the mount files' keys as
    it does for home files, so the recipient reads them with their own password."""
    m = inst.mounts.create("/Mine", "amazons3", "amazons3::accesskey", s3_config(moto),
                           user="alice")
    inst.mounts.set_option(m.id, "enable_sharing", "true")
    mv = inst.dav_vault
    alice = inst.login.login("alice", "alicepass1")
    inst.login.login("bob", "bobpass123")  # bob has a key pair
    with context.acting_as(*alice.identities):
        mv.make_dir(mv.resolve("alice", "Mine/docs"))
        mv.write_bytes(mv.resolve("alice", "Mine/docs/d.txt"), b"for bob too")
        share = inst.shares.create("alice", "Mine/docs", 0, "bob")
    assert share.spath == f"{m.root}/docs" and share.owner == "alice"
    bob = inst.login.login("bob", "bobpass123")
    target = inst.shares.resolve("bob", "docs/d.txt")
    assert target.spath == f"{m.root}/docs/d.txt"
    assert "master" not in recipients_of(inst, target.spath)
    assert len(recipients_of(inst, target.spath)) == 2, recipients_of(inst, target.spath)
    with context.acting_as(*bob.identities):
        assert mv.read_all(target.spath) == b"for bob too"
