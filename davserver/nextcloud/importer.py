"""Decrypt a Nextcloud/ownCloud data directory and store it: the service behind
``davserver import:nextcloud``.

Two targets share one walk: a plain directory (``DIR/<user>/<path>``, the offline recovery
recipe: no davserver instance needed) and a davserver instance (each file written through
the vault like any upload, so it is encrypted in davserver's own format). Both:

- never show a file as good before its last block authenticated: the plaintext goes to a
  temporary name (or an uncommitted upload) that is thrown away on any failure;
- are resumable: a file already at the target with the same size and mtime is skipped, so a
  run stopped by Ctrl-C or a crash is finished by running it again;
- report, per failed file, why (no key, bad signature, wrong version, truncated, ...) and go
  on with the next one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from davserver.auth.users import new_password
from davserver.errors import Conflict, DavServerError, FormatError, UserError
from davserver.nextcloud import content, filekeys, keyfiles, layout
from davserver.nextcloud.phpconfig import NextcloudConfig, read_config
from davserver.nextcloud.privatekeys import decrypt_private_key
from davserver.vault import context

log = logging.getLogger("davserver.nextcloud")

COPY_BYTES = 1 << 20


class NoKeysForFile(filekeys.ShareKeyMissing):
    """no encryption keys for this file (moved outside Nextcloud? see layout){detail}"""


@dataclass
class Source:
    """A Nextcloud data directory with the private keys this run could open."""

    datadir: str
    config: NextcloudConfig
    private_keys: dict[str, object]
    max_version: int = content.DEFAULT_MAX_VERSION


@dataclass(frozen=True)
class Item:
    user: str
    rel: str  # path below files/
    path: str  # on disk
    is_dir: bool
    size: int = 0  # on disk
    mtime: float = 0.0


@dataclass
class Report:
    files: int = 0
    bytes: int = 0
    plain: int = 0  # of files: not encrypted in Nextcloud, copied
    skipped: int = 0
    folders: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    created_users: dict[str, str | None] = field(default_factory=dict)
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "plain": self.plain,
                "skipped": self.skipped, "folders": self.folders, "dryRun": self.dry_run,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "createdUsers": self.created_users}


def select_users(datadir: str, wanted: list[str] | None) -> list[str]:
    found = layout.users(datadir)
    if not wanted:
        return found
    for u in wanted:
        if u not in found:
            raise UserError(f"no user {u!r} in {datadir} (found: {', '.join(found) or 'none'})")
    return list(dict.fromkeys(wanted))


def open_source(datadir: str, config_path: str, users: list[str], *,
                password: str | None = None, recovery_password: str | None = None,
                max_version: int = content.DEFAULT_MAX_VERSION) -> Source:
    """Read config.php and open every private key the given passwords allow.

    The master key needs only config.php, public-link keys no password at all. A password
    that does not open its key is an error here, before any file is touched.
    """
    if not os.path.isdir(datadir):
        raise UserError(f"{datadir} is not a directory (give Nextcloud's data directory)")
    cfg = read_config(config_path)
    keys: dict[str, object] = {}
    recovery_found = False
    for sk in layout.system_keys(datadir):
        blob = keyfiles.read_key(sk.path, cfg.secret)
        if sk.kind == "master":
            keys[sk.key_id] = decrypt_private_key(blob, cfg.secret, [sk.key_id, ""], cfg,
                                                  f"master key {sk.key_id} (the secret in "
                                                  "config.php)")
        elif sk.kind == "pubShare":
            try:
                keys[sk.key_id] = decrypt_private_key(blob, "", ["", sk.key_id], cfg,
                                                      sk.key_id)
            except DavServerError as e:
                log.warning("public-link key %s not usable: %s", sk.key_id, e)
        elif recovery_password is not None:
            recovery_found = True
            keys[sk.key_id] = decrypt_private_key(blob, recovery_password, ["", sk.key_id],
                                                  cfg, f"recovery key {sk.key_id}")
    if recovery_password is not None and not recovery_found:
        raise UserError(f"no recovery key in {datadir}/files_encryption")
    if password is not None:
        for user in users:
            path = layout.user_private_key(datadir, user)
            if path is None:
                raise UserError(f"user {user} has no key pair in the data directory "
                                "(master-key mode needs no password)")
            keys[user] = decrypt_private_key(keyfiles.read_key(path, cfg.secret), password,
                                             [user], cfg, f"user {user}")
    return Source(datadir, cfg, keys, max_version)


def plan(source: Source, users: list[str]) -> list[Item]:
    items = []
    for user in users:
        for rel, is_dir in layout.walk_files(source.datadir, user):
            path = os.path.join(source.datadir, user, "files", *rel.split("/"))
            if is_dir:
                items.append(Item(user, rel, path, True))
            else:
                st = os.stat(path)
                items.append(Item(user, rel, path, False, st.st_size, st.st_mtime))
    return items


@dataclass(frozen=True)
class Opened:
    """A file ready to be read: plaintext size known, key and version checked."""

    item: Item
    encrypted: bool
    size: int  # plaintext bytes
    info: content.FileInfo | None = None
    key: bytes | None = None
    version: int | None = None

    def copy_to(self, write: Callable[[bytes], object]) -> int:
        if not self.encrypted:
            n = 0
            with open(self.item.path, "rb") as f:
                while block := f.read(COPY_BYTES):
                    write(block)
                    n += len(block)
        else:
            n = content.decrypt_file(self.item.path, self.info, self.key, self.version, write)
        if n != self.size:
            raise FormatError(f"{n} bytes where {self.size} were expected (file changed?)")
        return n


def open_item(source: Source, item: Item) -> Opened:
    info = content.read_info(item.path)
    paths = layout.file_key_paths(source.datadir, item.user, item.rel)
    if not info.header.present and (not paths or not content.looks_legacy(item.path, info)):
        return Opened(item, False, item.size)  # never encrypted (or decrypt-all'ed)
    if not paths:
        raise NoKeysForFile()
    cands = filekeys.candidates(paths, source.private_keys, source.config.secret,
                                info.header.legacy_file_key)
    key, version = content.find_key_and_version(item.path, info, cands, source.max_version)
    return Opened(item, True, content.plaintext_size(item.path, info), info, key, version)


# --- targets ---------------------------------------------------------------------------


class DirTarget:
    """Plaintext files under ``root/<user>/``, mtimes kept."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _path(self, user: str, rel: str) -> str:
        return os.path.join(self.root, user, *rel.split("/"))

    def prepare_user(self, user: str, report: Report) -> None:
        os.makedirs(self._path(user, ""), exist_ok=True)

    def make_dir(self, user: str, rel: str) -> None:
        os.makedirs(self._path(user, rel), exist_ok=True)

    def existing(self, user: str, rel: str) -> tuple[int, float] | None:
        try:
            st = os.stat(self._path(user, rel))
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime

    def store(self, opened: Opened) -> int:
        item = opened.item
        final = self._path(item.user, item.rel)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = os.path.join(os.path.dirname(final),
                           f".{os.path.basename(final)}.import-{os.getpid()}.part")
        try:
            with open(tmp, "wb") as f:
                n = opened.copy_to(f.write)
                f.flush()
                os.fsync(f.fileno())
            os.utime(tmp, (item.mtime, item.mtime))
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return n


