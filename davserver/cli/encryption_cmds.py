"""``encryption:*`` and ``maintenance:*`` commands (occ names, so runbooks carry over).

Exit codes: 0 done; 1 failed; 2 usage or refused (the message says what to do);
3 integrity problem found (scan, recover); see docs/ADMIN.md for the full table.
"""

from __future__ import annotations

import sys

from davserver import accounts
from davserver.cli.common import add_command, emit, instance_from, password_from_env
from davserver.cli.progress import progress_bar
from davserver.errors import UserError
from davserver.instance import MODULE_ID, S_ENABLED, S_MODULE
from davserver.vault import check, context, convert, convert_mounts, keyroot

EXIT_PROBLEMS = 3


def _users(inst, user: str | None) -> list[str]:
    if user:
        inst.users.require(user)
        return [user]
    # Team folders (vault.teamfolders) are stored like homes, under names no user has.
    return [u.name for u in inst.users.list()] + inst.teamfolders.owners()


def _confirm(args, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{question} — pass --yes to confirm non-interactively")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UserError("cancelled")


def cmd_status(args) -> int:
    """Show whether encryption is enabled, the mode, the key storage root, file counts and
    jobs in progress."""
    inst = instance_from(args)
    storages = accounts.file_forms(inst)
    jobs = inst.jobs_in_progress()
    data = {"enabled": inst.encryption_enabled(), "defaultModule": inst.db.get_setting(S_MODULE),
            "mode": inst.mode(), "keyStorageRoot": inst.key_root,
            "keyStorage": inst.key_storage,
            "encryptedFiles": sum(s["encryptedFiles"] for s in storages),
            "plaintextFiles": sum(s["plaintextFiles"] for s in storages),
            "maintenance": inst.maintenance(), "jobsInProgress": jobs, "storages": storages}
    lines = [f"  - {k}: {v}" for k, v in data.items() if k != "storages"]
    if len(storages) > 1:
        lines.append("  - storages:")
        lines += [f"    - {s['storage']}: {s['encryptedFiles']} encrypted, "
                  f"{s['plaintextFiles']} plaintext" for s in storages]
    emit(args, data, "\n".join(lines))
    return 0


def cmd_enable(args) -> int:
    """Enable server-side encryption for new and rewritten files (encrypt-all converts the
    rest)."""
    inst = instance_from(args)
    if not inst.keys.master_files():
        inst.keys.create_master(inst.secret)
    inst.master()
    inst.db.set_setting(S_ENABLED, "1")
    print("encryption enabled; run 'davserver encryption:encrypt-all' to encrypt existing files")
    return 0


def cmd_disable(args) -> int:
    """Disable encryption; refused while encrypted files remain (run decrypt-all first)."""
    inst = instance_from(args)
    enc = accounts.encrypted_file_count(inst)
    if enc:
        raise UserError(f"{enc} files are still encrypted; run 'davserver encryption:decrypt-all' "
                        "first (it disables encryption when it is done)")
    inst.db.set_setting(S_ENABLED, "0")
    print("encryption disabled")
    return 0


def cmd_list_modules(args) -> int:
    """List the encryption modules (the default one is marked)."""
    inst = instance_from(args)
    default = inst.db.get_setting(S_MODULE) or MODULE_ID
    data = {MODULE_ID: {"name": "davserver AEAD v1 (AES-256-GCM chunks, HPKE key wraps)",
                        "default": default == MODULE_ID}}
    emit(args, data, f"  - {MODULE_ID}: davserver AEAD v1"
         + (" [default]" if default == MODULE_ID else ""))
    return 0


def cmd_set_default_module(args) -> int:
    """Set the default encryption module."""
    if args.module != MODULE_ID:
        raise UserError(f"unknown module {args.module!r} (available: {MODULE_ID})")
    instance_from(args).db.set_setting(S_MODULE, args.module)
    print(f"default module set to {args.module}")
    return 0


def _convert(args, *, encrypt: bool) -> int:
    inst = instance_from(args)
    if encrypt and not inst.encryption_enabled():
        raise UserError("encryption is disabled; run 'davserver encryption:enable' first")
    users = _users(inst, getattr(args, "user", None))
    verb = "encrypt" if encrypt else "decrypt"
    _confirm(args, f"{verb} every file of {', '.join(users) or 'no users'}? The server is in "
             "maintenance mode meanwhile")
    recovery = ()
    if getattr(args, "recovery_password_from_env", False):
        recovery = (inst.userkeys.unlock_recovery(password_from_env("DAVSERVER_RECOVERY_PASS")),)
    # One name for both jobs: encrypt-all and decrypt-all must not run at once either.
    with inst.exclusive_job("encrypt-decrypt-all"), \
            convert.maintenance_for(inst.db, f"{verb}-all"), context.acting_as(*recovery):
        # The homes, then the external storage mounts (see vault.convert_mounts).
        jobs = convert_mounts.targets(inst.vault, users, inst.dav_vault, encrypt=encrypt,
                                      user=getattr(args, "user", None))
        files = convert_mounts.plan(jobs)
        with progress_bar(f"{verb}ing", len(files), sum(s for _p, s in files),
                          quiet=args.output == "json") as advance:
            report = convert_mounts.convert_all(jobs, encrypt=encrypt, progress=advance)
        if not encrypt and not getattr(args, "user", None) and not report.failed:
            inst.db.set_setting(S_ENABLED, "0")
    emit(args, report.as_dict(),
         f"{verb}ed {report.converted} files ({report.bytes} bytes), {report.skipped} already "
         f"{verb}ed, {len(report.failed)} failed"
         + "".join(f"\n  - {p}: {e}" for p, e in report.failed))
    return EXIT_PROBLEMS if report.failed else 0


def cmd_encrypt_all(args) -> int:
    """Encrypt every plaintext file (from before encryption was enabled, or placed in the
    data directory by hand).

    Resumable: after Ctrl-C or a crash, run it again; every file ends up encrypted exactly
    once. WebDAV answers 503 (maintenance) while it runs."""
    return _convert(args, encrypt=True)


def cmd_decrypt_all(args) -> int:
    """Decrypt every file (or one user's); without USER, encryption is disabled at the end.

    Resumable and safe to re-run, like encrypt-all."""
    return _convert(args, encrypt=False)


def cmd_show_key_root(args) -> int:
    """Show where the key store lives."""
    inst = instance_from(args)
    emit(args, {"keyStorageRoot": inst.key_root}, f"key storage root: {inst.key_storage}")
    return 0


def cmd_change_key_root(args) -> int:
    """Move the key store to an empty directory, or into the metadata database with db:
    (nodes then need no shared filesystem for keys): copy, verify, switch, remove the
    old one. Resumable: after an interruption run it again with the same target."""
    inst = instance_from(args)
    _confirm(args, f"move the key store from {inst.key_storage} to {args.dir}?")
    with convert.maintenance_for(inst.db, "change-key-storage-root"):
        result = keyroot.change_key_storage_root(inst.db, inst.key_root, args.dir,
                                                 fsync=inst.config.fsync)
    where = "the database" if result["target"] == "db:" else result["target"]
    emit(args, result, f"key store moved to {where} ({result['key_files']} files)")
    return 0


def cmd_enable_master_key(args) -> int:
    """Use master-key mode (the default): one key pair, unlocked by the instance secret,
    serves every login. Refused while files are encrypted with user keys (the message
    says what to run first)."""
    inst = instance_from(args)
    accounts.enable_master_key(inst)
    print("master-key mode enabled")
    return 0


def cmd_disable_master_key(args) -> int:
    """Switch to user-key mode: each user's files are wrapped for a key pair unlocked by
    their login password. Refused while files are encrypted with the master key.

    WARNING: a user who forgets their password without having opted in to recovery loses
    access to their files for good. Enable a recovery key first (encryption:enable-recovery)."""
    inst = instance_from(args)
    _confirm(args, "switch to user-key mode? Users who forget their password without "
             "recovery lose their files")
    accounts.disable_master_key(inst)
    print("user-key mode enabled; keys are created at each user's next login")
    if inst.userkeys.recovery_public() is None:
        print("note: no recovery key yet; see 'davserver encryption:enable-recovery'")
    return 0


def cmd_enable_recovery(args) -> int:
    """Create the admin recovery key, protected by the password in $DAVSERVER_RECOVERY_PASS."""
    inst = instance_from(args)
    kid = inst.userkeys.enable_recovery(password_from_env("DAVSERVER_RECOVERY_PASS"))
    print(f"recovery key {kid} created; users opt in with 'encryption:user-recovery USER "
          "--enable' or on their settings page")
    return 0


def cmd_change_recovery_password(args) -> int:
    """Change the recovery password ($DAVSERVER_OLD_PASS -> $DAVSERVER_PASS)."""
    inst = instance_from(args)
    inst.userkeys.change_recovery_password(password_from_env("DAVSERVER_OLD_PASS"),
                                           password_from_env("DAVSERVER_PASS"))
    print("recovery password changed")
    return 0


def cmd_disable_recovery(args) -> int:
    """Delete the recovery key and every wrap made for it ($DAVSERVER_RECOVERY_PASS)."""
    inst = instance_from(args)
    _confirm(args, "delete the recovery key? Users who forget their password lose their files")
    result = accounts.disable_recovery(inst, password_from_env("DAVSERVER_RECOVERY_PASS"))
    emit(args, result, f"recovery disabled ({result['rewrapped']} key files updated)")
    return 0


def cmd_user_recovery(args) -> int:
    """Opt a user in to (--enable, needs their password in $DAVSERVER_PASS) or out of
    (--disable) recovery. Opting in wraps all their existing files for the recovery key;
    re-run to finish an interrupted run."""
    inst = instance_from(args)
    if args.enable == args.disable:
        raise UserError("give --enable or --disable")
    files = [r for r in inst.db.iter_files(args.user) if r.file_id]
    with progress_bar("re-wrapping", len(files), 0, quiet=args.output == "json") as advance:
        result = accounts.set_recovery(
            inst, args.user, args.enable,
            password=password_from_env() if args.enable else None, progress=advance)
    emit(args, result, f"recovery {'enabled' if args.enable else 'disabled'} for {args.user}: "
         f"{result['rewrapped']} files re-wrapped, {result['failed']} failed")
    return EXIT_PROBLEMS if result["failed"] else 0


def cmd_update_key_password(args) -> int:
    """Re-seal a user's key after their password changed elsewhere (e.g. LDAP):
    $DAVSERVER_OLD_PASS -> $DAVSERVER_PASS."""
    if not (args.old_password_from_env and args.password_from_env):
        raise UserError("pass --old-password-from-env and --password-from-env")
    inst = instance_from(args)
    accounts.update_key_password(inst, args.user, password_from_env("DAVSERVER_OLD_PASS"),
                                 password_from_env())
    print(f"key password of {args.user} updated")
    return 0


def cmd_recover_user(args) -> int:
    """Give a user who lost their password a new key under the password in
    $DAVSERVER_PASS, using the recovery key ($DAVSERVER_RECOVERY_PASS)."""
    inst = instance_from(args)
    files = [r for r in inst.db.iter_files(args.user) if r.file_id]
    with progress_bar("recovering", len(files), 0, quiet=args.output == "json") as advance:
        result = accounts.recover_user(inst, args.user,
                                       password_from_env("DAVSERVER_RECOVERY_PASS"),
                                       password_from_env(), progress=advance)
    emit(args, result, f"{args.user} recovered: {result['rewrapped']} files re-wrapped, "
         f"{result['failed']} could not be (not opted in to recovery)")
    return EXIT_PROBLEMS if result["failed"] else 0


def _report(args, report: check.CheckReport, headline: str) -> int:
    d = report.as_dict()
    lines = [headline, "  " + ", ".join(f"{k}: {v}" for k, v in d["counts"].items())]
    lines += [f"  - {f['path']}: {f['state']} ({f['detail']})" for f in d["problems"]]
    lines += [f"  fixed: {p}" for p in report.fixed]
    if report.orphan_keys:
        lines.append(f"  orphan keys: {len(report.orphan_keys)}")
    emit(args, d, "\n".join(lines))
    return EXIT_PROBLEMS if report.problems else 0


def cmd_scan(args) -> int:
    """Authenticate every stored file end to end (fsck), external storage mounts
    included, and report problems."""
    inst = instance_from(args)
    users = _users(inst, args.user) if args.user else None
    recovery = ()
    if args.recovery_password_from_env:
        recovery = (inst.userkeys.unlock_recovery(password_from_env("DAVSERVER_RECOVERY_PASS")),)
    with context.acting_as(*recovery):
        report = convert_mounts.scan(convert_mounts.targets(
            inst.vault, users, inst.dav_vault, encrypt=None, user=args.user))
    if users is None:
        report.orphan_keys = check.orphan_keys(inst.vault)
    locked = sum(1 for f in report.files if f.detail == check.LOCKED_DETAIL)
    note = (f" ({locked} encrypted files checked without decrypting: user-key mode; give "
            "--recovery-password-from-env to authenticate them end to end)" if locked else "")
    return _report(args, report, "scan finished" + note)


def cmd_fix_encrypted_version(args) -> int:
    """Inspect files refused by the rollback/swap check; on confirmation re-record those that
    still authenticate as themselves. Truly corrupt files are reported, never changed."""
    inst = instance_from(args)
    users = _users(inst, args.user) if args.user else None
    path = None
    if args.path:
        if not args.user:
            raise UserError("--path needs USER")
        path = f"{args.user}/{args.path.strip('/')}"
    report = check.fix_encrypted_version(inst.vault, users, path=path, apply=False)
    fixable = [f.path for f in report.files if f.state == "mismatch"]
    if fixable and not args.dry_run:
        _confirm(args, f"re-record {len(fixable)} files that authenticate as themselves?")
        report = check.fix_encrypted_version(inst.vault, users, path=path, apply=True)
    return _report(args, report, f"{len(fixable)} files can be re-recorded"
                   + (" (dry run)" if args.dry_run else ""))


def cmd_fix_key_location(args) -> int:
    """Rebuild the file-ID index from file headers; report files without keys and orphan
    keys."""
    inst = instance_from(args)
    users = _users(inst, args.user) if args.user else None
    report = check.fix_key_location(inst.vault, users, apply=not args.dry_run)
    return _report(args, report, "key locations checked" + (" (dry run)" if args.dry_run
                                                             else ""))


def cmd_clean_orphaned_keys(args) -> int:
    """Delete key files that no stored file uses."""
    inst = instance_from(args)
    found = check.orphan_keys(inst.vault)
    if found and not args.dry_run:
        _confirm(args, f"delete {len(found)} orphaned keys?")
        check.clean_orphaned_keys(inst.vault, apply=True)
    emit(args, {"orphan_keys": found, "deleted": not args.dry_run},
         f"{len(found)} orphaned keys" + (" found (dry run)" if args.dry_run else " deleted"))
    return 0


def cmd_maintenance(args) -> int:
    """Turn maintenance mode on or off (WebDAV answers 503 + Retry-After while on).

    Switching it on returns once running servers have noticed (about 2 s)."""
    inst = instance_from(args)
    if args.on or args.off:
        convert.set_maintenance(inst.db, bool(args.on))
    print(f"maintenance mode is {'on' if inst.maintenance() else 'off'}")
    return 0


def register(sub, common) -> None:
    def cmd(name, func, action, *, output=False, yes=False, user=False, dry_run=False):
        p = add_command(sub, common, name, func, func.__doc__, action)
        if output:
            p.add_argument("--output", choices=("plain", "json"), default="plain")
        if yes:
            p.add_argument("--yes", "-y", action="store_true", help="do not ask")
        if user:
            p.add_argument("user", nargs="?", metavar="USER", help="only this user")
        if dry_run:
            p.add_argument("--dry-run", action="store_true", help="report, change nothing")
        return p

    cmd("encryption:status", cmd_status, "show the encryption status", output=True)
    cmd("encryption:enable", cmd_enable, "enable encryption", yes=True)
    cmd("encryption:disable", cmd_disable, "disable encryption", yes=True)
    cmd("encryption:list-modules", cmd_list_modules, "list modules", output=True)
    p = cmd("encryption:set-default-module", cmd_set_default_module, "set the default module")
    p.add_argument("module", metavar="ID")
    cmd("encryption:encrypt-all", cmd_encrypt_all, "encrypt all files", output=True, yes=True)
    p = cmd("encryption:decrypt-all", cmd_decrypt_all, "decrypt all files", output=True,
            yes=True, user=True)
    p.add_argument("--recovery-password-from-env", action="store_true",
                   help="user-key mode: read keys with the recovery key ($DAVSERVER_RECOVERY_PASS)")
    cmd("encryption:show-key-storage-root", cmd_show_key_root, "show the key storage root",
        output=True)
    p = cmd("encryption:change-key-storage-root", cmd_change_key_root,
            "change the key storage root", output=True, yes=True)
    p.add_argument("dir", metavar="DIR", help="an empty directory, or db: (the database)")
    cmd("encryption:enable-master-key", cmd_enable_master_key, "enable master-key mode",
        yes=True)
    cmd("encryption:disable-master-key", cmd_disable_master_key, "disable master-key mode",
        yes=True)
    cmd("encryption:enable-recovery", cmd_enable_recovery, "enable recovery")
    cmd("encryption:change-recovery-password", cmd_change_recovery_password,
        "change the recovery password")
    cmd("encryption:disable-recovery", cmd_disable_recovery, "disable recovery", output=True,
        yes=True)
    p = cmd("encryption:user-recovery", cmd_user_recovery, "change recovery opt-in",
            output=True)
    p.add_argument("user", metavar="USER")
    p.add_argument("--enable", action="store_true")
    p.add_argument("--disable", action="store_true")
    p = cmd("encryption:update-key-password", cmd_update_key_password,
            "update the key password")
    p.add_argument("user", metavar="USER")
    p.add_argument("--old-password-from-env", action="store_true", help="$DAVSERVER_OLD_PASS")
    p.add_argument("--password-from-env", action="store_true", help="$DAVSERVER_PASS")
    p = cmd("encryption:recover-user", cmd_recover_user, "recover the user", output=True)
    p.add_argument("user", metavar="USER")
    p = cmd("encryption:scan", cmd_scan, "scan", output=True, user=True)
    p.add_argument("--recovery-password-from-env", action="store_true",
                   help="user-key mode: decrypt with the recovery key ($DAVSERVER_RECOVERY_PASS)")
    p = cmd("encryption:fix-encrypted-version", cmd_fix_encrypted_version,
            "fix encrypted versions", output=True, yes=True, user=True, dry_run=True)
    p.add_argument("--path", "-p", help="one file, relative to USER's home")
    cmd("encryption:fix-key-location", cmd_fix_key_location, "fix key locations", output=True,
        user=True, dry_run=True)
    cmd("encryption:clean-orphaned-keys", cmd_clean_orphaned_keys, "clean orphaned keys",
        output=True, yes=True, dry_run=True)
    p = add_command(sub, common, "maintenance:mode", cmd_maintenance, cmd_maintenance.__doc__,
                    "change maintenance mode")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--on", action="store_true")
    g.add_argument("--off", action="store_true")
