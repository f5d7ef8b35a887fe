"""One davserver instance: its config, secret, stores and services, wired together.

The CLI, the HTTP app and the tests all get their services from :func:`open_instance`,
so there is exactly one way a vault is assembled.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from davserver import config as config_mod
from davserver.auth.app_passwords import AppPasswords
from davserver.auth.groups import GroupService
from davserver.auth.ldap import LdapConfig, LdapDirectory
from davserver.auth.ldap_groups import LdapGroups
from davserver.auth.login import LoginService
from davserver.auth.throttle import Throttle
from davserver.auth.users import UserService, new_password
from davserver.config import Config
from davserver.crypto.kdf import KdfParams
from davserver.errors import DavServerError, KeyNotFound, UserError
from davserver.meta import job_lock, schema_version, settings
from davserver.meta.cluster_locks import commit_locks
from davserver.meta.connect import metadb_exists, open_metadb
from davserver.meta.db import MetaDB
from davserver.vault import context
from davserver.vault.chunkstage import forget_all as forget_uploads
from davserver.vault.files import Vault, ensure_home, remove_home
from davserver.vault.keydocs import canonical, open_keydocs
from davserver.vault.keystore import Identity, KeyStore, Recipient
from davserver.vault.mounts import MountedVault, MountService, forget_shares, is_mount_path
from davserver.vault.secret import read_secret, write_secret
from davserver.vault.shares import ShareService
from davserver.vault.sharewraps import ShareWraps
from davserver.vault.storage_factory import make_storage
from davserver.vault.teamfolders import TeamFolderService, is_team_owner
from davserver.vault.userkeys import KeyLocked, UserKeys

log = logging.getLogger("davserver")

MODULE_ID = "DAVSERVER_AEAD_V1"

S_ENABLED = settings.ENABLED
S_MODE = settings.MODE
S_MODULE = settings.MODULE
S_KEY_ROOT = settings.KEY_ROOT
S_MAINTENANCE = settings.MAINTENANCE
S_HOME_ENCRYPTED = "encryption.home_storage"  # "0": homes stay plaintext (mounts decide alone)


class Instance:
    def __init__(self, cfg: Config) -> None:
        self.config = cfg
        config_mod.check_owner(cfg.data_dir)
        if not metadb_exists(cfg.database_url, cfg.data_dir):
            raise UserError(f"no davserver instance in {cfg.data_dir} (run 'davserver init' "
                            "or 'davserver serve' once)")
        self.db = open_db(cfg, durable_markers=cfg.fsync)
        self._settings: dict[str, str] = {}
        self._settings_at = -1e9
        self._settings_version = -1
        self._master_checked = -1e9
        self._has_master = False
        self.storage = make_storage(cfg, self.db)
        self.keys = KeyStore(open_keydocs(self.key_root, self.db, fsync=cfg.fsync),
                             fsync=cfg.fsync)
        self._master: Identity | None = None
        self.users = UserService(self.db, cache_seconds=cfg.auth_cache_seconds,
                                 on_create=lambda u: ensure_home(self.vault, u),
                                 on_delete=self._remove_user_data)
        self.throttle = Throttle(self.db, cfg.throttle_max_failures,
                                 cfg.throttle_window_seconds,
                                 max_failures_per_address=cfg.throttle_max_failures_per_address)
        if cfg.redis_url:  # counted across nodes (issue 18)
            from davserver.auth.redis_throttle import RedisThrottle
            from davserver.meta.shared_state import redis_client

            self.throttle = RedisThrottle(
                redis_client(cfg.redis_url), cfg.throttle_max_failures,
                cfg.throttle_window_seconds,
                max_failures_per_address=cfg.throttle_max_failures_per_address)
        self.userkeys = UserKeys(
            self.keys, suite=cfg.hpke_suite, cache_seconds=cfg.key_cache_seconds,
            params=KdfParams(cfg.kdf_time_cost, cfg.kdf_memory_kib, cfg.kdf_parallelism))
        directory = None
        ldap_conf = dict(cfg.ldap)
        auth_cache = float(ldap_conf.pop("auth_cache_seconds", 0))
        if ldap_conf:
            try:
                directory = LdapDirectory(LdapConfig.from_mapping(ldap_conf))
            except (ValueError, TypeError) as e:
                raise UserError(f"[ldap] in {cfg.path}: {e}") from None
        self.app_passwords = AppPasswords(self)
        self.login = LoginService(self.users, self.throttle, instance=self, directory=directory,
                                  directory_cache_seconds=auth_cache)
        self.vault = Vault(self.storage, self.keys, self.db,
                           identities=self.identities, recipients=self.recipients,
                           encryption_enabled=self.home_encryption_enabled,
                           commit_locks=commit_locks(os.path.join(cfg.run_dir, "commit.lock"),
                                                     cfg.redis_url))
        self.groups = GroupService(self.db, self.users)
        if directory is not None and directory.config.group_base:
            self.groups.directory = LdapGroups(directory)
        self.shares = ShareService(
            self.db, self.vault, self.users, self.groups,
            share_folder=str(cfg.extra.get("sharing", {}).get("share_folder", "/")))
        self.sharewraps = ShareWraps(self.keys, self.db, self.userkeys, self.shares,
                                     user_mode=lambda: self.mode() == "user",
                                     suite=cfg.hpke_suite)
        self.shares.keywork = self.sharewraps
        self.teamfolders = TeamFolderService(self.db, self.vault, self.shares, self.groups)
        self.shares.team_name = self.teamfolders.name_of
        self.users.team_quota = self.teamfolders.quota_of
        self.groups.on_change = self.shares.group_member_changed
        self.vault.after_move = self.sharewraps.moved
        self.mounts = MountService(self.db, lambda: self.secret)
        #: The tree a user sees over WebDAV: the home with external storage mounted in it.
        self.dav_vault = MountedVault(self.vault, self.mounts, master=self.master,
                                      run_dir=cfg.run_dir, groups_of=self._groups_of)
        self.vault.foreign = is_mount_path
        self.shares.lister = self.dav_vault.list_dir  # mount points in the user's folders
        self.shares.own_path = self.dav_vault.resolve
        self.shares.own_rel = self.dav_vault.rel_of
        self.shares.node_stat = self.dav_vault.stat
        self.shares.may_share = self.mounts.check_sharing
        self.mounts.on_delete = lambda root: forget_shares(self.shares, root)
        self.dav_vault.user_recipients = lambda user, path: (
            self.recipients(user, path) if self.mode() == "user" else None)
        self.dav_vault.user_identities = self.identities

    def _groups_of(self, user: str) -> list[str]:
        u = self.db.get_user(user)
        return self.groups.groups_of(user) + (["admin"] if u is not None and u.is_admin else [])

    def _remove_user_data(self, user: str) -> None:
        self.shares.forget_user(user)
        remove_home(self.vault, user)
        self.userkeys.delete(user)
        self.app_passwords.revoke_all(user)
        if self.storage.stat(f".uploads/{user}") is not None:  # chunked uploads in progress
            self.vault.delete(f".uploads/{user}")
        forget_uploads(self.vault, f".uploads/{user}")  # ... and their rows and keys
        self.db.delete_setting(f"recovery.optin.{user}")

    # --- settings ----------------------------------------------------------------------

    SETTINGS_TTL = 1.0  # seconds another node's change may take to be seen here

    def _setting(self, key: str) -> str | None:
        """Settings change rarely and are read on every request: read them all again when
        a process of this node changed one (admin commands, other workers: seen at once),
        and at least once a second (other nodes sharing the DB)."""
        now = time.monotonic()
        version = self.db.settings_version
        if now - self._settings_at > self.SETTINGS_TTL or self._settings_version != version:
            self._settings_version = version
            self._settings = dict(self.db.query("SELECT key, value FROM settings"))
            self._settings_at = now
        return self._settings.get(key)

    @property
    def key_root(self) -> str:
        """Where the keys are: an absolute directory, or ``db:`` (the metadata DB)."""
        return canonical(self._setting(S_KEY_ROOT) or self.config.key_storage_root
                         or self.config.default_key_root)

    @property
    def key_storage(self) -> str:
        """What encryption:status shows: the directory, or "database"."""
        return self.keys.docs.describe()

    def encryption_enabled(self) -> bool:
        return self._setting(S_ENABLED) == "1"

    def home_encryption_enabled(self) -> bool:
        """Nextcloud's "encrypt home storage": off keeps new home files plaintext while
        mounts follow their own ``encrypt`` option."""
        return self.encryption_enabled() and self._setting(S_HOME_ENCRYPTED) != "0"

    def mode(self) -> str:
        return self._setting(S_MODE) or "master"

    def maintenance(self) -> bool:
        return self._setting(S_MAINTENANCE) == "1"

    def exclusive_job(self, name: str):
        """A context in which no other process or node runs the job ``name`` (a Redis lock
        when redis.url is set; on one node, maintenance mode already keeps jobs apart)."""
        return job_lock.cluster_job(self.config.redis_url, name)

    def jobs_in_progress(self) -> list[str]:
        """Interrupted or running admin jobs (encryption:status shows them)."""
        jobs = [self.db.get_setting(settings.MAINTENANCE_JOB),
                "change-key-storage-root" if self.db.get_setting(settings.JOB_KEY_ROOT)
                else None]
        return [j for j in jobs if j]

    def refresh(self) -> None:
        """Pick up settings other processes changed (admin commands, other nodes)."""
        root = self.key_root
        if root != self.keys.root:
            docs = open_keydocs(root, self.db, fsync=self.config.fsync)
            log.info("key storage is now %s", docs.describe())
            self.keys.set_docs(docs)

    # --- keys --------------------------------------------------------------------------

    @property
    def secret(self) -> bytes:
        return read_secret(self.config.secret_file)

    def master(self) -> Identity:
        if self._master is None:
            self._master = self.keys.load_master(self.secret)
        return self._master

    def identities(self) -> list[Identity]:
        if self.mode() == "master":
            return [self.master()]
        ids = list(context.current())
        if not ids:
            raise KeyLocked()
        ids += self.sharewraps.identities_for(tuple(ids))  # share keys they hold
        if self._master_present():
            # Files a node wrote in the second before it saw a switch to user-key mode
            # carry a master wrap only; they stay readable to their (authorised) owner.
            ids.append(self.master())
        return ids

    def _master_present(self) -> bool:
        if self._master is not None:
            return True
        now = time.monotonic()
        if now - self._master_checked > self.SETTINGS_TTL:
            self._master_checked = now
            self._has_master = bool(self.keys.master_files())
        return self._has_master

    def recipients(self, user: str, path: str = "") -> list[Recipient]:
        if self.mode() == "master":
            return [self.master().as_recipient()]
        if is_team_owner(user):
            # A team folder has no owner key: its groups' share keys and the recovery key.
            rec = self.userkeys.recovery_public()
            out = self.sharewraps.recipients_for(path) + ([rec] if rec else [])
            if not out:
                raise KeyNotFound(f"share key of team folder {user} (give it a group first)")
            return out
        own = self.userkeys.public(user)
        if own is None:
            raise KeyNotFound(f"user key of {user} (the user must log in once)")
        # The owner uploading holds the private half: a self wrap (keywrap) for them.
        mine = next((i for i in context.current() if i.recipient == own.recipient), None)
        out = [mine.as_recipient() if mine is not None else own]
        if self.recovery_opted_in(user):
            rec = self.userkeys.recovery_public()
            if rec is not None:
                out.append(rec)
        if path:
            out += self.sharewraps.recipients_for(path)  # members read it at once
        return out

    def unlock(self, user: str, password: str) -> tuple[Identity, ...]:
        """Identities a logged-in user acts with: none in master-key mode (the master key
        serves everyone), the user's own key in user-key mode."""
        if self.mode() == "master":
            return ()
        ids = (self.userkeys.unlock(user, password),)
        self._share_pending(ids)
        self._share_reconcile()
        return ids

    _reconciled_at = -1e9

    def _share_reconcile(self) -> None:
        """Directory groups change without an event: at most once per directory cache
        interval, wraps of users who left a shared group are removed (vault.sharewraps)."""
        directory = self.groups.directory
        if directory is None:
            return
        now = time.monotonic()
        if now - self._reconciled_at < directory.cache_seconds:
            return
        self._reconciled_at = now
        try:
            self.sharewraps.reconcile()
        except DavServerError as e:
            log.warning("share key reconciliation not done: %s", e)

    def _share_pending(self, ids: tuple[Identity, ...]) -> None:
        """Wraps waiting for someone able to make them (vault.sharekeys): this user, or
        a holder whose key this process has unlocked recently (online)."""
        if not self.sharewraps.keys.pending():
            return
        try:
            self.sharewraps.complete_pending(ids + self.userkeys.unlocked())
        except DavServerError as e:
            log.warning("pending share key work not done: %s", e)

    def recovery_opted_in(self, user: str) -> bool:
        return self.db.get_setting(f"recovery.optin.{user}") == "1"

    def close(self) -> None:
        self.db.close()


