"""External storage mounts (Nextcloud's "External storage", occ ``files_external:*``).

A mount is a folder in the applicable users' trees whose content lives on another store
(S3, a remote WebDAV server, a local directory). Each mount gets a :class:`Vault` of its
own over that store, so every rule of the vault (atomic commits, refusing swapped or
rolled-back files, adopting files placed by hand) holds inside mounts as in homes. Its
files are indexed under the storage path ``~mountN/...``: ``~`` cannot start a user name,
so a mount's index rows never meet a home's.

Keys stay in the server's key store and are wrapped for the master key: a mount is shared
by several users, and the store itself only ever receives ciphertext (or, with the
``encrypt`` option off, the users' bytes as they are).

Definitions use Nextcloud's backend, authentication and config names so that existing
mount definitions and runbooks carry over.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from davserver.crypto.primitives import aead_open, aead_seal, hkdf_sha256
from davserver.errors import Conflict, DavServerError, NotFound, UserError
from davserver.meta.db import MetaDB
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage
from davserver.vault.files import Node, Vault, copy_between

log = logging.getLogger("davserver.mounts")

PREFIX = "~mount"

#: Nextcloud's backend -> (the one authentication it takes here, its config keys).
BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "amazons3": ("amazons3::accesskey",
                 ("bucket", "hostname", "port", "region", "use_ssl", "use_path_style",
                  "key", "secret")),
    "dav": ("password::password", ("host", "root", "secure", "user", "password")),
    "local": ("null::null", ("datadir",)),
}
SECRET_KEYS = ("secret", "password")
OPTIONS = {"encrypt": "true", "readonly": "false", "filesystem_check_changes": "always",
           "enable_sharing": "false"}
_BOOL_OPTIONS = ("encrypt", "readonly", "enable_sharing")
_AAD = b"davserver mount config v1"


class ReadOnlyMount(DavServerError):
    """read-only: {detail}"""

    HTTP_STATUS = 403
    EXIT_CODE = 2


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Mount:
    id: int
    mount_point: str
    backend: str
    auth: str
    config: dict
    options: dict
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    @property
    def root(self) -> str:
        """The storage path of the mount's root folder."""
        return f"{PREFIX}{self.id}"

    @property
    def encrypt(self) -> bool:
        return truthy(self.options.get("encrypt", OPTIONS["encrypt"]))

    @property
    def readonly(self) -> bool:
        return truthy(self.options.get("readonly", OPTIONS["readonly"]))

    def applies_to(self, user: str, groups: list[str]) -> bool:
        """No users and no groups: everyone, as in Nextcloud."""
        if not self.users and not self.groups:
            return True
        return user in self.users or any(g in self.groups for g in groups)

    def as_dict(self, show_password: bool = False) -> dict:
        config = dict(self.config)
        if not show_password:
            for k in SECRET_KEYS:
                if config.get(k):
                    config[k] = "***"
        return {"mount_id": self.id, "mount_point": self.mount_point,
                "storage": self.backend, "authentication_type": self.auth,
                "configuration": config, "options": {**OPTIONS, **self.options},
                "applicable_users": self.users, "applicable_groups": self.groups}


def normal_mount_point(text: str) -> str:
    parts = [p for p in (text or "").split("/") if p]
    if not parts or any(p in (".", "..") or "\x00" in p for p in parts):
        raise UserError(f"invalid mount point {text!r}: give a folder path such as /S3")
    return "/" + "/".join(parts)


