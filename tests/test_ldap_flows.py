"""User-key mode with LDAP logins, end to end: a real slapd, a real server process, the
real CLI. Covers first login, passwords changed in the directory (fixed by the CLI or the
settings page), recovery, what the administrator can and cannot read, the KDF cache,
filter injection, an unreachable directory and the post-quantum HPKE suite."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from davserver import accounts
from davserver.auth.login import LoginFailed
from davserver.instance import open_instance
from davserver.vault.userkeys import KeyLocked
from tests.browser import (
    element_text,
    key_file_of,
    ldap_config,
    ldap_section,
    stored_path,
    user_key_path,
    web_login,
    web_post,
    wraps_of,
)
from tests.conftest_ldap import unique
from tests.instances import WEAK_KDF_TOML, make_instance
from tests.ldap_server import SlapdServer
from tests.live import LiveServer, free_port

RECOVERY_PASS = f"recovery-{secrets.token_hex(8)}"
PROPFIND0 = {"Depth": "0"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory, slapd: SlapdServer) -> Iterator[LiveServer]:
    """One user-key-mode server with LDAP logins and a recovery key; tests use their own
    directory users (unique names), so they do not see each other's files."""
    s = LiveServer(tmp_path_factory.mktemp("ldapflows"), users={}, config=ldap_config(slapd))
    try:
        s.create()
        out = s.run_cli("encryption:disable-master-key", "--yes").stdout
        assert "user-key mode enabled" in out
        s.run_cli("encryption:enable-recovery", env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS})
        yield s.start()
    finally:
        s.stop()


def new_user(slapd: SlapdServer, prefix: str = "ann") -> tuple[str, str]:
    uid = unique(prefix)
    password = f"pw-{secrets.token_hex(8)}"
    slapd.add_user(uid, password, cn=f"User {uid}", mail=f"{uid}@example.org")
    return uid, password


def put(srv: LiveServer, user: str, password: str, rel: str, data: bytes) -> None:
    r = requests.put(srv.url(user, rel), data=data, auth=(user, password), timeout=30)
    assert r.status_code in (201, 204), f"{r.status_code}: {r.text[:500]}"


def get(srv: LiveServer, user: str, password: str, rel: str) -> requests.Response:
    return requests.get(srv.url(user, rel), auth=(user, password), timeout=30)


def upload_set(srv: LiveServer, user: str, password: str) -> dict[str, bytes]:
    """A few files, one in a folder, one spanning several 256 KiB chunks."""
    r = requests.request("MKCOL", srv.url(user, "docs"), auth=(user, password), timeout=30)
    assert r.status_code == 201, r.text
    files = {"a.txt": b"alpha " + secrets.token_bytes(32),
             "docs/b.bin": secrets.token_bytes(600_000),
             "docs/empty.txt": b""}
    for rel, data in files.items():
        put(srv, user, password, rel, data)
    return files


