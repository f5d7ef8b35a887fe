"""Schema versions: a new database is at the current version, an older one is refused
until `davserver upgrade` migrates it (data kept), on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from davserver.meta import schema_version
from tests.instances import make_instance

pytestmark = pytest.mark.pg  # metadata on SQLite and on PostgreSQL


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "davserver", *args, "--config",
         str(tmp_path / "etc" / "davserver.toml"), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120)


def _make_version_1(inst) -> None:
    """What a database made before schema versions looks like: no version row and none
    of the later migrations' changes."""
    with inst.db.tx() as c:
        c.execute("DROP INDEX local_group_members_user")
        c.execute("DELETE FROM settings WHERE key = ?", (schema_version.VERSION_KEY,))


def _has_group_index(inst) -> bool:
    if inst.db.path.startswith("postgresql"):
        sql = "SELECT 1 FROM pg_indexes WHERE indexname = 'local_group_members_user'"
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE name = 'local_group_members_user'"
    return bool(inst.db.query(sql))


def test_new_database_is_at_the_current_version(inst):
    assert schema_version.CURRENT >= 2
    assert inst.db.schema_version() == schema_version.CURRENT
    assert _has_group_index(inst)


def test_old_database_refused_then_upgraded_with_its_data(tmp_path):
    inst = make_instance(tmp_path)
    inst.users.add("alice", "alicepass1")
    inst.vault.write_bytes("alice/keep.txt", b"kept through the upgrade")
    _make_version_1(inst)
    inst.close()

    for args in (["user:list"], ["serve", "--port", "0"]):
        res = _cli(tmp_path, *args)
        assert res.returncode == schema_version.SchemaOutOfDate.EXIT_CODE, res.stderr
        lines = res.stderr.strip().splitlines()
        assert lines[-1].endswith(f"database is at version 1, this code needs "
                                  f"{schema_version.CURRENT}: run davserver upgrade"), lines
        assert "Traceback" not in res.stderr

    res = _cli(tmp_path, "upgrade")
    assert res.returncode == 0, res.stderr
    assert f"version 1 -> 2: {schema_version.MIGRATIONS[0].what}" in res.stdout
    again = _cli(tmp_path, "upgrade")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (f"database is at version {schema_version.CURRENT}: "
                                    "nothing to do")

    res = _cli(tmp_path, "user:list")
    assert res.returncode == 0 and "alice" in res.stdout, res.stderr
    inst = make_instance(tmp_path)
    try:
        assert inst.db.schema_version() == schema_version.CURRENT
        assert _has_group_index(inst)
        assert inst.vault.read_all("alice/keep.txt") == b"kept through the upgrade"
    finally:
        inst.close()


def test_newer_database_refused(tmp_path):
    inst = make_instance(tmp_path)
    inst.db.set_setting(schema_version.VERSION_KEY, str(schema_version.CURRENT + 1))
    inst.close()
    for args in (["user:list"], ["upgrade"]):
        res = _cli(tmp_path, *args)
        assert res.returncode == schema_version.SchemaOutOfDate.EXIT_CODE, res.stderr
        assert res.stderr.strip().endswith(
            f"database is at version {schema_version.CURRENT + 1}, newer than this code "
            f"({schema_version.CURRENT}): install the davserver that upgraded it")


def test_object_names_blob_column_repaired_by_upgrade(tmp_path):
    """Version 2 databases on PostgreSQL had object_names.blob created as a column named
    "bytea" (the type translation matched the column name), so S3 primary storage by file
    ID failed on PostgreSQL at the first stat; upgrade to 3 renames it, data kept."""
    inst = make_instance(tmp_path)
    on_pg = inst.db.path.startswith("postgresql")
    with inst.db.tx() as c:
        if on_pg:
            c.execute("ALTER TABLE object_names RENAME COLUMN blob TO bytea")
        c.execute("INSERT INTO object_names(path, parent, is_dir, "
                  + ("bytea" if on_pg else "blob") + ", size, mtime) VALUES(?, ?, ?, ?, ?, ?)",
                  ("alice/x", "alice", 0, "b1", 3, 1.0))
        c.execute(schema_version.stamp_sql(), (schema_version.VERSION_KEY, "2"))
    inst.close()
    res = _cli(tmp_path, "upgrade")
    assert res.returncode == 0, res.stderr
    assert f"version 2 -> 3: {schema_version.MIGRATIONS[1].what}" in res.stdout
    inst = make_instance(tmp_path)
    try:
        assert inst.db.schema_version() == schema_version.CURRENT
        assert inst.db.query("SELECT blob FROM object_names WHERE path = ?",
                             ("alice/x",)) == [("b1",)]
    finally:
        inst.close()