@dataclass
class InitResult:
    created: bool
    admin_user: str | None
    admin_password: str | None
    config_path: str
    secret_file: str
    #: The new instance uses a secret file that was already there (kept as it was).
    reused_secret: bool = False


def init_instance(cfg: Config, *, admin: str = "admin",
                  admin_password: str | None = None) -> InitResult:
    """Create whatever of config, secret, DB, key store and first admin is missing.

    Safe to run again: existing pieces are kept, and a password is only made (and shown)
    when the admin account is created.
    """
    config_mod.check_owner(cfg.data_dir)
    new_instance = not metadb_exists(cfg.database_url, cfg.data_dir)
    foreign = config_mod.foreign_config(cfg)
    if foreign and new_instance:
        raise UserError(f"{foreign}; give this instance its own config with --config (or "
                        "DAVSERVER_CONFIG), e.g. a new file next to it")
    created = False
    # Nothing that exists is ever overwritten: a config or secret found here stays as is.
    if not os.path.exists(cfg.path):
        config_mod.write_default(cfg)
        created = True
    reused_secret = new_instance and os.path.exists(cfg.secret_file)
    if not os.path.exists(cfg.secret_file):
        if not new_instance:
            raise DavServerError(f"the instance in {cfg.data_dir} exists but its secret "
                                 f"{cfg.secret_file} is missing: restore it from a backup")
        write_secret(cfg.secret_file)
        created = True
    for d in (cfg.data_dir, cfg.files_dir, cfg.tmp_dir):
        os.makedirs(d, mode=0o700, exist_ok=True)
    new_db = new_instance
    db = open_db(cfg)
    if new_db:
        db.set_setting(S_ENABLED, "1")
        db.set_setting(S_MODE, "master")
        db.set_setting(S_MODULE, MODULE_ID)
        created = True
    db.close()
    inst = Instance(cfg)
    try:
        if not inst.keys.master_files():
            inst.keys.create_master(inst.secret)
            created = True
        inst.master()  # proves the secret opens the master key
        password = None
        if not inst.users.list():
            password = admin_password or new_password()
            inst.users.add(admin, password, is_admin=True)
            created = True
        return InitResult(created, admin if password else None, password, cfg.path,
                          cfg.secret_file, reused_secret)
    finally:
        inst.close()


def open_db(cfg: Config, *, durable_markers: bool = True,
            check_version: bool = True) -> MetaDB:
    """The metadata store ``database.url`` names (SQLite file or PostgreSQL)."""
    return open_metadb(cfg.database_url, cfg.data_dir, durable_markers=durable_markers,
                       check_version=check_version, pool_size=cfg.database_pool_size,
                       prepare_threshold=cfg.database_prepare_threshold)


def upgrade_database(cfg: Config) -> list[str]:
    """``davserver upgrade``: run the schema migrations this code has and the database
    has not had; one line per step."""
    if not metadb_exists(cfg.database_url, cfg.data_dir):
        raise UserError(f"no davserver instance in {cfg.data_dir} (run 'davserver init')")
    db = open_db(cfg, check_version=False)
    try:
        return schema_version.upgrade(db)
    finally:
        db.close()


def open_instance(config_path: str | None = None, data_dir: str | None = None) -> Instance:
    return Instance(config_mod.load(config_path, data_dir))