def assert_all_readable(srv: LiveServer, user: str, password: str,
                        files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        r = get(srv, user, password, rel)
        assert r.status_code == 200, f"{rel}: {r.status_code} {r.text[:300]}"
        assert r.content == data, rel


def assert_locked(r: requests.Response) -> None:
    """403 "key locked" (the explanation itself is checked once, in its own test)."""
    assert r.status_code == 403, f"{r.status_code}: {r.text[:300]}"
    assert "could not be unlocked" in r.text and "Traceback" not in r.text, r.text


def recipients(srv: LiveServer, user: str, rel: str) -> list[str]:
    return [w["to"] for w in wraps_of(srv.data_dir, user, rel)]


# --- first login ----------------------------------------------------------------------


def test_first_login_creates_keys_and_files_round_trip(srv, slapd):
    uid, pw = new_user(slapd)
    key_path = user_key_path(srv.data_dir, uid)
    assert not key_path.exists()

    # The very first request is a write: no "log in once, then again" dance.
    put(srv, uid, pw, "hello.txt", b"hello from ldap")
    assert key_path.exists()
    doc = json.loads(key_path.read_text())
    assert doc["format"] == "davserver-userkey/1" and doc["user"] == uid
    assert doc["kdf"]["time_cost"] == 1 and doc["kdf"]["memory_kib"] == 1024  # config applied
    assert pw not in key_path.read_text()

    r = get(srv, uid, pw, "hello.txt")
    assert r.status_code == 200 and r.content == b"hello from ldap"
    files = upload_set(srv, uid, pw)
    assert_all_readable(srv, uid, pw, files)

    # Wrapped for this user's key only (no master key, not opted in to recovery), and the
    # bytes on disk are not the plaintext.
    assert recipients(srv, uid, "hello.txt") == [f"user:{uid}:{doc['id']}"]
    assert b"hello from ldap" not in stored_path(srv.data_dir, uid, "hello.txt").read_bytes()

    listed = json.loads(srv.run_cli("user:list", "--output", "json").stdout)
    rec = [u for u in listed if u["name"] == uid]
    assert rec and rec[0]["backend"] == "ldap"


# --- password changed in the directory ------------------------------------------------


def files_then_directory_change(srv, slapd) -> tuple[str, str, str, dict]:
    """A user with uploaded files whose password the directory then changes."""
    uid, old = new_user(slapd)
    files = upload_set(srv, uid, old)
    new = f"new-{secrets.token_hex(8)}"
    slapd.set_password(uid, new)
    return uid, old, new, files


def test_directory_password_change_fixed_with_cli(srv, slapd):
    uid, old, new, files = files_then_directory_change(srv, slapd)

    assert_locked(get(srv, uid, new, "a.txt"))
    assert get(srv, uid, old, "a.txt").status_code == 401

    res = srv.run_cli("encryption:update-key-password", uid, "--old-password-from-env",
                      "--password-from-env",
                      env={"DAVSERVER_OLD_PASS": old, "DAVSERVER_PASS": new})
    assert "updated" in res.stdout
    assert_all_readable(srv, uid, new, files)
    assert get(srv, uid, old, "a.txt").status_code == 401
    # Still writable, and the new file is readable too.
    put(srv, uid, new, "later.txt", b"written after the fix")
    assert get(srv, uid, new, "later.txt").content == b"written after the fix"


def test_locked_key_403_explains_what_to_do(srv, slapd):
    uid, old = new_user(slapd)
    put(srv, uid, old, "a.txt", b"x")
    new = f"new-{secrets.token_hex(8)}"
    slapd.set_password(uid, new)
    r = get(srv, uid, new, "a.txt")
    assert r.status_code == 403
    # The user must learn where to fix it and that the previous password is needed.
    text = " ".join(r.text.split())
    assert "/settings/encryption" in text, f"403 body is cut short: {r.text!r}"
    assert "old and new password" in text and "administrator" in text, r.text


def test_old_password_refused_as_soon_as_directory_changes(srv, slapd):
    """The directory is the authority: once it changed a password, the old one must stop
    working at the next request, even if the server saw it succeed a moment ago."""
    uid, old = new_user(slapd)
    put(srv, uid, old, "a.txt", b"x")
    assert get(srv, uid, old, "a.txt").status_code == 200  # the old password is "warm"
    slapd.set_password(uid, f"new-{secrets.token_hex(8)}")
    r = get(srv, uid, old, "a.txt")
    assert r.status_code == 401, (
        f"old LDAP password still accepted ({r.status_code}) after the directory changed it")


def test_directory_password_change_fixed_on_settings_page(srv, slapd):
    uid, old, new, files = files_then_directory_change(srv, slapd)
    assert_locked(get(srv, uid, new, "a.txt"))

    s, page = web_login(srv.base, uid, new)
    assert page.status_code == 200 and page.url.endswith("/settings/encryption"), page.url
    assert 'id="key-password-section"' in page.text
    assert element_text(page.text, "key-state").startswith("locked")
    assert 'id="recovery-section"' not in page.text  # nothing else to do while locked

    # The "current password" must be the one the directory accepts now.
    r = web_post(s, srv.base, "key-password", page.text, old_password=old,
                 new_password=f"other-{secrets.token_hex(4)}")
    assert r.status_code == 400 and "not your current login password" in r.text
    assert_locked(get(srv, uid, new, "a.txt"))

    r = web_post(s, srv.base, "key-password", r.text, old_password=old, new_password=new)
    assert r.status_code == 200, r.text[:1000]
    assert "readable again" in (element_text(r.text, "message") or "")
    assert 'id="key-password-section"' not in r.text
    assert element_text(r.text, "key-state") == "unlocked"

    assert_all_readable(srv, uid, new, files)
    assert get(srv, uid, old, "a.txt").status_code == 401


def test_wrong_old_password_changes_nothing(srv, slapd):
    uid, old, new, files = files_then_directory_change(srv, slapd)
    key_path = user_key_path(srv.data_dir, uid)
    key_before = key_path.read_bytes()
    wraps_before = key_file_of(srv.data_dir, uid, "a.txt").read_bytes()

    # On the page.
    s, page = web_login(srv.base, uid, new)
    assert 'id="key-password-section"' in page.text
    r = web_post(s, srv.base, "key-password", page.text, old_password="not-the-old-one",
                 new_password=new)
    assert r.status_code == 400
    assert "could not be unlocked" in (element_text(r.text, "error") or ""), r.text[:1000]
    assert 'id="key-password-section"' in r.text  # still locked, form offered again
    assert key_path.read_bytes() == key_before
    assert_locked(get(srv, uid, new, "a.txt"))

    # With the command.
    res = srv.run_cli("encryption:update-key-password", uid, "--old-password-from-env",
                      "--password-from-env", check=False,
                      env={"DAVSERVER_OLD_PASS": "not-the-old-one", "DAVSERVER_PASS": new})
    assert res.returncode == 5, res
    assert "could not be unlocked" in res.stderr and "Traceback" not in res.stderr
    assert key_path.read_bytes() == key_before
    assert key_file_of(srv.data_dir, uid, "a.txt").read_bytes() == wraps_before
    assert_locked(get(srv, uid, new, "a.txt"))
    assert get(srv, uid, old, "a.txt").status_code == 401

    # The right old password still works afterwards: nothing was damaged.
    srv.run_cli("encryption:update-key-password", uid, "--old-password-from-env",
                "--password-from-env", env={"DAVSERVER_OLD_PASS": old, "DAVSERVER_PASS": new})
    assert_all_readable(srv, uid, new, files)


# --- recovery -------------------------------------------------------------------------


def test_admin_recovery_after_helpdesk_reset(srv, slapd):
    uid, pw = new_user(slapd)
    put(srv, uid, pw, "before.txt", b"uploaded before opting in")
    assert not any(r.startswith("recovery:") for r in recipients(srv, uid, "before.txt"))

    res = srv.run_cli("encryption:user-recovery", uid, "--enable", "--output", "json",
                      env={"DAVSERVER_PASS": pw})
    assert json.loads(res.stdout) == {"rewrapped": 1, "unchanged": 0, "failed": 0}
    assert any(r.startswith("recovery:") for r in recipients(srv, uid, "before.txt"))

    put(srv, uid, pw, "after.txt", b"uploaded after opting in")
    assert any(r.startswith("recovery:") for r in recipients(srv, uid, "after.txt"))
    old_key_id = json.loads(user_key_path(srv.data_dir, uid).read_text())["id"]

    # The helpdesk resets the password in the directory; the old one is gone for good.
    new = f"helpdesk-{secrets.token_hex(8)}"
    slapd.set_password(uid, new)
    assert_locked(get(srv, uid, new, "before.txt"))

    res = srv.run_cli("encryption:recover-user", uid, "--output", "json",
                      env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS, "DAVSERVER_PASS": new})
    assert json.loads(res.stdout)["failed"] == 0
    new_key_id = json.loads(user_key_path(srv.data_dir, uid).read_text())["id"]
    assert new_key_id != old_key_id

    assert get(srv, uid, new, "before.txt").content == b"uploaded before opting in"
    assert get(srv, uid, new, "after.txt").content == b"uploaded after opting in"
    assert get(srv, uid, pw, "before.txt").status_code == 401
    for rel in ("before.txt", "after.txt"):
        to = recipients(srv, uid, rel)
        assert f"user:{uid}:{new_key_id}" in to
        assert f"user:{uid}:{old_key_id}" not in to  # the lost key's wraps are dropped
        assert any(r.startswith("recovery:") for r in to)  # still opted in


