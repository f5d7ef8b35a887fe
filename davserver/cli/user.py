"""``user:*`` commands: local accounts."""

from __future__ import annotations

from davserver import accounts
from davserver.auth.users import parse_size
from davserver.cli.common import add_command, emit, instance_from, password_from_env
from davserver.errors import UserError


def cmd_add(args) -> int:
    """Create a local user; the password is read from $DAVSERVER_PASS."""
    if not args.password_from_env:
        raise UserError("pass --password-from-env and set DAVSERVER_PASS")
    inst = instance_from(args)
    inst.users.add(args.name, password_from_env(), is_admin=args.admin,
                   quota_bytes=parse_size(args.quota) if args.quota else None)
    print(f"user {args.name} created")
    return 0


def cmd_delete(args) -> int:
    """Delete a user together with all of their files and keys."""
    inst = instance_from(args)
    inst.users.delete(args.name)
    print(f"user {args.name} deleted")
    return 0


def cmd_resetpassword(args) -> int:
    """Set a new password for a local user (read from $DAVSERVER_PASS).

    In user-key mode the user's key must follow: give the old password
    (--old-password-from-env, $DAVSERVER_OLD_PASS) or use the recovery key
    (--recovery-password-from-env, $DAVSERVER_RECOVERY_PASS). Without either the reset is
    refused, because the user's files would become unreadable."""
    if not args.password_from_env:
        raise UserError("pass --password-from-env and set DAVSERVER_PASS")
    inst = instance_from(args)
    inst.users.require(args.name)
    new = password_from_env()
    if inst.mode() == "user" and inst.userkeys.has_keys(args.name):
        if args.old_password_from_env:
            accounts.change_local_password(inst, args.name, password_from_env("DAVSERVER_OLD_PASS"),
                                           new)
        elif args.recovery_password_from_env:
            result = accounts.recover_user(inst, args.name,
                                           password_from_env("DAVSERVER_RECOVERY_PASS"), new)
            print(f"{result['rewrapped']} files re-wrapped with the recovery key, "
                  f"{result['failed']} could not be")
        else:
            raise UserError(
                f"{args.name}'s files are encrypted with a key sealed by the current password; "
                "resetting without --old-password-from-env or --recovery-password-from-env "
                "would make them unreadable")
    else:
        inst.users.reset_password(args.name, new)
    print(f"password of {args.name} changed")
    return 0


def cmd_list(args) -> int:
    """List users with their quota and usage."""
    inst = instance_from(args)
    rows = []
    for u in inst.users.list():
        rows.append({"name": u.name, "admin": u.is_admin, "backend": u.backend,
                     "quota": u.quota_bytes, "used": inst.vault.usage(u.name)})
    text = "\n".join(
        f"  - {r['name']}{' (admin)' if r['admin'] else ''}: used {r['used']} B, "
        f"quota {'none' if r['quota'] is None else str(r['quota']) + ' B'}" for r in rows)
    emit(args, rows, text or "no users")
    return 0


def cmd_setting(args) -> int:
    """Show or change a user setting; supported: quota (e.g. 10GB, 500MiB, none)."""
    inst = instance_from(args)
    if args.key != "quota":
        raise UserError(f"unknown setting {args.key!r} (supported: quota)")
    if args.value is None:
        q = inst.users.require(args.name).quota_bytes
        print("none" if q is None else q)
        return 0
    inst.users.set_quota(args.name, parse_size(args.value))
    print(f"quota of {args.name} set to {args.value}")
    return 0


def register(sub, common) -> None:
    p = add_command(sub, common, "user:add", cmd_add, cmd_add.__doc__, "add the user")
    p.add_argument("name")
    p.add_argument("--password-from-env", action="store_true", help="read $DAVSERVER_PASS")
    p.add_argument("--admin", action="store_true", help="make the user an administrator")
    p.add_argument("--quota", help="quota, e.g. 10GB")
    p = add_command(sub, common, "user:delete", cmd_delete, cmd_delete.__doc__,
                    "delete the user")
    p.add_argument("name")
    p = add_command(sub, common, "user:resetpassword", cmd_resetpassword,
                    cmd_resetpassword.__doc__, "reset the password")
    p.add_argument("name")
    p.add_argument("--password-from-env", action="store_true", help="read $DAVSERVER_PASS")
    p.add_argument("--old-password-from-env", action="store_true",
                   help="user-key mode: the old password, $DAVSERVER_OLD_PASS")
    p.add_argument("--recovery-password-from-env", action="store_true",
                   help="user-key mode: use the recovery key, $DAVSERVER_RECOVERY_PASS")
    p = add_command(sub, common, "user:list", cmd_list, cmd_list.__doc__, "list users")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "user:setting", cmd_setting, cmd_setting.__doc__,
                    "change the user setting")
    p.add_argument("name")
    p.add_argument("key")
    p.add_argument("value", nargs="?")
