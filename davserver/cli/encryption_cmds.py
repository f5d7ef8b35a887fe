"""``encryption:*`` and ``maintenance:*`` commands (occ names, so runbooks carry over)."""

from __future__ import annotations

from davserver.cli.common import add_command, emit, instance_from
from davserver.instance import S_MAINTENANCE


def cmd_status(args) -> int:
    """Show whether encryption is enabled, the mode and the key storage root."""
    inst = instance_from(args)
    data = {"enabled": inst.encryption_enabled(), "mode": inst.mode(),
            "defaultModule": inst.db.get_setting("encryption.module"),
            "keyStorageRoot": inst.key_root, "maintenance": inst.maintenance()}
    emit(args, data, "\n".join(f"  - {k}: {v}" for k, v in data.items()))
    return 0


def cmd_maintenance(args) -> int:
    """Turn maintenance mode on or off (WebDAV answers 503 + Retry-After while on)."""
    inst = instance_from(args)
    if args.on or args.off:
        inst.db.set_setting(S_MAINTENANCE, "1" if args.on else "0")
    print(f"maintenance mode is {'on' if inst.maintenance() else 'off'}")
    return 0


def register(sub, common) -> None:
    p = add_command(sub, common, "encryption:status", cmd_status, cmd_status.__doc__,
                    "show the encryption status")
    p.add_argument("--output", choices=("plain", "json"), default="plain")
    p = add_command(sub, common, "maintenance:mode", cmd_maintenance, cmd_maintenance.__doc__,
                    "change maintenance mode")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--on", action="store_true")
    g.add_argument("--off", action="store_true")