class InstanceTarget:
    """Files written into a davserver instance through the vault (encrypted as it is
    configured), users created when missing."""

    def __init__(self, inst, password: str | None) -> None:
        self.inst = inst
        self.password = password
        self._identities: dict[str, tuple] = {}

    def prepare_user(self, user: str, report: Report) -> None:
        inst = self.inst
        login = None
        if inst.users.get(user) is None:
            login = self.password or new_password()
            inst.users.add(user, login)
            report.created_users[user] = None if self.password else login
        if inst.mode() != "master" and inst.userkeys.public(user) is None:
            # Writing needs only the public half; a user without keys gets them now.
            login = login or self.password
            if login is None:
                raise UserError(f"user {user} has no davserver key yet: give their password "
                                "in $DAVSERVER_PASS (--password-from-env)")
            self._identities[user] = inst.unlock(user, login)

    def _path(self, user: str, rel: str) -> str:
        return f"{user}/{rel}" if rel else user

    def make_dir(self, user: str, rel: str) -> None:
        path = self._path(user, rel)
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            sub = "/".join(parts[:i])
            node = self.inst.vault.stat(sub)
            if node is None:
                try:
                    self.inst.vault.make_dir(sub)
                except Conflict:
                    pass
            elif not node.is_dir:
                raise Conflict(f"{sub} is a file in davserver")

    def existing(self, user: str, rel: str) -> tuple[int, float] | None:
        rec = self.inst.db.get_file(self._path(user, rel))
        return None if rec is None else (rec.size, rec.mtime)

    def store(self, opened: Opened) -> int:
        item = opened.item
        if "/" in item.rel:
            self.make_dir(item.user, item.rel.rsplit("/", 1)[0])
        with context.acting_as(*self._identities.get(item.user, ())):
            up = self.inst.vault.begin_write(self._path(item.user, item.rel),
                                             quota=self.inst.users.quota(item.user),
                                             expected_size=opened.size)
            try:
                n = opened.copy_to(up.write)
            except BaseException:
                up.abort()
                raise
            up.commit(mtime=item.mtime)
        return n


class NullTarget:
    """--dry-run: decrypt and verify everything, write nothing."""

    def prepare_user(self, user: str, report: Report) -> None:
        pass

    def make_dir(self, user: str, rel: str) -> None:
        pass

    def existing(self, user: str, rel: str) -> None:
        return None

    def store(self, opened: Opened) -> int:
        return opened.copy_to(lambda _b: None)


def _same(existing: tuple[int, float] | None, size: int, mtime: float) -> bool:
    return existing is not None and existing[0] == size and abs(existing[1] - mtime) < 1e-3


def run_import(source: Source, users: list[str], target, *, dry_run: bool = False,
               progress: Callable[[int, int], None] | None = None,
               items: list[Item] | None = None) -> Report:
    """Copy every file of ``users`` to ``target``; failures are reported, not raised."""
    report = Report(dry_run=dry_run)
    items = plan(source, users) if items is None else items
    for user in users:
        target.prepare_user(user, report)
    for item in items:
        name = f"{item.user}/{item.rel}"
        try:
            if item.is_dir:
                target.make_dir(item.user, item.rel)
                report.folders += 1
                continue
            opened = open_item(source, item)
            there = target.existing(item.user, item.rel)
            if _same(there, opened.size, item.mtime):
                report.skipped += 1
            elif there is not None and there[1] > item.mtime + 1e-3:
                report.failed.append((name, "a newer file with other content is at the "
                                            "target; kept it (move it away to import)"))
            else:
                report.bytes += target.store(opened)
                report.files += 1
                report.plain += 0 if opened.encrypted else 1
        except (DavServerError, OSError) as e:
            reason = str(e) if isinstance(e, DavServerError) else (e.strerror or str(e))
            log.debug("failed to import %s: %s", name, reason)
            report.failed.append((name, reason))
        finally:
            if progress is not None and not item.is_dir:
                progress(1, item.size)
    return report
