"""``davserver upgrade`` (occ's name): bring the metadata database to this code's schema."""

from __future__ import annotations

from davserver import config as config_mod
from davserver.cli.common import add_command, emit
from davserver.instance import upgrade_database


def cmd_upgrade(args) -> int:
    """Run the database migrations this version of davserver has and the database has
    not had yet (SQLite or PostgreSQL), and print each. Stop every node first; running it
    again does nothing. Until it has run, `serve` and every command that opens the
    database refuse to start."""
    cfg = config_mod.load(args.config, args.data_dir)
    config_mod.check_owner(cfg.data_dir)
    steps = upgrade_database(cfg)
    emit(args, {"steps": steps}, "\n".join(steps))
    return 0


def register(sub, common) -> None:
    p = add_command(sub, common, "upgrade", cmd_upgrade, cmd_upgrade.__doc__,
                    "upgrade the database")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
