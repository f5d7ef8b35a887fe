"""The example config documents every key the loader reads, and parses to the defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from davserver import config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "davserver.example.toml"


def test_example_matches_template():
    expected = config.TEMPLATE.format(host="127.0.0.1", port=8080,
                                      data_dir="/var/lib/davserver",
                                      secret_file="/etc/davserver/secret")
    assert EXAMPLE.read_text() == expected, "regenerate config/davserver.example.toml"


def test_every_key_the_loader_reads_is_documented():
    source = Path(config.__file__).read_text()
    read = set(re.findall(r'\.get\("([a-z_]+)"', source))
    read -= {"server", "storage", "encryption", "auth", "logging", "ldap"}
    text = EXAMPLE.read_text()
    missing = [k for k in sorted(read) if not re.search(rf"^#?\s*{k} =", text, re.M)]
    assert not missing, f"undocumented config keys: {missing}"


def test_example_loads_to_defaults(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(EXAMPLE.read_text())
    tomllib.loads(EXAMPLE.read_text())
    cfg = config.load(str(p), str(tmp_path / "d"))
    defaults = config.Config(path=str(p), data_dir=str(tmp_path / "d"))
    for field in ("host", "port", "workers", "threads", "fast_files", "socket_timeout",
                  "block_size", "fsync",
                  "throttle_max_failures", "throttle_window_seconds", "auth_cache_seconds",
                  "key_cache_seconds", "hpke_suite", "kdf_time_cost", "kdf_memory_kib",
                  "kdf_parallelism"):
        assert getattr(cfg, field) == getattr(defaults, field), field


def test_selftest_command_passes():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "davserver", "selftest"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("  ok ") == 5
