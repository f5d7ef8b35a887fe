"""``share:*`` and ``group:*`` commands: shares and local groups (occ's names)."""

from __future__ import annotations

from davserver.cli.common import add_command, emit, instance_from
from davserver.errors import UserError
from davserver.vault import shares as sh


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
        rows.append(d)
    text = "\n".join(
        f"  - {d['id']}: {d['owner']}:{d['path']} -> {d['type']} {d['share_with']} "
        f"({d['permissions']})" + (f", expires after {d['expires']}" if d["expires"] else "")
        + (f", by {d['initiator']}" if d["initiator"] != d["owner"] else "") for d in rows)
    emit(args, rows, text or "no shares")
    return 0


def cmd_share_remove(args) -> int:
    """Remove a share: its recipients lose access at their next request."""
    inst = instance_from(args)
    share = inst.shares.remove(args.id)
    print(f"share {share.id} removed")
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


def register(sub, common) -> None:
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
