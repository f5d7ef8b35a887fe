"""In-process instances for tests that need no HTTP server."""

from __future__ import annotations

from pathlib import Path

from davserver import config as config_mod
from davserver.instance import Instance, init_instance


def make_instance(tmp_path: Path, *, admin_password: str = "adminpass1") -> Instance:
    cfg = config_mod.load(str(tmp_path / "etc" / "davserver.toml"), str(tmp_path / "data"))
    cfg.fsync = False  # tests: crash safety is exercised by killing real processes
    init_instance(cfg, admin_password=admin_password)
    return Instance(cfg)
