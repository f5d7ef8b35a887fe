"""Session-wide slapd fixture.

Usable either as a plugin (``pytest_plugins = ["tests.conftest_ldap"]``) or by importing
``slapd`` into a conftest. One server per session keeps the suite fast; tests share it, so
they should create entries under unique names (see :func:`unique`). Without slapd installed
the dependent tests are skipped, unless ``DAVSERVER_REQUIRE_SLAPD`` is set (for CI), in
which case they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.ldap_server import SLAPD, SlapdServer

_shared: SlapdServer | None = None
_holders = 0


@pytest.fixture(scope="session")
def slapd() -> Iterator[SlapdServer]:
    # Reference-counted so that registering this module as a plugin *and* importing the
    # fixture into a test module (two fixture definitions to pytest) still starts one slapd.
    global _shared, _holders
    if not shutil.which(SLAPD):
        if os.environ.get("DAVSERVER_REQUIRE_SLAPD"):
            pytest.fail(f"{SLAPD} is not installed and DAVSERVER_REQUIRE_SLAPD is set")
        pytest.skip(f"{SLAPD} is not installed (apt-get install slapd ldap-utils)")
    if _shared is None:
        _shared = SlapdServer().start()
    _holders += 1
    try:
        yield _shared
    finally:
        _holders -= 1
        if _holders == 0:
            _shared.stop()
            _shared = None


def unique(prefix: str) -> str:
    """A name no other test in the session uses, since the directory is shared."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