class MountService:
    """Definitions (CLI) and their stores (DAV layer): the one way both reach a mount."""

    def __init__(self, db: MetaDB, secret: Callable[[], bytes]) -> None:
        self.db = db
        self._secret = secret
        self._sealing_key: bytes | None = None
        self._stores: dict[int, tuple[str, Storage]] = {}
        self._lock = threading.Lock()

    # --- sealing -----------------------------------------------------------------------

    def _key(self) -> bytes:
        # Derived once per process: mounts are resolved on every request.
        if self._sealing_key is None:
            self._sealing_key = hkdf_sha256(self._secret(), salt=b"davserver-mounts",
                                            info=_AAD)
        return self._sealing_key

    def _seal(self, config: dict) -> bytes:
        return aead_seal(self._key(), json.dumps(config, sort_keys=True).encode(), _AAD)

    def _open(self, sealed: bytes) -> dict:
        return json.loads(aead_open(self._key(), bytes(sealed), _AAD))

    # --- definitions -------------------------------------------------------------------

    def _row(self, row) -> Mount:
        mid, point, backend, auth, sealed, options, users, groups = row
        return Mount(mid, point, backend, auth, self._open(sealed), json.loads(options),
                     json.loads(users), json.loads(groups))

    def list(self) -> list[Mount]:
        # Every request routes its path through the mounts: kept while the layout version
        # stays (meta.layout_schema), so a request costs no query and no unsealing. The
        # caller gets copies: definitions are edited in place before _save.
        kept = self.db.kept_for_layout("mounts")
        mounts = kept.get("all")
        if mounts is None:
            mounts = kept["all"] = [self._row(r) for r in self.db.query(
                "SELECT id, mount_point, backend, auth, config, options, users, groups "
                "FROM mounts ORDER BY id")]
        return [replace(m, config=dict(m.config), options=dict(m.options), users=list(m.users),
                        groups=list(m.groups)) for m in mounts]

    def get(self, mount_id: int) -> Mount:
        rows = self.db.query("SELECT id, mount_point, backend, auth, config, options, users, "
                             "groups FROM mounts WHERE id = ?", (int(mount_id),))
        if not rows:
            raise NotFound(f"mount {mount_id} (see files_external:list)")
        return self._row(rows[0])

    def _save(self, m: Mount) -> None:
        with self.db.tx() as c:
            c.execute("UPDATE mounts SET mount_point = ?, config = ?, options = ?, users = ?, "
                      "groups = ? WHERE id = ?",
                      (m.mount_point, self._seal(m.config), json.dumps(m.options),
                       json.dumps(m.users), json.dumps(m.groups), m.id))
        with self._lock:
            self._stores.pop(m.id, None)

    def create(self, mount_point: str, backend: str, auth: str, config: dict,
               user: str | None = None) -> Mount:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if auth != BACKENDS[backend][0]:
            raise UserError(f"backend {backend} takes authentication {BACKENDS[backend][0]}, "
                            f"not {auth!r}")
        for k in config:
            self._check_config_key(backend, k)
        point = normal_mount_point(mount_point)
        with self.db.tx() as c:
            cur = c.execute(
                "INSERT INTO mounts(mount_point, backend, auth, config, options, users, groups)"
                " VALUES(?, ?, ?, ?, ?, ?, ?)",
                (point, backend, auth, self._seal(config), "{}",
                 json.dumps([user] if user else []), "[]"))
            mid = cur.lastrowid
        return self.get(mid)

    def delete(self, mount_id: int) -> Mount:
        """Forget the definition; the data on the store stays where it is."""
        m = self.get(mount_id)
        with self.db.tx() as c:
            c.execute("DELETE FROM mounts WHERE id = ?", (m.id,))
            c.execute("DELETE FROM files WHERE path = ? OR path LIKE ?",
                      (m.root, m.root + "/%"))
        with self._lock:
            self._stores.pop(m.id, None)
        return m

    @staticmethod
    def _check_config_key(backend: str, key: str) -> None:
        known = BACKENDS[backend][1]
        if key not in known:
            raise UserError(f"unknown config key {key!r} for {backend}: use one of "
                            f"{', '.join(known)}")

    def set_config(self, mount_id: int, key: str, value: str) -> Mount:
        m = self.get(mount_id)
        self._check_config_key(m.backend, key)
        m.config[key] = value
        self._save(m)
        return m

    def set_option(self, mount_id: int, key: str, value: str) -> Mount:
        m = self.get(mount_id)
        if key not in OPTIONS:
            raise UserError(f"unknown option {key!r}: use one of {', '.join(OPTIONS)}")
        if key in _BOOL_OPTIONS:
            if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no", "on",
                                             "off"):
                raise UserError(f"option {key} takes true or false, not {value!r}")
            value = "true" if truthy(value) else "false"
        elif key == "filesystem_check_changes" and value not in ("never", "always", "0", "1"):
            raise UserError("option filesystem_check_changes takes never or always")
        m.options[key] = value
        self._save(m)
        return m

    def set_applicable(self, mount_id: int, *, add_users=(), remove_users=(), add_groups=(),
                       remove_groups=()) -> Mount:
        m = self.get(mount_id)
        m.users = sorted((set(m.users) | set(add_users)) - set(remove_users))
        m.groups = sorted((set(m.groups) | set(add_groups)) - set(remove_groups))
        self._save(m)
        return m

    # --- stores ------------------------------------------------------------------------

    def describe_endpoint(self, m: Mount) -> str:
        c = m.config
        if m.backend == "amazons3":
            return f"bucket {c.get('bucket', '')!r} at {_s3_endpoint(c) or 'AWS'}"
        if m.backend == "dav":
            return _dav_url(c)
        return c.get("datadir", "")

    def build_storage(self, m: Mount) -> Storage:
        """The mount's store, from its Nextcloud-named config."""
        c = m.config
        try:
            if m.backend == "amazons3":
                from davserver.storage.s3 import S3Settings, S3Storage

                return S3Storage(S3Settings(
                    bucket=c.get("bucket", ""), endpoint=_s3_endpoint(c),
                    region=c.get("region") or "us-east-1", access_key=c.get("key", ""),
                    secret_key=c.get("secret", ""),
                    path_style=truthy(c.get("use_path_style", "false")), retries=2,
                    connect_timeout=3, read_timeout=30))
            if m.backend == "dav":
                from davserver.storage.webdav import WebDavSettings, WebDavStorage

                return WebDavStorage(WebDavSettings(_dav_url(c), c.get("user", ""),
                                                    c.get("password", ""), retries=2,
                                                    connect_timeout=3, read_timeout=30))
            from davserver.storage.local import LocalStorage

            datadir = c.get("datadir", "")
            if not datadir or not os.path.isabs(datadir):
                raise ValueError("datadir must be an absolute path")
            return LocalStorage(datadir, os.path.join(datadir, TMP_NAME), fsync=True)
        except (TypeError, ValueError) as e:
            raise UserError(f"mount {m.id} ({m.backend}): {e}") from None

    def storage(self, m: Mount) -> Storage:
        """The mount's store as the vault sees it: keys below ``~mountN``. Made once per
        definition (a client pool per store), again after a config change."""
        stamp = json.dumps([m.backend, m.config], sort_keys=True)
        with self._lock:
            held = self._stores.get(m.id)
            if held is not None and held[0] == stamp:
                return held[1]
        st = PrefixedStorage(self.build_storage(m), m.root)
        with self._lock:
            self._stores[m.id] = (stamp, st)
        return st

    def verify(self, mount_id: int) -> Mount:
        """Reach the store and list its root; a failure names the endpoint and the cause
        (the credentials themselves never appear)."""
        m = self.get(mount_id)
        where = self.describe_endpoint(m)
        try:
            if m.backend == "local" and not os.path.isdir(m.config.get("datadir", "")):
                # Checked first: opening a local store would create the folder.
                raise UserError(f"datadir {m.config.get('datadir')} does not exist")
            self.build_storage(m).list_dir("")
        except DavServerError as e:
            hint = ""
            text = str(e)
            if "401" in text or "403" in text or "AccessDenied" in text \
                    or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
                hint = " (the credentials are wrong: check " + (
                    "key and secret" if m.backend == "amazons3" else "user and password") + ")"
            elif "NoSuchBucket" in text or (m.backend == "amazons3" and "not found" in text):
                hint = " (the bucket does not exist)"
            elif "not reachable" in text:
                hint = " (the endpoint is wrong or down: check " + (
                    "hostname and port" if m.backend == "amazons3" else "host") + ")"
            raise UserError(f"mount {m.id} at {m.mount_point}: {where}: {text}{hint}") from None
        return m


