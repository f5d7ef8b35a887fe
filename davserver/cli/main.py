"""Entry point: common options, dispatch, and the one place errors become exit codes.

Every command takes ``--config`` and ``--data-dir`` (also ``DAVSERVER_CONFIG`` /
``DAVSERVER_DATA_DIR``) so admin commands act on the same instance as the server. A
failure prints one line, ``davserver: failed to <what>: <why>``, and exits with the code
of its error class (see davserver/errors.py); never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from davserver import __version__
from davserver.cli import (
    app_password_cmds,
    backup_cmds,
    encryption_cmds,
    import_cmds,
    mount_cmds,
    serve,
    share_cmds,
    upgrade_cmd,
    user,
)
from davserver.errors import known

MODULES = (serve, user, encryption_cmds, backup_cmds, import_cmds, app_password_cmds,
           mount_cmds, share_cmds, upgrade_cmd)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="config file (default: $DAVSERVER_CONFIG or the system default)")
    common.add_argument("--data-dir", metavar="DIR",
                        help="data directory (default: $DAVSERVER_DATA_DIR or from the config)")
    parser = argparse.ArgumentParser(
        prog="davserver", description="WebDAV server with server-side encryption.")
    parser.add_argument("--version", action="version", version=f"davserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in MODULES:
        mod.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"davserver: {args.action} interrupted; it is safe to run it again",
              file=sys.stderr)
        return 130
    except Exception as e:
        err = known(e)
        if err is not None:
            print(f"davserver: failed to {args.action}: {err}", file=sys.stderr)
            return err.EXIT_CODE
        if not isinstance(e, OSError):
            raise
        print(f"davserver: failed to {args.action}: {e.strerror or e}"
              + (f": {e.filename}" if getattr(e, "filename", None) else ""), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
