"""The settings pages in a real browser (headless Chromium via Selenium): an LDAP user
whose password was changed in the directory repairs their key and opts in to recovery,
then reads their files over WebDAV again. Leaves a screenshot in test-artifacts/."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import requests

from tests.browser import chromium_driver, ldap_config, user_key_path, wraps_of
from tests.conftest_ldap import unique

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
RECOVERY_PASS = f"recovery-{secrets.token_hex(8)}"


@pytest.fixture
def browser(tmp_path):
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_fix_locked_key_and_opt_in_to_recovery_in_a_browser(server_factory, slapd, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    srv = server_factory(users={}, config=ldap_config(slapd))
    srv.run_cli("encryption:disable-master-key", "--yes")
    srv.run_cli("encryption:enable-recovery", env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS})
    srv.restart()  # a running server may take up to a second to see the new mode

    uid = unique("bro")
    old, new = f"old-{secrets.token_hex(8)}", f"new-{secrets.token_hex(8)}"
    slapd.add_user(uid, old, cn="Browser User", mail=f"{uid}@example.org")
    files = {"notes.txt": b"written with the old password",
             "photo.bin": secrets.token_bytes(400_000)}
    for rel, data in files.items():
        r = requests.put(srv.url(uid, rel), data=data, auth=(uid, old), timeout=30)
        assert r.status_code == 201, r.text
    slapd.set_password(uid, new)
    r = requests.get(srv.url(uid, "notes.txt"), auth=(uid, new), timeout=30)
    assert r.status_code == 403  # locked until the user repairs it

    wait = WebDriverWait(browser, 20)

    def visible(element_id: str):
        return wait.until(ec.visibility_of_element_located((By.ID, element_id)))

    def fill(element_id: str, text: str) -> None:
        el = visible(element_id)
        el.clear()
        el.send_keys(text)

    # Log in with the password the directory knows now.
    browser.get(f"{srv.base}/settings/login")
    fill("user", uid)
    fill("password", new)
    browser.find_element(By.ID, "login").click()
    section = visible("key-password-section")
    assert browser.current_url == f"{srv.base}/settings/encryption"
    assert "changed elsewhere" in section.text
    assert browser.find_element(By.ID, "key-state").text.startswith("locked")
    assert not browser.find_elements(By.ID, "recovery-section")
    # The session cookie is invisible to page scripts and scoped to /settings.
    cookie = browser.get_cookie("davserver_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/settings"

    # Move the key from the old password to the new one.
    fill("old_key_password", old)
    fill("new_key_password", new)
    browser.find_element(By.ID, "update-key").click()
    message = visible("message")
    assert "readable again" in message.text
    assert browser.find_element(By.ID, "key-state").text == "unlocked"
    assert not browser.find_elements(By.ID, "key-password-section")

    # The recovery key exists, so the page offers the opt-in; take it.
    assert browser.find_element(By.ID, "recovery-state").text == "disabled"
    fill("recovery_password", new)
    browser.find_element(By.ID, "recovery-on").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "Recovery enabled"))
    assert browser.find_element(By.ID, "recovery-state").text == "enabled"
    assert browser.find_elements(By.ID, "recovery-off")
    assert not browser.find_elements(By.ID, "error")

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "settings.png"
    shot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 5 * 1024, shot.stat().st_size

    # WebDAV works again with the new password, and the files are wrapped for recovery.
    for rel, data in files.items():
        r = requests.get(srv.url(uid, rel), auth=(uid, new), timeout=30)
        assert r.status_code == 200 and r.content == data, (rel, r.status_code)
        to = [w["to"] for w in wraps_of(srv.data_dir, uid, rel)]
        assert any(t.startswith("recovery:") for t in to), to
    assert requests.get(srv.url(uid, "notes.txt"), auth=(uid, old),
                        timeout=30).status_code == 401
    assert user_key_path(srv.data_dir, uid).exists()

    # Log out: back to the login form, and the settings page needs a new login.
    browser.find_element(By.ID, "logout").click()
    visible("user")
    assert browser.current_url == f"{srv.base}/settings/login"
    assert browser.get_cookie("davserver_session") is None
    browser.get(f"{srv.base}/settings/encryption")
    visible("password")
    assert browser.current_url == f"{srv.base}/settings/login"
