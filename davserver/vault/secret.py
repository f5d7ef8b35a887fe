"""The instance secret file: ``davserver-secret-v1:<base64 of 32 random bytes>``, mode 0600.

It unlocks the master key. It lives outside the data directory so that a copy of the
data (and even of the key store) is useless without it.
"""

from __future__ import annotations

import base64
import os

from davserver.errors import UserError

SECRET_PREFIX = "davserver-secret-v1:"


def read_secret(path: str) -> bytes:
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise UserError(f"instance secret {path} not found (run 'davserver init' or restore "
                        "a backup)") from None
    except PermissionError:
        raise UserError(f"cannot read instance secret {path}: permission denied") from None
    if not text.startswith(SECRET_PREFIX):
        raise UserError(f"{path} is not a davserver secret file")
    return base64.b64decode(text[len(SECRET_PREFIX):])


def write_secret(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
