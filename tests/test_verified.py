"""The table of recently verified passwords: what makes an entry match, and sharing by fork."""

from __future__ import annotations

import os

from davserver.meta.verified import VerifiedCache


def test_an_entry_matches_only_its_user_password_and_stored_hash():
    c = VerifiedCache()
    tag = c.tag("alice", "secret-one")
    assert not c.hit(tag, "alice", "$hash1")
    c.add(tag, "alice", "$hash1", 60)
    assert c.hit(tag, "alice", "$hash1")
    assert not c.hit(c.tag("alice", "secret-two"), "alice", "$hash1")  # another password
    assert not c.hit(tag, "alice", "$hash2")  # the stored hash changed (a reset elsewhere)
    assert not c.hit(tag, "bob", "$hash1")
    assert VerifiedCache().tag("alice", "secret-one") != tag  # keyed per server start


def test_expiry_forget_and_a_new_password_replacing_the_old():
    c = VerifiedCache()
    old, new = c.tag("alice", "old-password"), c.tag("alice", "new-password")
    c.add(c.tag("bob", "bobs-password"), "bob", None, 60)
    c.add(old, "alice", None, 60)
    c.add(new, "alice", None, 60)
    assert c.hit(new, "alice", None) and not c.hit(old, "alice", None)
    c.forget("alice")
    assert not c.hit(new, "alice", None)
    assert c.hit(c.tag("bob", "bobs-password"), "bob", None)  # others are kept
    c.add(old, "alice", None, -1)
    assert not c.hit(old, "alice", None)  # expired


def test_processes_forked_after_creation_share_the_table():
    c = VerifiedCache()
    tag = c.tag("alice", "checked-in-a-child")
    pid = os.fork()
    if pid == 0:
        c.add(tag, "alice", "$h", 60)
        os._exit(0)
    os.waitpid(pid, 0)
    assert c.hit(tag, "alice", "$h")


def test_a_payload_comes_back_only_for_a_valid_entry():
    c = VerifiedCache()
    tag = c.tag("alice", "pw-123456")
    c.add(tag, "alice", ("ino", 1), 60, b"sealed key")
    assert c.get(tag, "alice", ("ino", 1)) == b"sealed key"
    assert c.get(tag, "alice", ("ino", 2)) is None  # the key file changed
    assert c.secret("alice", "pw-123456") != tag  # the sealing key is not what is stored
    assert c.secret("alice", "pw-123456") != c.secret("alice", "pw-1234567")


def test_users_sharing_a_bucket_do_not_evict_each_other(monkeypatch):
    from davserver.meta import verified

    monkeypatch.setattr(verified, "SLOTS", verified.WAYS)  # a single bucket
    c = VerifiedCache()
    names = [f"user{i}" for i in range(verified.WAYS)]
    for n in names:
        c.add(c.tag(n, "password-1"), n, None, 60)
    assert all(c.hit(c.tag(n, "password-1"), n, None) for n in names)
    c.add(c.tag("one-more", "password-1"), "one-more", None, 60)  # evicts one, not all
    assert sum(c.hit(c.tag(n, "password-1"), n, None) for n in names) == verified.WAYS - 1