def test_recover_user_with_wrong_recovery_password_changes_nothing(srv, slapd):
    uid, pw = new_user(slapd)
    put(srv, uid, pw, "a.txt", b"a")
    srv.run_cli("encryption:user-recovery", uid, "--enable", env={"DAVSERVER_PASS": pw})
    key_before = user_key_path(srv.data_dir, uid).read_bytes()
    res = srv.run_cli("encryption:recover-user", uid, check=False,
                      env={"DAVSERVER_RECOVERY_PASS": "wrong-recovery",
                           "DAVSERVER_PASS": "whatever-new-1"})
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert user_key_path(srv.data_dir, uid).read_bytes() == key_before
    assert get(srv, uid, pw, "a.txt").content == b"a"


def test_recover_user_not_opted_in_keeps_the_key(srv, slapd):
    """recover-user cannot help a user who never opted in; it must say so without
    replacing the only key that still opens their files (their own password does)."""
    uid, pw = new_user(slapd)
    put(srv, uid, pw, "a.txt", b"only my password opens this")
    key_before = user_key_path(srv.data_dir, uid).read_bytes()
    res = srv.run_cli("encryption:recover-user", uid, check=False,
                      env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS,
                           "DAVSERVER_PASS": f"reset-{secrets.token_hex(6)}"})
    assert res.returncode != 0, res.stdout  # refused, or done with failures: both say so
    # The running server still has the old key in memory, so ask a fresh process (what
    # the server would be after a restart) whether the user's own password opens it.
    inst = open_instance(srv.config, srv.data_dir)
    try:
        assert inst.userkeys.can_unlock(uid, pw), (
            "recover-user replaced the key of a user who had not opted in: their files are "
            "now unreadable with any password")
    finally:
        inst.close()
    assert user_key_path(srv.data_dir, uid).read_bytes() == key_before


