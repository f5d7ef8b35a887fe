"""``user:*-app-password`` commands: device passwords for sync clients set up headless."""

from __future__ import annotations

import os

from davserver.auth.app_passwords import add_app_password
from davserver.cli.common import add_command, emit, instance_from


def cmd_add(args) -> int:
    """Create an app password for USER and print it (once: only its hash is kept).

    In user-key mode the password must open the user's key too, so the user's own
    password is needed: pass --password-from-env with it in $DAVSERVER_PASS."""
    inst = instance_from(args)
    password = os.environ.get("DAVSERVER_PASS") if args.password_from_env else None
    app_id, token = add_app_password(inst, args.name, args.label, password=password)
    print(f"app password {app_id} for {args.name}: {token}")
    return 0


def cmd_list(args) -> int:
    """List USER's app passwords (IDs, names and creation times; never the passwords)."""
    inst = instance_from(args)
    rows = inst.app_passwords.list(args.name)
    emit(args, rows, "\n".join(f"  - {r['id']}: {r['name']}" for r in rows)
         or "no app passwords")
    return 0


def cmd_revoke(args) -> int:
    """Revoke one of USER's app passwords: it stops working at once, and in user-key mode
    its seal of the user's key is deleted."""
    inst = instance_from(args)
    inst.app_passwords.revoke(args.name, args.id)
    print(f"app password {args.id} of {args.name} revoked")
    return 0


def register(sub, common) -> None:
    p = add_command(sub, common, "user:add-app-password", cmd_add, cmd_add.__doc__,
                    "create the app password")
    p.add_argument("name")
    p.add_argument("--label", default="command line", help="what the password is for")
    p.add_argument("--password-from-env", action="store_true",
                   help="user-key mode: the user's password, $DAVSERVER_PASS")
    p = add_command(sub, common, "user:list-app-passwords", cmd_list, cmd_list.__doc__,
                    "list app passwords")
    p.add_argument("name")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "user:revoke-app-password", cmd_revoke, cmd_revoke.__doc__,
                    "revoke the app password")
    p.add_argument("name")
    p.add_argument("id", type=int)
