"""Layer rules: the import-linter contracts of pyproject.toml, and a few finer checks on
the source (which crypto module may use the hazmat layer)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- the import-linter contracts in pyproject.toml ([tool.importlinter]) ------------------

ROOT = PKG.parent
LINT = ("import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("module, bad_import, contract", [
    ("storage/local.py", "import davserver.crypto.header", "storage sees opaque bytes"),
    ("crypto/kdf.py", "import davserver.meta.db", "crypto imports nothing"),
    ("dav/propfind.py", "import davserver.storage.base", "dav, web and cli reach"),
    ("cli/user.py", "from davserver.meta import settings", "dav, web and cli reach"),
    ("web/app.py", "import davserver.crypto.stream", "dav, web and cli reach"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, bad_import, contract):
    """The contracts do catch a violation: one forbidden import added to a copy of the
    package makes lint-imports fail and name the contract."""
    shutil.copytree(PKG, tmp_path / "davserver",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "davserver" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    res = lint_imports(tmp_path)
    assert res.returncode != 0
    assert f"{contract}" in res.stdout and "BROKEN" in res.stdout, res.stdout[-3000:]