TMP_NAME = ".davserver-tmp"


def _s3_endpoint(c: dict) -> str:
    host = c.get("hostname", "")
    if not host:
        return ""
    scheme = "https" if truthy(c.get("use_ssl", "true")) else "http"
    port = c.get("port", "")
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _dav_url(c: dict) -> str:
    host = c.get("host", "").rstrip("/")
    if not host.startswith(("http://", "https://")):
        host = ("https://" if truthy(c.get("secure", "true")) else "http://") + host
    root = c.get("root", "").strip("/")
    return f"{host}/{root}" if root else host


class PrefixedStorage(Storage):
    """A store whose keys appear below ``root`` (``~mountN``), so one vault index can hold
    homes and mounts side by side."""

    def __init__(self, inner: Storage, root: str) -> None:
        self.inner = inner
        self.root = root
        self.atomic_dir_rename = inner.atomic_dir_rename
        self.local_durability = inner.local_durability
        self.kind = inner.kind

    def _k(self, key: str) -> str:
        if key == self.root:
            return ""
        if not key.startswith(self.root + "/"):
            raise NotFound(key)
        return key[len(self.root) + 1:]

    def stat(self, key: str) -> Entry | None:
        k = self._k(key)
        if not k:
            e = self.inner.stat("") if self.inner.kind != "webdav" else None
            return Entry(self.root, True, 0, e.mtime if e else 0.0)
        return self.inner.stat(k)

    def list_dir(self, key: str) -> list[Entry]:
        return [e for e in self.inner.list_dir(self._k(key)) if e.name != TMP_NAME]

    def open_reader(self, key: str) -> BlobReader:
        return self.inner.open_reader(self._k(key))

    def writer(self, key: str) -> BlobWriter:
        return self.inner.writer(self._k(key))

    def delete(self, key: str) -> None:
        self.inner.delete(self._k(key))

    def make_dir(self, key: str) -> None:
        self.inner.make_dir(self._k(key))

    def remove_dir(self, key: str) -> None:
        self.inner.remove_dir(self._k(key))

    def rename(self, src: str, dst: str) -> None:
        self.inner.rename(self._k(src), self._k(dst))

    def cleanup(self) -> int:
        return self.inner.cleanup()


