"""``share:*`` and ``group:*`` commands: shares and local groups (occ's names)."""

from __future__ import annotations

from davserver.cli.common import add_command, emit, instance_from, password_from_env
from davserver.errors import UserError
from davserver.vault import shares as sh
from davserver.vault.keystore import Identity


def cmd_share_add(args) -> int:
    """Share OWNER's PATH with a user or a group.

    PATH is as OWNER sees it (a path inside a share they received is a re-share, which
    needs the share permission and never grants more than they hold). --permissions takes
    words (read,update,create,delete,share or all) or Nextcloud's number; read is always
    included. --expire YYYY-MM-DD: the share works through that day (UTC)."""
    if (args.user is None) == (args.group is None):
        raise UserError("give exactly one of --user or --group")
    inst = instance_from(args)
    share = inst.shares.create(
        args.owner, args.path, sh.USER if args.user else sh.GROUP, args.user or args.group,
        permissions=sh.parse_permissions(args.permissions),
        expires=sh.parse_expiry(args.expire))
    emit(args, share.as_dict(), f"share {share.id} created: {args.owner}:/{share.rel} -> "
         f"{sh.TYPE_NAMES[share.share_type]} {share.share_with} "
         f"({sh.permission_words(share.permissions)})")
    return 0


def cmd_share_list(args) -> int:
    """List shares (all, or those a user made, owns or received)."""
    inst = instance_from(args)
    rows = []
    for s in inst.shares.list(user=args.user):
        d = s.as_dict()
        d["recipients"] = inst.shares.recipients(s)
        d["pending"] = inst.sharewraps.pending_users(s.id)
        rows.append(d)
    text = "\n".join(
        f"  - {d['id']}: {d['owner']}:{d['path']} -> {d['type']} {d['share_with']} "
        f"({d['permissions']})" + (f", expires after {d['expires']}" if d["expires"] else "")
        + (f", by {d['initiator']}" if d["initiator"] != d["owner"] else "")
        + (f", pending: {', '.join(d['pending'])}" if d["pending"] else "") for d in rows)
    emit(args, rows, text or "no shares")
    return 0


def cmd_share_remove(args) -> int:
    """Remove a share: its recipients lose access at their next request."""
    inst = instance_from(args)
    share = inst.shares.remove(args.id)
    print(f"share {share.id} removed")
    return 0


def _openers(inst, args, owner: str) -> list[Identity]:
    """Keys the admin brings: the owner's (their password) and/or the recovery key."""
    out = []
    if getattr(args, "owner_password_from_env", False):
        out.append(inst.userkeys.open_existing(owner, password_from_env("DAVSERVER_PASS")))
    if getattr(args, "recovery_password_from_env", False):
        out.append(inst.userkeys.unlock_recovery(password_from_env("DAVSERVER_RECOVERY_PASS")))
    return out


def cmd_share_rotate(args) -> int:
    """Start a new key version of a share (user-key mode): new writes use it.

    --reencrypt also re-encrypts every file still under an older version (what a removed
    member could read with a key they kept); it reads the files, so it needs the owner's
    password (--owner-password-from-env, $DAVSERVER_PASS) or the recovery password
    (--recovery-password-from-env, $DAVSERVER_RECOVERY_PASS)."""
    inst = instance_from(args)
    if inst.mode() != "user":
        raise UserError("share keys exist only in user-key mode (master-key mode needs none)")
    share = inst.shares.get(args.id)
    openers = _openers(inst, args, share.owner)
    if args.reencrypt and not openers:
        raise UserError("--reencrypt reads the files: pass --owner-password-from-env or "
                        "--recovery-password-from-env")
    version = inst.sharewraps.rotate(share, openers)
    done = 0
    if args.reencrypt:
        done = inst.sharewraps.reencrypt(share, inst.vault, openers)
    emit(args, {"id": share.id, "version": version, "reencrypted": done},
         f"share {share.id} now at key version {version}"
         + (f"; {done} files re-encrypted" if args.reencrypt else ""))
    return 0


def cmd_share_wrap_pending(args) -> int:
    """Make the share key wraps that wait for a key holder, with the recovery key.

    What a holder's login does by itself (see docs/SECURITY.md, sharing); this is for
    when no owner or member is expected online."""
    inst = instance_from(args)
    openers = [inst.userkeys.unlock_recovery(password_from_env("DAVSERVER_RECOVERY_PASS"))]
    made = inst.sharewraps.complete_pending(openers)
    left = len(inst.sharewraps.keys.pending())
    emit(args, {"wraps_made": made, "still_pending": left},
         f"{made} wraps made, {left} items still pending")
    return 0


def cmd_group_add(args) -> int:
    """Create a local group."""
    inst = instance_from(args)
    inst.groups.add(args.name, args.display_name)
    print(f"group {args.name} created")
    return 0


def cmd_group_delete(args) -> int:
    """Delete a local group; shares with it are removed."""
    inst = instance_from(args)
    inst.groups.delete(args.name)
    print(f"group {args.name} deleted")
    return 0


def cmd_group_adduser(args) -> int:
    """Add a user to a local group (takes effect at their next request)."""
    inst = instance_from(args)
    added = inst.groups.add_user(args.group, args.user)
    print(f"{args.user} {'added to' if added else 'is already in'} group {args.group}")
    return 0


def cmd_group_removeuser(args) -> int:
    """Remove a user from a local group (takes effect at their next request)."""
    inst = instance_from(args)
    inst.groups.remove_user(args.group, args.user)
    print(f"{args.user} removed from group {args.group}")
    return 0


