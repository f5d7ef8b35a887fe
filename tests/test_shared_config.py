"""database.url / redis.url: read from the config, the environment wins, and a PostgreSQL
URL that does not answer stops the start in one line instead of silently using SQLite."""

from __future__ import annotations

import subprocess
import sys

import pytest

from davserver import config


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_urls_from_file_and_environment_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("DAVSERVER_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAVSERVER_REDIS_URL", raising=False)
    path = _write(tmp_path, '[database]\nurl = "meta/index.db"\n'
                            '[redis]\nurl = "redis://10.0.0.1:6379/0"\n')
    cfg = config.load(path, str(tmp_path / "d"))
    assert cfg.redis_url == "redis://10.0.0.1:6379/0"
    assert cfg.db_path == str(tmp_path / "d" / "meta" / "index.db")
    monkeypatch.setenv("DAVSERVER_REDIS_URL", "redis://127.0.0.1:7000/1")
    monkeypatch.setenv("DAVSERVER_DATABASE_URL", str(tmp_path / "other.db"))
    cfg = config.load(path, str(tmp_path / "d"))
    assert cfg.redis_url == "redis://127.0.0.1:7000/1"
    assert cfg.db_path == str(tmp_path / "other.db")


def test_default_is_sqlite_in_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DAVSERVER_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAVSERVER_REDIS_URL", raising=False)
    cfg = config.load(_write(tmp_path, ""), str(tmp_path / "d"))
    assert (cfg.database_url, cfg.redis_url) == ("", "")
    assert cfg.db_path == str(tmp_path / "d" / "davserver.db")


@pytest.mark.parametrize("where", ["file", "env"])
def test_unreachable_postgresql_stops_the_start(tmp_path, where):
    url = "postgresql://dav@127.0.0.1:1/davserver"  # nothing listens on port 1
    toml = f'[database]\nurl = "{url}"\n' if where == "file" else ""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if where == "env":
        env["DAVSERVER_DATABASE_URL"] = url
    res = subprocess.run([sys.executable, "-m", "davserver", "serve", "--config",
                          _write(tmp_path, toml), "--data-dir", str(tmp_path / "d"),
                          "--port", "1"], env=env | _pythonpath(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 9, res.stderr  # unavailable, as storage or Redis would be
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].endswith("metadata database is not reachable; try again shortly")
    assert not (tmp_path / "d" / "davserver.db").exists(), "fell back to SQLite"


def _pythonpath() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_default_install_needs_neither_redis_nor_psycopg():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('redis', 'psycopg'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import davserver.cli.main, davserver.dav.app, davserver.instance\n"
        "print('imported')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout == "imported\n", res.stderr
