"""``backup:create``, ``backup:restore`` and the offline ``recover``."""

from __future__ import annotations

import os

from davserver import config as config_mod
from davserver.cli.common import add_command, emit, instance_from, password_from_env
from davserver.cli.progress import progress_bar
from davserver.errors import UserError
from davserver.vault import backup, offline

PASS_ENV = "DAVSERVER_BACKUP_PASS"


def _passphrase(args) -> str | None:
    if not args.passphrase_from_env:
        return None
    value = os.environ.get(PASS_ENV)
    if not value:
        raise UserError(f"set the passphrase in the environment variable {PASS_ENV}")
    return value


def cmd_create(args) -> int:
    """Write one archive with the instance secret, the key store and a consistent DB
    snapshot (data stays where it is). --passphrase-from-env encrypts the archive with
    $DAVSERVER_BACKUP_PASS."""
    inst = instance_from(args)
    result = backup.create(args.file, secret_file=inst.config.secret_file,
                           config_file=inst.config.path, key_root=inst.keys.docs, db=inst.db,
                           passphrase=_passphrase(args))
    emit(args, result, f"backup written to {args.file} ({result['key_files']} key files from "
         f"the {result['key_store']}"
         + ("" if result["database"] else ", no database: back up PostgreSQL with pg_dump")
         + (", encrypted" if result["encrypted"] else ", NOT encrypted: keep it safe") + ")")
    return 0


def cmd_restore(args) -> int:
    """Restore secret, key store and DB from a backup into this instance's locations.
    Stop the server first; --force overwrites an existing instance."""
    cfg = config_mod.load(args.config, args.data_dir)
    # Not configured: the store the backup came from (the database, or <data_dir>/keys).
    key_root = cfg.key_storage_root or f"default:{cfg.default_key_root}"
    config_mod.check_owner(cfg.data_dir)
    if cfg.database_url.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        raise UserError("the metadata is in PostgreSQL: restore it with pg_restore, and the "
                        "secret and key store from this archive (docs/DEPLOY.md)")
    os.makedirs(cfg.data_dir, mode=0o700, exist_ok=True)
    result = backup.restore(args.file, passphrase=_passphrase(args),
                            secret_file=cfg.secret_file, key_root=key_root, db_path=cfg.db_path,
                            force=args.force)
    for d in (cfg.files_dir, cfg.tmp_dir):
        os.makedirs(d, mode=0o700, exist_ok=True)
    emit(args, result, f"restored {result['key_files']} key files, the secret and the DB")
    return 0


def cmd_recover(args) -> int:
    """Decrypt a data directory offline: no DB, no server, no config needed.

    Needs the data (files) and the key store, plus the instance secret or a backup archive
    (master-key mode), or a user's password / the recovery password (user-key mode). Every
    file is authenticated; a summary lists what could not be decrypted. --mounts reads the
    external storage mounts of --backup from their S3/WebDAV stores instead. Keys kept in
    the database (key_storage_root db:) are read from --database-url, read-only, or from
    --backup."""
    password = password_from_env() if args.password_from_env else None
    recovery = (password_from_env("DAVSERVER_RECOVERY_PASS")
                if args.recovery_password_from_env else None)
    if not (args.secret_file or args.backup or password or recovery):
        raise UserError("give --secret-file FILE, --backup FILE, --password-from-env (with "
                        "--user) or --recovery-password-from-env")
    if args.mounts is not None or args.primary:
        return _recover_remote(args, password, recovery)
    if not args.data:
        raise UserError("give --data DIR (or --mounts to read external storage)")
    database_url = args.database_url
    if args.keys and args.keys.strip().lower() in ("db:", "database") \
            and not database_url and (args.config or os.environ.get("DAVSERVER_CONFIG")):
        # The keys are in the database the config names (database.url, or the
        # environment's DAVSERVER_DATABASE_URL, as the server reads it).
        database_url = offline.database_of(config_mod.load(args.config, args.data_dir))
    files = offline.plan(args.data, args.user)
    with progress_bar("recovering", len(files), sum(s for _p, s in files),
                      quiet=args.output == "json") as advance:
        report = offline.recover(args.data, args.out, keys=args.keys,
                                 secret_file=args.secret_file, backup_file=args.backup,
                                 passphrase=_passphrase(args), user=args.user,
                                 password=password, recovery_password=recovery,
                                 database_url=database_url, progress=advance)
    emit(args, report.as_dict(),
         f"recovered {report.decrypted} encrypted and {report.copied_plaintext} plaintext files "
         f"({report.bytes} bytes) into {args.out}; {len(report.failed)} could not be decrypted"
         + "".join(f"\n  - {p}: {e}" for p, e in report.failed))
    return 3 if report.failed else 0