def test_running_server_follows_a_key_replaced_by_the_cli(srv, slapd):
    """recover-user gives the user a new key pair. If it is run with the password the user
    already uses (re-keying a user whose key may have leaked), the running server must not
    keep serving with the old key it has in memory: that key's wraps are gone."""
    uid, pw = new_user(slapd)
    put(srv, uid, pw, "a.txt", b"rekeyed")  # the server now holds the unlocked key
    srv.run_cli("encryption:user-recovery", uid, "--enable", env={"DAVSERVER_PASS": pw})
    res = srv.run_cli("encryption:recover-user", uid, "--output", "json",
                      env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS, "DAVSERVER_PASS": pw})
    assert json.loads(res.stdout)["failed"] == 0
    r = get(srv, uid, pw, "a.txt")
    assert r.status_code == 200 and r.content == b"rekeyed", (
        f"{r.status_code}: the server still unlocks with the replaced key it cached")


def test_admin_cannot_read_user_key_mode_files(srv, slapd, tmp_path):
    alice, apw = new_user(slapd, "alice")
    bob, bpw = new_user(slapd, "bob")
    a_plain = b"alice-secret-" + secrets.token_hex(16).encode()
    b_plain = b"bob-secret-" + secrets.token_hex(16).encode()
    put(srv, alice, apw, "secret.txt", a_plain)
    put(srv, bob, bpw, "secret.txt", b_plain)
    srv.run_cli("encryption:user-recovery", bob, "--enable", env={"DAVSERVER_PASS": bpw})

    # Online: the local admin (who holds the master key and the instance secret) gets
    # nothing; homes are private, so the path does not even exist for them.
    admin = ("admin", srv.admin_password)
    for who in (alice, bob):
        r = requests.get(srv.url(who, "secret.txt"), auth=admin, timeout=30)
        assert r.status_code == 404, r.status_code
        r = requests.request("PROPFIND", srv.url(who), auth=admin, headers=PROPFIND0,
                             timeout=30)
        assert r.status_code == 404, r.status_code
    r = requests.request("PROPFIND", srv.url("admin"), auth=admin, headers=PROPFIND0,
                         timeout=30)
    assert r.status_code == 207  # the admin login itself works

    # Offline, with everything an administrator has: data, key store, instance secret.
    out = tmp_path / "out"
    for who, plain in ((alice, a_plain), (bob, b_plain)):
        res = srv.run_cli("recover", "--data", srv.data_dir,
                          "--keys", str(Path(srv.data_dir) / "keys"),
                          "--secret-file", str(srv.etc / "secret"), "--out", str(out),
                          "--user", who, "--output", "json", check=False)
        assert res.returncode == 3, res
        report = json.loads(res.stdout)
        assert report["decrypted"] == 0
        assert [(f["path"], f["error"]) for f in report["failed"]] == [
            (f"{who}/secret.txt", "no key for this file in the key store")]
        assert not (out / who / "secret.txt").exists()
        assert not (out / who / "secret.txt.partial").exists()
        for p in out.rglob("*"):
            assert not p.is_file() or plain not in p.read_bytes(), p
    # Bob opted in, yet the recovery password is no master key: offline recover still fails
    # for him (above); only recover-user, with the recovery password, gives access, and
    # then only to bob, under the password the helpdesk gave him.
    new = f"helpdesk-{secrets.token_hex(8)}"
    slapd.set_password(bob, new)
    res = srv.run_cli("encryption:recover-user", bob, "--output", "json",
                      env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS, "DAVSERVER_PASS": new})
    assert json.loads(res.stdout) == {"rewrapped": 1, "unchanged": 0, "failed": 0}
    assert get(srv, bob, new, "secret.txt").content == b_plain
    assert requests.get(srv.url(bob, "secret.txt"), auth=admin, timeout=30).status_code == 404