class MountedVault:
    """What the DAV layer talks to: the home vault, with each applicable mount's vault in
    its place in the tree. Storage paths say which vault holds them (``~mountN/...`` or
    ``user/...``), so the resources need not know mounts exist.

    A move or copy between two vaults (home <-> mount, mount <-> mount) is a copy through
    the vaults (decrypt, re-encrypt under the target's rules) followed, for a move, by a
    delete of the source once the copy is committed.
    """

    def __init__(self, home: Vault, service: MountService, *, master, run_dir: str,
                 groups_of: Callable[[str], list[str]]) -> None:
        self.home = home
        self.service = service
        self._master = master
        self._groups_of = groups_of
        self._locks = home.commit_locks  # one per path across home and mounts (and nodes)
        self.db = home.db

    # --- resolution --------------------------------------------------------------------

    def mounts_for(self, user: str) -> list[Mount]:
        groups = self._groups_of(user)
        return [m for m in self.service.list() if m.applies_to(user, groups)]

    def resolve(self, user: str, rel: str) -> str:
        """The storage path of ``rel`` (a path inside the user's tree)."""
        rel = rel.strip("/")
        for m in self.mounts_for(user):
            point = m.mount_point.strip("/")
            if rel == point or rel.startswith(point + "/"):
                return m.root + rel[len(point):]
        return f"{user}/{rel}" if rel else user

    def _mount_of(self, spath: str) -> Mount | None:
        if not spath.startswith(PREFIX):
            return None
        head = spath.split("/", 1)[0][len(PREFIX):]
        try:
            return self.service.get(int(head))
        except (ValueError, NotFound):
            raise NotFound(spath) from None

    def vault_for(self, spath: str) -> Vault:
        m = self._mount_of(spath)
        if m is None:
            return self.home
        return self._mount_vault(m)

    def _mount_vault(self, m: Mount) -> Vault:
        master = self._master
        v = Vault(self.service.storage(m), self.home.keys, self.home.db,
                  identities=lambda: [master()],
                  recipients=lambda _user, _path: [master().as_recipient()],
                  encryption_enabled=lambda: m.encrypt, commit_locks=self._locks)
        v.foreign = lambda path: not (path + "/").startswith(m.root + "/")
        return v

    def recover_mounts(self) -> None:
        """Finish or roll back the mounts' commits a crash interrupted (the home vault
        leaves them alone). A store that cannot be reached now is logged and skipped:
        its pending commits wait for the next start."""
        for m in self.service.list():
            try:
                self._mount_vault(m).recover()
            except DavServerError as e:
                log.warning("external storage %d (%s) not recovered now: %s", m.id,
                            m.mount_point, e)

    def _writable(self, spath: str) -> Vault:
        m = self._mount_of(spath)
        if m is not None and m.readonly:
            raise ReadOnlyMount(f"{m.mount_point} is a read-only external storage")
        return self.vault_for(spath)

    # --- the Vault interface the resources use -----------------------------------------

    def stat(self, path: str) -> Node | None:
        return self.vault_for(path).stat(path)

    def list_dir(self, path: str) -> list[Node]:
        nodes = self.vault_for(path).list_dir(path)
        if path.startswith(PREFIX):
            return nodes
        user, _, rel = path.partition("/")
        here = [n for n in nodes]
        for m in self.mounts_for(user):
            parent, _, name = m.mount_point.strip("/").rpartition("/")
            if parent != rel:
                continue
            here = [n for n in here if n.name != name]
            node = self.vault_for(m.root).stat(m.root)
            if node is not None:
                here.append(Node(m.root, name, True, 0, node.mtime, node.etag, False))
        return here

    def usage(self, user: str) -> int:
        return self.home.usage(user)

    def available(self, user: str, quota, replacing=None):
        if user.startswith(PREFIX):
            return None
        return self.home.available(user, quota, replacing)

    def open_read(self, path: str, as_of: Node | None = None):
        return self.vault_for(path).open_read(path, as_of)

    def read_all(self, path: str) -> bytes:
        return self.vault_for(path).read_all(path)

    def begin_write(self, path: str, **kw):
        return self._writable(path).begin_write(path, **kw)

    def write_bytes(self, path: str, data: bytes, **kw):
        return self._writable(path).write_bytes(path, data, **kw)

    def make_dir(self, path: str) -> None:
        self._writable(path).make_dir(path)

    def delete(self, path: str) -> None:
        m = self._mount_of(path)
        if m is not None and path == m.root:
            raise ReadOnlyMount(f"{m.mount_point} is an external storage mount point; "
                                "an administrator removes it with files_external:delete")
        self._writable(path).delete(path)

    def set_mtime(self, path: str, mtime: float) -> None:
        self.vault_for(path).set_mtime(path, mtime)

    def iter_paths(self, path: str) -> Iterator[tuple[str, Entry]]:
        return self.vault_for(path).iter_paths(path)

    def copy_file(self, src: str, dst: str, *, quota=None):
        source, target = self.vault_for(src), self._writable(dst)
        return copy_between(source, src, target, dst, quota=quota)

    def move(self, src: str, dst: str) -> None:
        source, target = self._writable(src), self._writable(dst)
        src_m, dst_m = self._mount_of(src), self._mount_of(dst)
        if (src_m.id if src_m else None) == (dst_m.id if dst_m else None):
            if src_m is not None and src == src_m.root:
                raise ReadOnlyMount(f"{src_m.mount_point} is an external storage mount point")
            source.move(src, dst)
            return
        if target.stat(dst) is not None:
            raise Conflict(f"{dst} exists")
        node = source.stat(src)
        if node is None:
            raise NotFound(src)
        if node.is_dir:
            target.make_dir(dst)
            for key, entry in list(source.iter_paths(src)):
                to = dst + key[len(src):]
                if entry.is_dir:
                    target.make_dir(to)
                else:
                    self.copy_file(key, to)
        else:
            self.copy_file(src, dst)
        self.db.move_props(src, dst)  # dead properties follow, as within one vault
        source.delete(src)

    def scan(self, m: Mount):
        """Authenticate every file on a mount's store as it is now (files other tools
        added included), as ``encryption:scan`` does for homes: plaintext, no-key (named
        by file ID), corrupt, mismatch and duplicate files are reported."""
        from davserver.vault import check

        return check.scan(self._mount_vault(m), path=m.root)


def is_mount_path(path: str) -> bool:
    """Is this storage path inside an external storage mount (``~mountN/...``)?"""
    return path.startswith(PREFIX)
