"""Layer rules, checked on the source (what an import-linter contract would check)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "davserver"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def modules(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


#: The modules allowed to import pyca/cryptography: our own primitives, and the old ones
#: Nextcloud used (RC4, CFB, RSA PKCS#1 v1.5), which only the Nextcloud import reads with.
HAZMAT_MODULES = {"crypto/primitives.py", "crypto/legacy_nextcloud.py"}


def test_only_primitives_imports_hazmat():
    offenders = [str(p.relative_to(PKG)) for p in modules()
                 if any(m.startswith("cryptography") for m in imports_of(p))
                 and str(p.relative_to(PKG)) not in HAZMAT_MODULES]
    assert offenders == []


def test_storage_sees_only_opaque_bytes():
    for p in modules("storage"):
        bad = [m for m in imports_of(p) if m.startswith(("davserver.crypto", "davserver.dav",
                                                          "davserver.vault", "davserver.auth",
                                                          "davserver.meta"))]
        assert bad == [], f"{p.name} imports {bad}"


def test_crypto_and_meta_are_leaves():
    for sub, allowed in (("crypto", ("davserver.crypto", "davserver.errors")),
                         ("meta", ("davserver.meta", "davserver.errors"))):
        for p in modules(sub):
            bad = [m for m in imports_of(p) if m.startswith("davserver") and
                   not m.startswith(allowed)]
            assert bad == [], f"{sub}/{p.name} imports {bad}"


def test_http_and_cli_do_not_touch_crypto_or_storage_directly():
    for sub in ("dav", "web", "cli"):
        for p in modules(sub):
            bad = [m for m in imports_of(p) if m.startswith(("davserver.storage",
                                                              "davserver.crypto.primitives",
                                                              "davserver.crypto.stream",
                                                              "davserver.crypto.header",
                                                              "davserver.crypto.keywrap"))]
            assert bad == [], f"{sub}/{p.name} imports {bad}"