def test_recovery_opt_in_and_out_on_the_page(srv, slapd):
    uid, pw = new_user(slapd)
    files = upload_set(srv, uid, pw)
    s, page = web_login(srv.base, uid, pw)
    assert element_text(page.text, "recovery-state") == "disabled"
    assert 'id="recovery-on"' in page.text

    # Opting in needs the password: a wrong one is refused and changes nothing.
    r = web_post(s, srv.base, "recovery", page.text, enable="1", password="not-my-password")
    assert r.status_code == 400 and element_text(r.text, "error")
    assert element_text(r.text, "recovery-state") == "disabled"
    for rel in files:
        assert not any(t.startswith("recovery:") for t in recipients(srv, uid, rel))

    r = web_post(s, srv.base, "recovery", r.text, enable="1", password=pw)
    assert r.status_code == 200, r.text[:1000]
    assert "Recovery enabled" in (element_text(r.text, "message") or "")
    assert element_text(r.text, "recovery-state") == "enabled"
    for rel in files:
        to = recipients(srv, uid, rel)
        assert len(to) == 2 and to[0].startswith(f"user:{uid}:") and to[1].startswith(
            "recovery:"), to

    r = web_post(s, srv.base, "recovery", r.text, enable="0")
    assert r.status_code == 200
    assert element_text(r.text, "message") == "Recovery disabled."
    assert element_text(r.text, "recovery-state") == "disabled"
    for rel in files:
        assert "recovery:" not in key_file_of(srv.data_dir, uid, rel).read_text()
        assert len(recipients(srv, uid, rel)) == 1
    put(srv, uid, pw, "after-opt-out.txt", b"new file")
    assert "recovery:" not in key_file_of(srv.data_dir, uid, "after-opt-out.txt").read_text()
    assert_all_readable(srv, uid, pw, files)

    # The same with the command.
    srv.run_cli("encryption:user-recovery", uid, "--enable", env={"DAVSERVER_PASS": pw})
    assert "recovery:" in key_file_of(srv.data_dir, uid, "a.txt").read_text()
    srv.run_cli("encryption:user-recovery", uid, "--disable")
    for rel in [*files, "after-opt-out.txt"]:
        assert "recovery:" not in key_file_of(srv.data_dir, uid, rel).read_text()
    assert_all_readable(srv, uid, pw, files)


# --- the KDF cache (in process: the only way to count derivations) --------------------