def cmd_group_list(args) -> int:
    """List local groups and their members."""
    inst = instance_from(args)
    groups = inst.groups.list()
    text = "\n".join(f"  - {g}: {', '.join(m) or '(no members)'}" for g, m in groups.items())
    emit(args, groups, text or "no groups")
    return 0


def _folder_text(f) -> str:
    groups = ", ".join(f"{g} ({sh.permission_words(b)})" for g, b in f.groups.items())
    quota = "none" if f.quota is None else f"{f.quota} B"
    return f"  - {f.id}: {f.name}, quota {quota}, groups: {groups or '(none)'}"


def cmd_gf_create(args) -> int:
    """Create a team folder (owned by the instance); prints its ID."""
    inst = instance_from(args)
    f = inst.teamfolders.create(args.name)
    emit(args, f.as_dict(), str(f.id))
    return 0


def cmd_gf_group(args) -> int:
    """Give a group access to a team folder (PERMISSIONS as for share:add, default all),
    or take it away with --delete."""
    inst = instance_from(args)
    if args.delete:
        f = inst.teamfolders.remove_group(args.id, args.group)
    else:
        f = inst.teamfolders.set_group(args.id, args.group,
                                       sh.parse_permissions(args.permissions, default=sh.ALL))
    emit(args, f.as_dict(), _folder_text(f))
    return 0


def cmd_gf_quota(args) -> int:
    """Set a team folder's quota (e.g. 10GB, none)."""
    from davserver.auth.users import parse_size

    inst = instance_from(args)
    f = inst.teamfolders.set_quota(args.id, parse_size(args.size))
    emit(args, f.as_dict(), _folder_text(f))
    return 0


def cmd_gf_rename(args) -> int:
    """Rename a team folder: only its name changes, files and keys stay as they are."""
    inst = instance_from(args)
    f = inst.teamfolders.rename(args.id, args.name)
    emit(args, f.as_dict(), _folder_text(f))
    return 0


def cmd_gf_list(args) -> int:
    """List team folders with their groups and quota."""
    inst = instance_from(args)
    folders = inst.teamfolders.list()
    emit(args, [f.as_dict() for f in folders],
         "\n".join(_folder_text(f) for f in folders) or "no team folders")
    return 0


def cmd_gf_delete(args) -> int:
    """Delete a team folder with all its files and keys."""
    inst = instance_from(args)
    inst.teamfolders.delete(args.id)
    print(f"team folder {args.id} deleted")
    return 0


def register(sub, common) -> None:
    def gf(name, func, action, *positional):
        p = add_command(sub, common, name, func, func.__doc__, action)
        for arg in positional:
            if arg == "id":
                p.add_argument("id", type=int)
            else:
                p.add_argument(arg)
        p.add_argument("--output", choices=("plain", "json"), default="plain")
        return p

    gf("groupfolder:create", cmd_gf_create, "create the team folder", "name")
    p = gf("groupfolder:group", cmd_gf_group, "set the group's access", "id", "group")
    p.add_argument("permissions", nargs="?")
    p.add_argument("--delete", "-d", action="store_true", help="remove the group's access")
    gf("groupfolder:quota", cmd_gf_quota, "set the quota", "id", "size")
    gf("groupfolder:rename", cmd_gf_rename, "rename the team folder", "id", "name")
    gf("groupfolder:list", cmd_gf_list, "list team folders")
    gf("groupfolder:delete", cmd_gf_delete, "delete the team folder", "id")
    p = add_command(sub, common, "share:add", cmd_share_add, cmd_share_add.__doc__,
                    "create the share")
    p.add_argument("owner")
    p.add_argument("path")
    p.add_argument("--user")
    p.add_argument("--group")
    p.add_argument("--permissions", default="read")
    p.add_argument("--expire", metavar="DATE")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "share:list", cmd_share_list, cmd_share_list.__doc__,
                    "list shares")
    p.add_argument("--user")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "share:remove", cmd_share_remove, cmd_share_remove.__doc__,
                    "remove the share")
    p.add_argument("id", type=int)
    p = add_command(sub, common, "share:rotate", cmd_share_rotate, cmd_share_rotate.__doc__,
                    "rotate the share key")
    p.add_argument("id", type=int)
    p.add_argument("--reencrypt", action="store_true")
    p.add_argument("--owner-password-from-env", action="store_true")
    p.add_argument("--recovery-password-from-env", action="store_true")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "share:wrap-pending", cmd_share_wrap_pending,
                    cmd_share_wrap_pending.__doc__, "make the pending wraps")
    p.add_argument("--recovery-password-from-env", action="store_true", required=True)
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "group:add", cmd_group_add, cmd_group_add.__doc__,
                    "create the group")
    p.add_argument("name")
    p.add_argument("--display-name")
    p = add_command(sub, common, "group:delete", cmd_group_delete, cmd_group_delete.__doc__,
                    "delete the group")
    p.add_argument("name")
    p = add_command(sub, common, "group:adduser", cmd_group_adduser,
                    cmd_group_adduser.__doc__, "add the user to the group")
    p.add_argument("group")
    p.add_argument("user")
    p = add_command(sub, common, "group:removeuser", cmd_group_removeuser,
                    cmd_group_removeuser.__doc__, "remove the user from the group")
    p.add_argument("group")
    p.add_argument("user")
    p = add_command(sub, common, "group:list", cmd_group_list, cmd_group_list.__doc__,
                    "list groups")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
