"""In-process instances for tests that need no HTTP server."""

from __future__ import annotations

from pathlib import Path

from davserver import config as config_mod
from davserver.instance import Instance, init_instance

#: Written into test configs: Argon2id made cheap so tests stay fast (as borg's tests do).
WEAK_KDF_TOML = "[encryption]\nkdf_time_cost = 1\nkdf_memory_kib = 1024\nkdf_parallelism = 1\n"

#: database.url of the instances made here ("": SQLite); set per test by the metadata_url
#: fixture for tests marked pg (tests/conftest.py).
DATABASE_URL = ""


def make_instance(tmp_path: Path, *, admin_password: str = "adminpass1",
                  user_mode: bool = False, suite: str = "x25519",
                  fsync: bool = False, key_storage_root: str = "") -> Instance:
    conf = tmp_path / "etc" / "davserver.toml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists():
        conf.write_text(WEAK_KDF_TOML + f'hpke_suite = "{suite}"\n'
                        + (f'key_storage_root = "{key_storage_root}"\n' if key_storage_root
                           else "")
                        + (f'[database]\nurl = "{DATABASE_URL}"\n' if DATABASE_URL else ""))
    cfg = config_mod.load(str(conf), str(tmp_path / "data"))
    cfg.fsync = fsync  # off in most tests: crash safety is exercised by killing processes
    init_instance(cfg, admin_password=admin_password)
    inst = Instance(cfg)
    if user_mode:
        inst.db.set_setting("encryption.mode", "user")
    return inst
