"""Helpers for tests of the /settings pages and user-key mode: server config for LDAP
logins, a requests-level web client, the on-disk key files of a live instance, and a
headless Chromium driven by Selenium that never downloads anything (no Selenium Manager,
no component updates)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import requests

from davserver.crypto import header as hdr
from davserver.vault.keystore import parse_key_file

#: Argon2id made cheap (as tests/instances.WEAK_KDF_TOML) for every config the tests write.
WEAK_KDF = {"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1}

_CSRF_RE = re.compile(r'<input type="hidden" name="csrf" value="([^"]*)">')

# --- server configuration ---------------------------------------------------------------


def ldap_section(slapd, **overrides) -> dict:
    """``[ldap]`` for the test slapd. LiveServer writes scalars only, so the URI goes in as
    ``uri`` (LdapConfig accepts that spelling for a single server)."""
    return {"uri": slapd.uri, "bind_dn": slapd.bind_dn, "bind_password": slapd.bind_password,
            "user_base": slapd.people_dn, "login_attribute": "uid",
            "quota_attribute": slapd.quota_attribute, "timeout_seconds": 3, **overrides}


def ldap_config(slapd, *, encryption: dict | None = None, throttle: int = 1000,
                **ldap_overrides) -> dict[str, dict]:
    """Config sections for ``LiveServer``/``server_factory``: weak KDF, LDAP logins and a
    throttle high enough that one test's deliberate failures (all from 127.0.0.1) do not
    become another test's 429s."""
    return {"encryption": {**WEAK_KDF, **(encryption or {})},
            "auth": {"throttle_max_failures": throttle},
            "ldap": ldap_section(slapd, **ldap_overrides)}


# --- requests-level web client ---------------------------------------------------------


def csrf_of(html: str) -> str:
    """The first hidden CSRF field of a rendered page."""
    m = _CSRF_RE.search(html)
    assert m, f"no csrf field in the page:\n{html[:2000]}"
    return m.group(1)


def web_login(base: str, user: str, password: str,
              session: requests.Session | None = None) -> tuple[requests.Session,
                                                                  requests.Response]:
    """GET the login page, then POST the form with its CSRF field; follows the redirect."""
    s = session or requests.Session()
    page = s.get(f"{base}/settings/login", timeout=30)
    assert page.status_code == 200, page.text[:500]
    r = s.post(f"{base}/settings/login", timeout=30,
               data={"csrf": csrf_of(page.text), "user": user, "password": password})
    return s, r


def web_post(s: requests.Session, base: str, path: str, page_html: str, **fields: str
             ) -> requests.Response:
    """POST a settings form, taking the CSRF token from the page it is on."""
    return s.post(f"{base}/settings/{path.lstrip('/')}", timeout=60,
                  data={"csrf": csrf_of(page_html), **fields})


def element_text(html: str, element_id: str) -> str | None:
    """Text of the element with ``id`` (the templates keep these on one element, no nesting
    of the same tag), or None if the page has no such element."""
    m = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    return None if m is None else re.sub(r"\s+", " ", m.group(2)).strip()


# --- key files of a live instance -------------------------------------------------------


def user_key_path(data_dir: str, user: str) -> Path:
    return Path(data_dir) / "keys" / "users" / f"{user}.json"


def stored_path(data_dir: str, user: str, rel: str) -> Path:
    return Path(data_dir) / "files" / user / rel.lstrip("/")


def key_file_of(data_dir: str, user: str, rel: str) -> Path:
    """The key file (wraps of the data key) of a stored file, found through the file ID in
    its header, as an administrator would."""
    with open(stored_path(data_dir, user, rel), "rb") as f:
        file_id = hdr.parse(f.read(hdr.HEADER_BYTES)).file_id.hex()
    return Path(data_dir) / "keys" / "files" / file_id[:2] / f"{file_id}.json"


def wraps_of(data_dir: str, user: str, rel: str) -> list[dict]:
    """The wraps as JSON objects, appended ones included (docs/FORMAT.md)."""
    path = key_file_of(data_dir, user, rel)
    return [{"to": w.recipient, "suite": w.suite, "sealed": base64.b64encode(w.sealed).decode()}
            for w in parse_key_file(path.read_bytes(), bytes.fromhex(path.stem))]


# --- headless Chromium ------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_driver(profile_dir: Path, *, width: int = 1000, height: int = 1300):
    """A headless Chromium with a throwaway profile. Fails (does not skip) when Chromium,
    its driver or Selenium are missing: the browser test is part of the suite."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            raise AssertionError(f"{tool} is missing (apt-get install -y chromium "
                                 "chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-default-apps",
                "--disable-extensions", "--password-store=basic",
                f"--window-size={width},{height}", f"--user-data-dir={profile_dir}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver
