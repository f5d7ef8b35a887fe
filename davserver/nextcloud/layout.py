"""Where Nextcloud keeps files and keys in its data directory (no database needed).

    <data>/<user>/files/<path>                                   the (encrypted) files
    <data>/<user>/files_encryption/keys/files/<path>/OC_DEFAULT_MODULE/
        fileKey, <keyname>.shareKey                              per-file keys (NC >= 9)
    <data>/<user>/files_encryption/keyfiles/<path>.key           ownCloud <= 8 layout
    <data>/<user>/files_encryption/share-keys/<path>.<keyname>.shareKey
    <data>/<user>/files_encryption/OC_DEFAULT_MODULE/<user>.privateKey   user key pair
    <data>/files_encryption/OC_DEFAULT_MODULE/{master,recoveryKey,pubShare}_<id>.privateKey

Keys mirror the file's path, so a file moved behind Nextcloud's back has none here: that
is the "key not found" error, and the file is reported, never guessed at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

MODULE = "OC_DEFAULT_MODULE"
_SYSTEM_KEY = re.compile(r"^(master|recoveryKey|recovery|pubShare)_[0-9A-Za-z]+$")
#: An upload Nextcloud never finished (its client retries from scratch): not a user file.
_UNFINISHED_UPLOAD = re.compile(r"\.ocTransferId\d+\.part$")


@dataclass(frozen=True)
class SystemKey:
    kind: str  # master | recovery | pubShare
    key_id: str
    path: str


def system_keys(datadir: str) -> list[SystemKey]:
    """Private keys of the master, recovery and public-link key pairs, in any layout."""
    found: dict[str, SystemKey] = {}
    for d, suffix in ((os.path.join(datadir, "files_encryption", MODULE), ".privateKey"),
                      (os.path.join(datadir, "files_encryption"), ".privateKey"),
                      (os.path.join(datadir, "owncloud_private_key"), ".private.key")):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            if not name.endswith(suffix):
                continue
            key_id = name[:-len(suffix)]
            m = _SYSTEM_KEY.match(key_id)
            if m and key_id not in found:
                kind = {"recoveryKey": "recovery"}.get(m.group(1), m.group(1))
                found[key_id] = SystemKey(kind, key_id, os.path.join(d, name))
    return list(found.values())


def user_private_key(datadir: str, user: str) -> str | None:
    base = os.path.join(datadir, user, "files_encryption")
    for p in (os.path.join(base, MODULE, f"{user}.privateKey"),
              os.path.join(base, f"{user}.privateKey"), os.path.join(base, f"{user}.private.key")):
        if os.path.isfile(p):
            return p
    return None


def users(datadir: str) -> list[str]:
    """Every folder of the data directory with a ``files/`` folder: Nextcloud's users."""
    try:
        names = sorted(os.listdir(datadir))
    except OSError as e:
        raise FileNotFoundError(e.errno, f"cannot read the data directory: {e.strerror}",
                                datadir) from None
    return [n for n in names if not n.startswith(("files_encryption", "appdata_", "."))
            and os.path.isdir(os.path.join(datadir, n, "files"))]


def walk_files(datadir: str, user: str) -> Iterator[tuple[str, bool]]:
    """(path below files/, is_dir) in a stable order; symlinks are not followed and
    unfinished uploads (``*.ocTransferId<n>.part``) are left out."""
    root = os.path.join(datadir, user, "files")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        for d in dirnames:
            yield (f"{rel_dir}/{d}" if rel_dir else d), True
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full) \
                    or _UNFINISHED_UPLOAD.search(name):
                continue
            yield (f"{rel_dir}/{name}" if rel_dir else name), False


@dataclass(frozen=True)
class FileKeyPaths:
    file_key: str  # may not exist (NC >= 27 with OAEP share keys)
    share_key_of: dict[str, str]  # key name -> path, only those that exist


def file_key_paths(datadir: str, user: str, rel: str) -> list[FileKeyPaths]:
    """The key locations of ``<user>/files/<rel>`` that exist, newest layout first."""
    out = []
    base = os.path.join(datadir, user, "files_encryption")
    d = os.path.join(base, "keys", "files", *rel.split("/"), MODULE)
    if os.path.isdir(d):
        shares = {n[:-len(".shareKey")]: os.path.join(d, n) for n in sorted(os.listdir(d))
                  if n.endswith(".shareKey")}
        out.append(FileKeyPaths(os.path.join(d, "fileKey"), shares))
    legacy_key = os.path.join(base, "keyfiles", *rel.split("/")) + ".key"
    share_dir = os.path.join(base, "share-keys", *rel.split("/")[:-1])
    prefix = rel.split("/")[-1] + "."
    shares = {}
    if os.path.isdir(share_dir):
        for n in sorted(os.listdir(share_dir)):
            if n.startswith(prefix) and n.endswith(".shareKey"):
                shares[n[len(prefix):-len(".shareKey")]] = os.path.join(share_dir, n)
    if shares or os.path.isfile(legacy_key):
        out.append(FileKeyPaths(legacy_key, shares))
    return out
