"""Schema versions and the migrations between them, for SQLite and PostgreSQL alike.

Why numbered migrations next to ``CREATE TABLE IF NOT EXISTS``: a new table is additive
and every open creates it, but a changed table, column or index of an existing database
needs a step that runs once, in order, and is recorded. A database made by an older
davserver is left untouched until an admin runs ``davserver upgrade`` (stop every node
first); until then every command and ``serve`` refuse with one line saying so, instead of
running new code against an old layout.

The version is the settings row ``db.schema_version``. A database whose tables exist but
that has no such row was made before versions existed: version 1. A new database is
created at :data:`CURRENT` directly (the schema strings describe the current layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from davserver.errors import DavServerError

VERSION_KEY = "db.schema_version"


@dataclass(frozen=True)
class Migration:
    version: int  # the version the database is at after this step
    what: str  # shown by `davserver upgrade`
    statements: tuple[str, ...]  # SQLite dialect; PostgreSQL gets them translated
    #: PostgreSQL's own dialect, run only there (repairs of what a translation got wrong)
    postgresql: tuple[str, ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "index group members by user (group lookups at login)",
              ("CREATE INDEX IF NOT EXISTS local_group_members_user "
               "ON local_group_members(user)",)),
    Migration(3, "PostgreSQL: object_names.blob was created under the name bytea "
              "(S3 primary storage by file ID)", (),
              postgresql=("DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns "
                          "WHERE table_schema = current_schema() AND table_name = "
                          "'object_names' AND column_name = 'bytea') THEN ALTER TABLE "
                          "object_names RENAME COLUMN bytea TO blob; END IF; END $$",)),
)

#: The version this code needs. Each migration's index is also in the schema strings, so
#: a new database and an upgraded one end up alike.
CURRENT = MIGRATIONS[-1].version if MIGRATIONS else 1


class SchemaOutOfDate(DavServerError):
    """{detail}"""

    HTTP_STATUS = 503
    EXIT_CODE = 12  # refused until an admin runs `davserver upgrade`


def out_of_date(found: int) -> SchemaOutOfDate:
    if found > CURRENT:
        return SchemaOutOfDate(f"database is at version {found}, newer than this code "
                               f"({CURRENT}): install the davserver that upgraded it")
    return SchemaOutOfDate(f"database is at version {found}, this code needs {CURRENT}: "
                           "run davserver upgrade")


def stamp_sql() -> str:
    return ("INSERT INTO settings(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value")


def read_version(conn) -> int | None:
    """None: no davserver tables yet. ``conn`` is inside the caller's transaction."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (VERSION_KEY,)).fetchone()
    return int(row[0]) if row else 1


def upgrade(db) -> list[str]:
    """Bring ``db`` (a MetaDB opened with ``check_version=False``) to :data:`CURRENT`;
    one line per step done. Idempotent: at the current version it does nothing. Each
    migration and its version stamp commit together, so an interrupted upgrade resumes
    at the step that did not finish."""
    found = db.schema_version()
    if found is None:
        db.open_schema(check=True)
        return [f"created the database at version {CURRENT}"]
    if found > CURRENT:
        raise out_of_date(found)
    done = []
    for m in MIGRATIONS:
        if m.version <= found:
            continue
        with db.tx() as c:
            at = read_version(c)  # another node's upgrade may have run meanwhile
            if at >= m.version:
                continue
            for sql in m.statements:
                db.run_ddl(c, sql)
            for sql in m.postgresql:
                db.run_native_postgresql(c, sql)
            c.execute(stamp_sql(), (VERSION_KEY, str(m.version)))
        done.append(f"version {m.version - 1} -> {m.version}: {m.what}")
    db.open_schema(check=True)  # tables added since (CREATE IF NOT EXISTS)
    if not done:
        return [f"database is at version {CURRENT}: nothing to do"]
    return done
