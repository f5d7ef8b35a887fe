"""The sharing settings page in headless Chromium: alice shares a folder with bob, bob
sees it in "shared with me" and reads it over WebDAV, a bad recipient is a clear error,
removing the share ends bob's access."""

from __future__ import annotations

import pytest

from tests.browser import chromium_driver, element_text, web_login


@pytest.fixture
def browser(tmp_path):
    driver = chromium_driver(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()


def test_share_and_unshare_from_the_settings_page(server_factory, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    srv = server_factory(users={"alice": None, "bob": None})
    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "docs")).status_code == 201
    assert a.put(srv.url("alice", "docs/d.txt"), data=b"shared from the web").status_code == 201
    wait = WebDriverWait(browser, 20)

    def visible(element_id: str):
        return wait.until(ec.visibility_of_element_located((By.ID, element_id)))

    def fill(element_id: str, text: str) -> None:
        el = visible(element_id)
        el.clear()
        el.send_keys(text)

    browser.get(f"{srv.base}/settings/login")
    fill("user", "alice")
    fill("password", srv.users["alice"])
    browser.find_element(By.ID, "login").click()
    visible("to-sharing").click()
    visible("none-by-me")

    # A recipient that does not exist: a clear error, nothing created.
    fill("share_path", "docs")
    fill("share_with", "nobody")
    browser.find_element(By.ID, "share-add").click()
    assert "nobody" in visible("error").text
    assert browser.find_elements(By.ID, "none-by-me")

    fill("share_path", "docs")
    fill("share_with", "bob")
    browser.find_element(By.ID, "perm_update").click()
    browser.find_element(By.ID, "share-add").click()
    assert "Shared /docs with bob" in visible("message").text
    row = browser.find_element(By.CSS_SELECTOR, "#shared-by-me tr[id^=share-]")
    assert "bob" in row.text and "read,update" in row.text

    b = srv.session("bob")
    assert b.get(srv.url("bob", "docs/d.txt")).content == b"shared from the web"
    assert b.put(srv.url("bob", "docs/d.txt"), data=b"bob was here").status_code == 204
    s, page = web_login(srv.base, "bob", srv.users["bob"])
    page = s.get(f"{srv.base}/settings/sharing", timeout=30).text
    assert "/docs" in (element_text(page, "shared-with-me") or "")

    row.find_element(By.CSS_SELECTOR, "button").click()
    assert "Stopped sharing /docs" in visible("message").text
    visible("none-by-me")
    assert b.get(srv.url("bob", "docs/d.txt")).status_code == 404
    assert a.get(srv.url("alice", "docs/d.txt")).content == b"bob was here"