def _recover_remote(args, password, recovery) -> int:
    """recover --mounts / --primary: read from the remote stores the backup describes."""
    from davserver.vault import offline_remote

    if not args.backup:
        raise UserError("--mounts and --primary need --backup FILE (it holds the store "
                        "definitions and the secret that unseals mount credentials)")
    if args.primary and args.mounts is not None:
        raise UserError("give one of --mounts or --primary (run recover once for each)")
    if args.primary:
        report = offline_remote.recover_primary(
            args.out, backup_file=args.backup, passphrase=_passphrase(args), keys=args.keys,
            user=args.user, password=password, recovery_password=recovery)
        return _recover_summary(args, report, "the primary storage")
    ids = []
    for part in (args.mounts or "").split(","):
        if part.strip():
            if not part.strip().isdigit():
                raise UserError(f"--mounts takes mount IDs such as 1,3, not {part!r}")
            ids.append(int(part))
    report = offline_remote.recover_mounts(
        args.out, backup_file=args.backup, passphrase=_passphrase(args), keys=args.keys,
        mount_ids=ids or None, user=args.user, password=password,
        recovery_password=recovery)
    return _recover_summary(args, report, "external storage")


def _recover_summary(args, report, source: str) -> int:
    emit(args, report.as_dict(),
         f"recovered {report.decrypted} encrypted and {report.copied_plaintext} plaintext files "
         f"({report.bytes} bytes) from {source} into {args.out}; "
         f"{len(report.failed)} could not be decrypted"
         + "".join(f"\n  - {p}: {e}" for p, e in report.failed))
    return 3 if report.failed else 0


def register(sub, common) -> None:
    p = add_command(sub, common, "backup:create", cmd_create, cmd_create.__doc__,
                    "create the backup")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--passphrase-from-env", action="store_true", help=f"read ${PASS_ENV}")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "backup:restore", cmd_restore, cmd_restore.__doc__,
                    "restore the backup")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--passphrase-from-env", action="store_true", help=f"read ${PASS_ENV}")
    p.add_argument("--force", action="store_true", help="overwrite an existing instance")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "recover", cmd_recover, cmd_recover.__doc__, "recover")
    p.add_argument("--data", metavar="DIR", help="data directory (or its files/)")
    p.add_argument("--mounts", nargs="?", const="", metavar="IDS",
                   help="instead of --data: the external storage mounts in --backup (all, or "
                   "the comma-separated mount IDs), read from their S3/WebDAV stores")
    p.add_argument("--primary", action="store_true",
                   help="instead of --data: the remote primary storage (S3, WebDAV) that the "
                   "config in --backup names, with the backup's database as the name index")
    p.add_argument("--keys", metavar="DIR", help="key storage root (default: from --backup); "
                   "db: with --database-url when the keys are kept in the database")
    p.add_argument("--database-url", metavar="URL",
                   help="read the keys from this database (the SQLite file davserver.db or a "
                   "postgresql:// URL), read-only, when they are kept there (db:); "
                   "default with --keys db: and --config: the config's database")
    p.add_argument("--secret-file", metavar="FILE", help="instance secret")
    p.add_argument("--backup", metavar="FILE", help="archive from backup:create")
    p.add_argument("--passphrase-from-env", action="store_true", help=f"read ${PASS_ENV}")
    p.add_argument("--user", metavar="USER", help="only this user's files")
    p.add_argument("--password-from-env", action="store_true",
                   help="user-key mode: USER's password from $DAVSERVER_PASS")
    p.add_argument("--recovery-password-from-env", action="store_true",
                   help="user-key mode: the recovery password from $DAVSERVER_RECOVERY_PASS")
    p.add_argument("--out", required=True, metavar="DIR", help="where plaintext goes")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
