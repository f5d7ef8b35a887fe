"""Helpers every command module shares: opening the instance, reading secrets from env."""

from __future__ import annotations

import argparse
import json
import os
import sys

from davserver.errors import UserError
from davserver.instance import Instance, open_instance


def add_command(sub, common, name: str, func, doc: str, action: str) -> argparse.ArgumentParser:
    """Register ``name``; the first docstring line is the summary, the whole is --help."""
    summary = " ".join(doc.strip().split("\n\n")[0].split())
    p = sub.add_parser(name, parents=[common], help=summary,
                       description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func, action=action)
    return p


def instance_from(args) -> Instance:
    return open_instance(args.config, args.data_dir)


def password_from_env(var: str = "DAVSERVER_PASS") -> str:
    value = os.environ.get(var)
    if not value:
        raise UserError(f"set the password in the environment variable {var}")
    return value


def emit(args, data, text: str) -> None:
    if getattr(args, "output", "plain") == "json":
        json.dump(data, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        print(text)
