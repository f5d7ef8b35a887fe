"""``files_external:*``: external storage mounts, with occ's command and option names so
Nextcloud runbooks carry over; and ``encryption:home-storage`` (Nextcloud's "encrypt home
storage" checkbox)."""

from __future__ import annotations

from davserver.cli.common import add_command, emit, instance_from
from davserver.errors import UserError
from davserver.instance import S_HOME_ENCRYPTED
from davserver.vault.mounts import Mount


def _pairs(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"-c takes key=value, not {item!r}")
        out[key] = value
    return out


def _line(m: Mount, show_password: bool) -> str:
    d = m.as_dict(show_password)
    config = ", ".join(f"{k}: {v}" for k, v in sorted(d["configuration"].items()))
    options = ", ".join(f"{k}: {v}" for k, v in sorted(d["options"].items()))
    applies = ", ".join(m.users + [f"group {g}" for g in m.groups]) or "all"
    return (f"{m.id}  {m.mount_point}  {m.backend}  {m.auth}  [{config}]  [{options}]  "
            f"applicable: {applies}")


def cmd_create(args) -> int:
    """Create an external storage mount (occ files_external:create).

    Backends and their authentication: amazons3 amazons3::accesskey (bucket, hostname,
    port, region, use_ssl, use_path_style, key, secret); dav password::password (host,
    root, secure, user, password); local null::null (datadir). --user limits the mount to
    one user; without it the mount applies to everyone."""
    inst = instance_from(args)
    m = inst.mounts.create(args.mount_point, args.backend, args.auth, _pairs(args.config_kv),
                           user=args.user)
    emit(args, {"mount_id": m.id}, f"Storage created with id {m.id}")
    return 0


def cmd_list(args) -> int:
    """List external storage mounts; secrets are masked unless --show-password."""
    mounts = instance_from(args).mounts.list()
    emit(args, [m.as_dict(args.show_password) for m in mounts],
         "\n".join(_line(m, args.show_password) for m in mounts) or "no external storage")
    return 0


def cmd_delete(args) -> int:
    """Remove a mount definition (the data on the store is left as it is)."""
    m = instance_from(args).mounts.delete(args.id)
    emit(args, {"mount_id": m.id, "deleted": True}, f"Storage with id {m.id} deleted")
    return 0


def cmd_config(args) -> int:
    """Show or set one config value of a mount."""
    inst = instance_from(args)
    if args.value is None:
        m = inst.mounts.get(args.id)
        value = m.config.get(args.key, "")
        emit(args, {args.key: value}, value)
        return 0
    m = inst.mounts.set_config(args.id, args.key, args.value)
    emit(args, m.as_dict(), f"{args.key} of storage {m.id} set")
    return 0


def cmd_option(args) -> int:
    """Set a mount option: encrypt, readonly, filesystem_check_changes, enable_sharing."""
    m = instance_from(args).mounts.set_option(args.id, args.key, args.value)
    emit(args, m.as_dict(), f"{args.key} of storage {m.id} set to {m.options[args.key]}")
    return 0


def cmd_applicable(args) -> int:
    """Add or remove users and groups a mount applies to (none: everyone)."""
    m = instance_from(args).mounts.set_applicable(
        args.id, add_users=args.add_user or (), remove_users=args.remove_user or (),
        add_groups=args.add_group or (), remove_groups=args.remove_group or ())
    emit(args, {"users": m.users, "groups": m.groups},
         f"Users: {', '.join(m.users) or 'All'}\nGroups: {', '.join(m.groups) or 'All'}")
    return 0


def cmd_verify(args) -> int:
    """Check that the mount's store is reachable with its credentials; exits non-zero
    naming what is wrong."""
    inst = instance_from(args)
    m = inst.mounts.verify(args.id)
    emit(args, {"mount_id": m.id, "status": "ok"},
         f"status: ok ({inst.mounts.describe_endpoint(m)})")
    return 0


def cmd_scan(args) -> int:
    """Authenticate every file on a mount's store as it is now (also files other tools
    put there; with filesystem_check_changes never, they appear in listings from now on)
    and report plaintext files and problems: files without a key here (by
    file ID), corrupt, swapped or duplicated ones. Exits 3 if there are problems."""
    inst = instance_from(args)
    report = inst.dav_vault.scan(inst.mounts.get(args.id))
    d = report.as_dict()
    counts = ", ".join(f"{v} {k}" for k, v in d["counts"].items() if v) or "no files"
    emit(args, d, f"scan finished: {counts}" + "".join(
        f"\n  - {f['path']}: {f['state']} ({f['detail']}) file ID {f['file_id']}"
        for f in d["problems"]))
    return 3 if report.problems else 0


def cmd_home_storage(args) -> int:
    """Show or set "encrypt home storage": off keeps new files in local homes plaintext,
    while external storage mounts follow their own encrypt option."""
    inst = instance_from(args)
    if args.state is not None:
        inst.db.set_setting(S_HOME_ENCRYPTED, "1" if args.state == "on" else "0")
    state = "off" if inst.db.get_setting(S_HOME_ENCRYPTED) == "0" else "on"
    emit(args, {"encrypt_home_storage": state == "on"}, f"encrypt home storage: {state}")
    return 0


def register(sub, common) -> None:
    def cmd(name, func, action):
        p = add_command(sub, common, name, func, func.__doc__, action)
        p.add_argument("--output", choices=("plain", "json"), default="plain")
        return p

    p = cmd("files_external:create", cmd_create, "create the external storage")
    p.add_argument("mount_point")
    p.add_argument("backend")
    p.add_argument("auth")
    p.add_argument("-c", dest="config_kv", action="append", metavar="KEY=VALUE",
                   help="a config value (occ also spells it --config, which here names the "
                   "instance config file)")
    p.add_argument("--user", help="apply to this user only")
    p = cmd("files_external:list", cmd_list, "list external storage")
    p.add_argument("--show-password", action="store_true")
    p = cmd("files_external:delete", cmd_delete, "delete the external storage")
    p.add_argument("id", type=int)
    p.add_argument("-y", "--yes", action="store_true", help="accepted for occ compatibility")
    p = cmd("files_external:config", cmd_config, "configure the external storage")
    p.add_argument("id", type=int)
    p.add_argument("key")
    p.add_argument("value", nargs="?")
    p = cmd("files_external:option", cmd_option, "set the external storage option")
    p.add_argument("id", type=int)
    p.add_argument("key")
    p.add_argument("value")
    p = cmd("files_external:applicable", cmd_applicable, "change where the storage applies")
    p.add_argument("id", type=int)
    for flag in ("--add-user", "--remove-user", "--add-group", "--remove-group"):
        p.add_argument(flag, action="append", metavar=flag.split("-")[-1].upper())
    p = cmd("files_external:verify", cmd_verify, "verify the external storage")
    p.add_argument("id", type=int)
    p = cmd("files_external:scan", cmd_scan, "scan the external storage")
    p.add_argument("id", type=int)
    p = cmd("encryption:home-storage", cmd_home_storage, "set home storage encryption")
    p.add_argument("state", nargs="?", choices=("on", "off"))
