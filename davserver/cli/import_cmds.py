"""``import:nextcloud``: decrypt a Nextcloud/ownCloud server-side-encrypted data directory,
into a davserver instance or into plain files.

Exit codes: 0 done; 2 usage (the message says what to do); 3 some files failed (each is
listed with its reason); 5 a password or config.php secret did not open its key.
"""

from __future__ import annotations

import argparse

from davserver.cli.common import add_command, emit, password_from_env
from davserver.cli.progress import progress_bar
from davserver.errors import UserError
from davserver.nextcloud import content, importer

EXIT_PROBLEMS = 3


def cmd_import_nextcloud(args) -> int:
    """Decrypt a Nextcloud/ownCloud (server-side encryption) data directory and import it.

    Reads the data directory and config.php offline: no PHP, no database, no running
    Nextcloud. Master-key mode and public links need no password; per-user keys need the
    user's login password in $DAVSERVER_PASS (--password-from-env), or the recovery password
    in $DAVSERVER_RECOVERY_PASS (--recovery-password-from-env).

    --into-instance stores every file in the davserver instance (users are created when
    missing; see $DAVSERVER_CONFIG / --instance-config); --decrypt-to DIR writes plain files
    to DIR/<user>/<path>. Every block's signature is checked; a file that fails is listed
    with the reason and not written. Safe to run again: files already there are skipped.
    See docs/MIGRATING.md."""
    if args.into_instance and args.decrypt_to or not (
            args.into_instance or args.decrypt_to or args.dry_run):
        raise UserError("give exactly one of --into-instance and --decrypt-to DIR "
                        "(or --dry-run to only check)")
    if args.password_from_env and args.recovery_password_from_env:
        raise UserError("give --password-from-env or --recovery-password-from-env, not both")
    users = importer.select_users(args.datadir, args.user)
    if args.password_from_env and not args.user and len(users) > 1:
        raise UserError(f"{len(users)} users found: with --password-from-env name the "
                        "user(s) whose password $DAVSERVER_PASS is (--user NAME)")
    password = password_from_env() if args.password_from_env else None
    recovery = (password_from_env("DAVSERVER_RECOVERY_PASS")
                if args.recovery_password_from_env else None)
    source = importer.open_source(args.datadir, args.config, users, password=password,
                                  recovery_password=recovery, max_version=args.max_version)
    inst = None
    try:
        if args.dry_run:
            target = importer.NullTarget()
        elif args.decrypt_to:
            target = importer.DirTarget(args.decrypt_to)
        else:
            from davserver.instance import open_instance

            inst = open_instance(args.instance_config, args.instance_data_dir)
            target = importer.InstanceTarget(inst, password)
        items = importer.plan(source, users)
        files = [i for i in items if not i.is_dir]
        with progress_bar("importing", len(files), sum(i.size for i in files),
                          quiet=args.output == "json") as advance:
            report = importer.run_import(source, users, target, dry_run=args.dry_run,
                                         progress=advance, items=items)
    finally:
        if inst is not None:
            inst.close()
    verb = "checked" if args.dry_run else "imported"
    text = (f"{verb} {report.files} files ({report.bytes} bytes, {report.plain} were not "
            f"encrypted), {report.skipped} already there, {len(report.failed)} failed"
            + "".join(f"\n  - {p}: {r}" for p, r in report.failed)
            + "".join(f"\n  created user {u}" + (f" with password {pw}" if pw else "")
                      for u, pw in report.created_users.items()))
    emit(args, report.as_dict(), text)
    return EXIT_PROBLEMS if report.failed else 0


def register(sub, common) -> None:
    # Not the common options: here --config is Nextcloud's config.php, as in its docs.
    own = argparse.ArgumentParser(add_help=False)
    p = add_command(sub, own, "import:nextcloud", cmd_import_nextcloud,
                    cmd_import_nextcloud.__doc__, "import the Nextcloud data")
    p.add_argument("--datadir", required=True, metavar="DIR",
                   help="Nextcloud's data directory (a copy or backup is fine)")
    p.add_argument("--config", required=True, metavar="CONFIG_PHP",
                   help="Nextcloud's config/config.php (for secret and instanceid)")
    p.add_argument("--user", action="append", metavar="USER",
                   help="import only this user (repeatable; default: every user found)")
    p.add_argument("--password-from-env", action="store_true",
                   help="the users' login password is in $DAVSERVER_PASS (per-user keys)")
    p.add_argument("--recovery-password-from-env", action="store_true",
                   help="the recovery key password is in $DAVSERVER_RECOVERY_PASS")
    p.add_argument("--into-instance", action="store_true",
                   help="store the files in the davserver instance")
    p.add_argument("--decrypt-to", metavar="DIR", help="write plain files to DIR/<user>/...")
    p.add_argument("--instance-config", metavar="FILE",
                   help="davserver config (default: $DAVSERVER_CONFIG or the system default)")
    p.add_argument("--instance-data-dir", metavar="DIR",
                   help="davserver data directory (default: $DAVSERVER_DATA_DIR or config)")
    p.add_argument("--max-version", type=int, default=content.DEFAULT_MAX_VERSION,
                   metavar="N", help="try encryption versions 0..N (default %(default)s)")
    p.add_argument("--dry-run", action="store_true",
                   help="decrypt and verify everything, write nothing")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
