"""Where ``init`` puts an instance's config and secret, and that it never takes another's.

Run as root with only ``DAVSERVER_DATA_DIR`` set, ``init`` writes to the system config dir;
a second instance started the same way used to run silently on the first one's config and
secret. These tests run the real CLI with the system config dir moved into ``tmp_path``
(``DAVSERVER_SYSTEM_CONFIG_DIR``, and ``XDG_CONFIG_HOME`` for a non-root run), so the
real /etc/davserver is never touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from davserver.vault.secret import write_secret
from tests.instances import WEAK_KDF_TOML


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("DAVSERVER_CONFIG", "DAVSERVER_DATA_DIR")}
    e["DAVSERVER_SYSTEM_CONFIG_DIR"] = str(tmp_path / "etc")
    e["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return e


def conf_dir(tmp_path: Path) -> Path:
    """The default config dir for this user, as davserver.config computes it."""
    return tmp_path / "etc" if os.geteuid() == 0 else tmp_path / "xdg" / "davserver"


def run(env: dict, *args: str, data_dir: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "davserver", *args],
                         env={**env, "DAVSERVER_DATA_DIR": str(data_dir)},
                         capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_second_instance_neither_shares_nor_clobbers_the_first(tmp_path, env):
    etc, a, b = conf_dir(tmp_path), tmp_path / "a", tmp_path / "b"
    res = run(env, "init", data_dir=a)
    assert res.returncode == 0, res.stderr
    conf_a, secret_a = etc / "davserver.toml", etc / "secret"
    before = (digest(conf_a), digest(secret_a))
    assert f'data_dir = "{a}"' in conf_a.read_text()

    # Same invocation for another data dir: refused, in one line naming the config.
    res = run(env, "init", data_dir=b)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("davserver: failed to ") and str(conf_a) in lines[0] \
        and str(a) in lines[0] and "--config" in lines[0], lines[0]
    assert not (b / "davserver.db").exists()
    assert (digest(conf_a), digest(secret_a)) == before

    # With its own config next to the first: its own secret too.
    conf_b = etc / "b.toml"
    res = run(env, "init", "--config", str(conf_b), data_dir=b)
    assert res.returncode == 0, res.stderr
    secret_b = etc / "b.secret"
    assert secret_b.exists() and digest(secret_b) != digest(secret_a)
    assert f'secret_file = "{secret_b}"' in conf_b.read_text()
    assert (digest(conf_a), digest(secret_a)) == before
    for conf, data in ((conf_a, a), (conf_b, b)):
        res = run(env, "encryption:status", "--config", str(conf), data_dir=data)
        assert res.returncode == 0, res.stderr

    # Running init again on either instance changes nothing.
    snapshot = [digest(p) for p in (conf_a, secret_a, conf_b, secret_b)]
    assert run(env, "init", data_dir=a).returncode == 0
    assert run(env, "init", "--config", str(conf_b), data_dir=b).returncode == 0
    assert [digest(p) for p in (conf_a, secret_a, conf_b, secret_b)] == snapshot


def test_an_existing_secret_and_config_are_used_untouched(tmp_path, env):
    etc, a = conf_dir(tmp_path), tmp_path / "a"
    etc.mkdir(parents=True)
    write_secret(str(etc / "secret"))
    (etc / "davserver.toml").write_text(WEAK_KDF_TOML + "# the admin's own config\n")
    before = (digest(etc / "secret"), digest(etc / "davserver.toml"))
    res = run(env, "init", data_dir=a)
    assert res.returncode == 0, res.stderr
    assert "secret existed already" in res.stderr
    assert (digest(etc / "secret"), digest(etc / "davserver.toml")) == before
    # The master key was made under that secret: the instance opens with it.
    res = run(env, "encryption:status", data_dir=a)
    assert res.returncode == 0, res.stderr


def test_a_config_naming_another_data_dir_is_reported_for_an_existing_instance(tmp_path, env):
    """An existing instance run with a config that names another data dir still runs (the
    command line wins, as documented), but says so in one line."""
    etc, a, b = conf_dir(tmp_path), tmp_path / "a", tmp_path / "b"
    assert run(env, "init", data_dir=a).returncode == 0
    assert run(env, "init", "--config", str(etc / "b.toml"), data_dir=b).returncode == 0
    res = run(env, "user:list", data_dir=b)  # the default config is a's
    warnings = [ln for ln in res.stderr.splitlines() if "belongs to the instance in" in ln]
    assert len(warnings) == 1 and str(a) in warnings[0] and str(b) in warnings[0], res.stderr
    res = run(env, "user:list", data_dir=a)
    assert "belongs to" not in res.stderr
