"""User-key mode in process: keys at first login, password changes, recovery, the cache."""

from __future__ import annotations

import pytest

from davserver import accounts
from davserver.crypto import keywrap
from davserver.errors import DavServerError, KeyNotFound, UserError
from davserver.vault import context
from davserver.vault.userkeys import KeyLocked
from tests.instances import make_instance


@pytest.fixture(params=["x25519", "mlkem768-x25519"])
def inst(tmp_path, request):
    i = make_instance(tmp_path, user_mode=True, suite=request.param)
    i.users.add("alice", "alicepass1")
    yield i
    i.close()


def write(inst, principal, rel, data):
    with context.acting_as(*principal.identities):
        inst.vault.write_bytes(f"{principal.user}/{rel}", data)


def read(inst, principal, rel):
    with context.acting_as(*principal.identities):
        return inst.vault.read_all(f"{principal.user}/{rel}")


def test_first_login_creates_keys_and_files_are_wrapped_for_user_only(inst):
    assert not inst.userkeys.has_keys("alice")
    p = inst.login.login("alice", "alicepass1")
    assert inst.userkeys.has_keys("alice")
    write(inst, p, "a.txt", b"alice's secret")
    assert read(inst, p, "a.txt") == b"alice's secret"
    rec = inst.db.get_file("alice/a.txt")
    wraps = inst.keys.load(rec.file_id)
    assert [w.recipient.split(":")[0] for w in wraps] == ["user"]
    # alice uploading holds her private key: a self wrap, no HPKE
    assert wraps[0].suite == keywrap.SELF_SUITE
    # a writer without her key (an admin job) can only wrap to her public key
    with context.acting_as():
        inst.vault.write_bytes("alice/b.txt", b"from the admin")
    wraps = inst.keys.load(inst.db.get_file("alice/b.txt").file_id)
    assert [w.suite for w in wraps] == [inst.config.hpke_suite]
    assert read(inst, p, "b.txt") == b"from the admin"


def test_admin_cannot_read_user_files_without_recovery(inst):
    p = inst.login.login("alice", "alicepass1")
    write(inst, p, "a.txt", b"private")
    admin = inst.login.login("admin", "adminpass1")
    with context.acting_as(*admin.identities), pytest.raises(KeyNotFound):
        inst.vault.read_all("alice/a.txt")
    with pytest.raises(KeyLocked):  # no identities at all
        inst.vault.read_all("alice/a.txt")


def test_kdf_runs_once_per_password(inst):
    inst.login.login("alice", "alicepass1")
    before = inst.userkeys.derivations
    for _ in range(5):
        inst.login.login("alice", "alicepass1")
    assert inst.userkeys.derivations == before


def test_password_changed_elsewhere_then_update_key_password(inst):
    p = inst.login.login("alice", "alicepass1")
    write(inst, p, "a.txt", b"data")
    inst.users.reset_password("alice", "newpass123")  # as if the directory changed it
    with pytest.raises(KeyLocked):
        inst.login.login("alice", "newpass123")
    with pytest.raises(KeyLocked):
        accounts.update_key_password(inst, "alice", "wrong-old-pw", "newpass123")
    accounts.update_key_password(inst, "alice", "alicepass1", "newpass123")
    p2 = inst.login.login("alice", "newpass123")
    assert read(inst, p2, "a.txt") == b"data"


def test_local_password_change_rewraps(inst):
    p = inst.login.login("alice", "alicepass1")
    write(inst, p, "a.txt", b"data")
    with pytest.raises(UserError):
        accounts.change_local_password(inst, "alice", "not-the-password", "changed99")
    accounts.change_local_password(inst, "alice", "alicepass1", "changed99")
    with pytest.raises(DavServerError):
        inst.login.login("alice", "alicepass1")
    assert read(inst, inst.login.login("alice", "changed99"), "a.txt") == b"data"


def test_recovery_opt_in_and_admin_reset(inst):
    inst.userkeys.enable_recovery("recovery-pw-1")
    p = inst.login.login("alice", "alicepass1")
    write(inst, p, "before.txt", b"written before opting in")
    result = accounts.set_recovery(inst, "alice", True, password="alicepass1")
    assert result["rewrapped"] == 1
    write(inst, p, "after.txt", b"written after opting in")
    rec = inst.db.get_file("alice/after.txt")
    assert any(w.recipient.startswith("recovery:") for w in inst.keys.load(rec.file_id))
    # alice forgets her password; the admin resets it with the recovery key
    with pytest.raises(DavServerError):
        accounts.recover_user(inst, "alice", "wrong-recovery", "brandnew99")
    out = accounts.recover_user(inst, "alice", "recovery-pw-1", "brandnew99")
    assert out == {"rewrapped": 2, "unchanged": 0, "failed": 0}
    p2 = inst.login.login("alice", "brandnew99")
    assert read(inst, p2, "before.txt") == b"written before opting in"
    assert read(inst, p2, "after.txt") == b"written after opting in"
    # re-running is harmless
    again = accounts.recover_user(inst, "alice", "recovery-pw-1", "brandnew99")
    assert again["failed"] == 0


def test_opt_out_removes_recovery_wraps(inst):
    inst.userkeys.enable_recovery("recovery-pw-1")
    p = inst.login.login("alice", "alicepass1")
    accounts.set_recovery(inst, "alice", True, password="alicepass1")
    write(inst, p, "a.txt", b"x")
    accounts.set_recovery(inst, "alice", False)
    fid = inst.db.get_file("alice/a.txt").file_id
    assert not any(w.recipient.startswith("recovery:") for w in inst.keys.load(fid))
    with pytest.raises(UserError, match="not wrapped for the recovery key"):
        accounts.recover_user(inst, "alice", "recovery-pw-1", "brandnew99")
    # nothing changed: alice's own password still opens the file
    assert read(inst, inst.login.login("alice", "alicepass1"), "a.txt") == b"x"


def test_kdf_parameters_raised_rewrap_at_next_login(inst):
    inst.login.login("alice", "alicepass1")
    import json
    path = inst.userkeys._user_path("alice")
    assert json.load(open(path))["kdf"]["time_cost"] == 1
    inst.userkeys.params = type(inst.userkeys.params)(2, 2048, 1)
    inst.userkeys.forget("alice")
    inst.login.login("alice", "alicepass1")
    doc = json.load(open(path))
    assert (doc["kdf"]["time_cost"], doc["kdf"]["memory_kib"]) == (2, 2048)


def test_mode_switches_never_strand_data(tmp_path):
    inst = make_instance(tmp_path)
    inst.users.add("alice", "alicepass1")
    inst.vault.write_bytes("alice/a.txt", b"master-mode file")
    with pytest.raises(UserError, match="decrypt-all"):
        accounts.disable_master_key(inst)
    assert inst.mode() == "master"
    inst.vault.delete("alice/a.txt")
    accounts.disable_master_key(inst)
    assert inst.mode() == "user"
    p = inst.login.login("alice", "alicepass1")
    with context.acting_as(*p.identities):
        inst.vault.write_bytes("alice/b.txt", b"user-mode file")
    with pytest.raises(UserError, match="decrypt-all"):
        accounts.enable_master_key(inst)
    assert inst.mode() == "user"