def test_kdf_runs_once_per_password(tmp_path, slapd):
    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True)
    ldap = ldap_section(slapd)
    conf.write_text(WEAK_KDF_TOML + 'hpke_suite = "x25519"\n\n[ldap]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in ldap.items()))
    inst = make_instance(tmp_path, user_mode=True)
    try:
        uid, pw = new_user(slapd)
        inst.login.login(uid, pw)  # first login: creates (seals) the key
        assert inst.users.get(uid).backend == "ldap"
        assert inst.userkeys.derivations == 1
        for _ in range(5):
            p = inst.login.login(uid, pw)
            assert p.identities and not p.key_locked
        assert inst.userkeys.derivations == 1

        new = f"new-{secrets.token_hex(8)}"
        slapd.set_password(uid, new)
        for n in (2, 3):  # a password the key does not open is tried again every time
            with pytest.raises(KeyLocked):
                inst.login.login(uid, new)
            assert inst.userkeys.derivations == n
        with pytest.raises(LoginFailed):  # refused by the directory: no KDF at all
            inst.login.login(uid, pw)
        assert inst.userkeys.derivations == 3

        accounts.update_key_password(inst, uid, pw, new)  # open + re-seal
        assert inst.userkeys.derivations == 5
        for _ in range(4):
            inst.login.login(uid, new)
        assert inst.userkeys.derivations == 6
    finally:
        inst.close()


# --- hostile logins and a broken directory --------------------------------------------


def test_ldap_injection_logins_are_plain_401(srv, slapd):
    uid, pw = new_user(slapd, "inj")
    url = f"{srv.base}/remote.php/webdav/"
    logins = ["*", "uid*", "admin)(uid=*", f"{uid[:5]}*", f"*)(uid={uid}",
              f"{uid})(|(uid=*", "*)(objectClass=*", f"{uid}\\2a", f"{uid}\x00"]
    for login in logins:
        for password in (pw, "*"):
            r = requests.request("PROPFIND", url, auth=(login, password), headers=PROPFIND0,
                                 timeout=30)
            assert r.status_code == 401, f"{login!r}: {r.status_code} {r.text[:300]}"
            assert "Traceback" not in r.text
    assert requests.request("PROPFIND", url, auth=(uid, pw), headers=PROPFIND0,
                            timeout=30).status_code == 207
    names = {u["name"] for u in json.loads(srv.run_cli("user:list", "--output", "json").stdout)}
    assert not names & set(logins)


def test_unreachable_directory_is_503_not_500(server_factory, slapd):
    # A port nothing listens on; the local admin must keep working.
    srv = server_factory(users={}, config=ldap_config(
        slapd, throttle=5, uri=f"ldap://127.0.0.1:{free_port()}", timeout_seconds=2))
    url = f"{srv.base}/remote.php/webdav/"
    for _ in range(7):  # more than the throttle allows: an outage is not a failed login
        r = requests.request("PROPFIND", url, auth=("someone", "some-password"),
                             headers=PROPFIND0, timeout=30)
        assert r.status_code == 503, f"{r.status_code}: {r.text[:300]}"
        assert int(r.headers["Retry-After"]) > 0
        assert "directory" in r.text and "Traceback" not in r.text
    r = requests.request("PROPFIND", url, auth=("admin", srv.admin_password),
                         headers=PROPFIND0, timeout=30)
    assert r.status_code == 207
    _s, page = web_login(srv.base, "someone", "some-password")
    assert page.status_code == 503 and "directory" in page.text
    assert "Traceback" not in srv.log_text()


# --- post-quantum hybrid suite --------------------------------------------------------


def test_user_key_mode_with_mlkem768_x25519(server_factory, slapd):
    srv = server_factory(users={}, config=ldap_config(
        slapd, encryption={"hpke_suite": "mlkem768-x25519"}))
    srv.run_cli("encryption:disable-master-key", "--yes")
    srv.run_cli("encryption:enable-recovery", env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS})
    srv.restart()  # a running server may take up to a second to see the new mode
    uid, pw = new_user(slapd, "pq")
    files = upload_set(srv, uid, pw)
    assert_all_readable(srv, uid, pw, files)
    doc = json.loads(user_key_path(srv.data_dir, uid).read_text())
    assert doc["suite"] == "mlkem768-x25519"
    # The user uploading holds their private key: self wraps (symmetric, so nothing for a
    # quantum computer to break). Opting in to recovery adds HPKE wraps in the PQ suite.
    srv.run_cli("encryption:user-recovery", uid, "--enable", env={"DAVSERVER_PASS": pw})
    for rel in files:
        wraps = wraps_of(srv.data_dir, uid, rel)
        assert [(w["to"].split(":")[0], w["suite"]) for w in wraps] == [
            ("user", "self"), ("recovery", "mlkem768-x25519")], wraps
        assert wraps[0]["to"] == f"user:{uid}:{doc['id']}"
        assert len(base64.b64decode(wraps[1]["sealed"])) == 1120 + 32 + 16
    # And the key survives a restart (nothing only in memory).
    srv.restart()
    assert_all_readable(srv, uid, pw, files)
    assert os.path.getsize(stored_path(srv.data_dir, uid, "docs/b.bin")) > 600_000
