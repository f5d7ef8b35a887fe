"""Configuration: where things live and how the server listens.

State that admin commands change at run time (encryption on/off, mode, maintenance) lives
in the metadata DB instead, so every node of a cluster sees one truth. This file holds what
must be known before the DB can be opened. Defaults make ``davserver serve`` work with no
file at all; the first start writes one that documents every key.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from davserver.auth import forwarded
from davserver.errors import UserError
from davserver.meta import shared_state

log = logging.getLogger("davserver.config")


def system_config_dir() -> str:
    """Where root's default config and secret live (``DAVSERVER_SYSTEM_CONFIG_DIR`` moves
    it, for packagers and for tests, which must not touch the real /etc/davserver)."""
    return os.environ.get("DAVSERVER_SYSTEM_CONFIG_DIR") or "/etc/davserver"


def default_config_path() -> str:
    env = os.environ.get("DAVSERVER_CONFIG")
    if env:
        return env
    if os.geteuid() == 0:
        return os.path.join(system_config_dir(), "davserver.toml")
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "davserver", "davserver.toml")


def default_secret_path(config_path: str) -> str:
    """``secret`` next to ``davserver.toml``, ``NAME.secret`` next to ``NAME.toml``: a
    second instance's config in the same folder never picks up the first one's secret."""
    folder = os.path.dirname(os.path.abspath(config_path))
    stem = Path(config_path).stem
    return os.path.join(folder, "secret" if stem == "davserver" else f"{stem}.secret")


def default_data_dir() -> str:
    env = os.environ.get("DAVSERVER_DATA_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/davserver"
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(base, "davserver")


@dataclass
class Config:
    path: str
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    certfile: str = ""
    keyfile: str = ""
    workers: int = 0  # 0: one per CPU core (dav.prefork.default_workers)
    threads: int = 16
    #: The direct GET/HEAD/PUT path in front of WsgiDAV (dav.fastfiles); false leaves every
    #: request to WsgiDAV, the reference behaviour (diagnosis, and the tests of both paths).
    fast_files: bool = True
    socket_timeout: float = 300.0
    block_size: int = 256 * 1024
    secret_file: str = ""
    key_storage_root: str = ""
    fsync: bool = True
    storage_backend: str = "local"  # "local" | "s3" | "webdav" (davserver.vault.storage_factory)
    storage_options: dict = field(default_factory=dict)  # [storage.s3] / [storage.webdav]
    throttle_max_failures: int = 5
    throttle_window_seconds: float = 300.0
    throttle_max_failures_per_address: int | None = None  # None: throttle_max_failures
    auth_cache_seconds: float = 300.0
    key_cache_seconds: float = 3600.0
    hpke_suite: str = "x25519"
    kdf_time_cost: int = 3
    kdf_memory_kib: int = 65536
    kdf_parallelism: int = 4
    ldap: dict = field(default_factory=dict)
    log_level: str = "info"
    database_url: str = ""  # "" or a SQLite path: <data_dir>/davserver.db; or postgresql://
    database_pool_size: int = 10  # PostgreSQL connections per server process (at most)
    database_prepare_threshold: int | None = 2  # uses before a server-side prepare; None: never
    redis_url: str = ""  # "": node-local locks and throttling; redis://...: shared by nodes
    trusted_proxies: tuple = ()  # networks whose X-Forwarded-For is believed (auth.forwarded)
    extra: dict = field(default_factory=dict)
    #: The data dir the config file itself names ("": none), whatever the command line says.
    named_data_dir: str = ""

    @property
    def files_dir(self) -> str:
        return os.path.join(self.data_dir, "files")

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.data_dir, "tmp")

    @property
    def run_dir(self) -> str:
        """Lock files shared by the worker processes of this node."""
        return os.path.join(self.data_dir, "run")

    @property
    def db_path(self) -> str:
        return shared_state.sqlite_path(self.database_url, self.data_dir)

    @property
    def default_key_root(self) -> str:
        return os.path.join(self.data_dir, "keys")


def check_owner(data_dir: str) -> None:
    """Refuse to work as root on a data directory that belongs to the service user.

    Key files, DB journals and lock files made by root would be unreadable to the server
    afterwards (Nextcloud's occ refuses for the same reason)."""
    if os.geteuid() != 0:
        return
    try:
        uid = os.stat(data_dir).st_uid
    except FileNotFoundError:
        return
    if uid == 0:
        return
    try:
        import pwd

        owner = pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        owner = str(uid)
    raise UserError(f"{data_dir} belongs to {owner}; run davserver as that user "
                    f"(runuser -u {owner} -- davserver ...) so the server can read what it writes")


def _url(doc: dict, section: str, env: str) -> str:
    """``[section] url``; the environment wins, so one config file serves every node and
    a secret (a Redis password in the URL) can stay out of it."""
    return os.environ.get(env) or str(doc.get(section, {}).get("url", ""))


def _prepare_threshold(section: dict) -> int | None:
    """``prepare_threshold = 0`` turns server-side prepared statements off (needed behind
    a transaction-pooling PgBouncer)."""
    n = int(section.get("prepare_threshold", 2))
    return n if n > 0 else None


def load(path: str | None = None, data_dir: str | None = None) -> Config:
    """Read the config file if it exists; command-line values win over the file."""
    path = path or default_config_path()
    doc: dict = {}
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"cannot read config {path}: {e}") from None
    server = doc.get("server", {})
    storage = doc.get("storage", {})
    enc = doc.get("encryption", {})
    auth = doc.get("auth", {})
    database = doc["database"] if "database" in doc else {}
    cfg = Config(
        path=path,
        data_dir=data_dir or os.environ.get("DAVSERVER_DATA_DIR") or storage.get("data_dir")
        or default_data_dir(),
        host=server.get("host", "127.0.0.1"),
        port=int(server.get("port", 8080)),
        certfile=server.get("certfile", ""),
        keyfile=server.get("keyfile", ""),
        workers=int(server.get("workers", 0)),
        threads=int(server.get("threads", 16)),
        fast_files=bool(server.get("fast_files", True)),
        socket_timeout=float(server.get("socket_timeout", 300)),
        block_size=int(server.get("block_size", 256 * 1024)),
        secret_file=enc.get("secret_file", ""),
        key_storage_root=enc.get("key_storage_root", ""),
        fsync=bool(storage.get("fsync", True)),
        storage_backend=str(storage.get("backend", "local")),
        storage_options=dict(storage.get(str(storage.get("backend", "local")), {})),
        throttle_max_failures=int(auth.get("throttle_max_failures", 5)),
        throttle_window_seconds=float(auth.get("throttle_window_seconds", 300)),
        throttle_max_failures_per_address=(
            int(auth["throttle_max_failures_per_address"])
            if "throttle_max_failures_per_address" in auth else None),
        auth_cache_seconds=float(auth.get("cache_seconds", 300)),
        key_cache_seconds=float(auth.get("key_cache_seconds", 3600)),
        hpke_suite=enc.get("hpke_suite", "x25519"),
        kdf_time_cost=int(enc.get("kdf_time_cost", 3)),
        kdf_memory_kib=int(enc.get("kdf_memory_kib", 65536)),
        kdf_parallelism=int(enc.get("kdf_parallelism", 4)),
        ldap=dict(doc.get("ldap", {})),
        log_level=doc.get("logging", {}).get("level", "info"),
        database_url=_url(doc, "database", "DAVSERVER_DATABASE_URL"),
        database_pool_size=int(database.get("pool_size", 10)),
        database_prepare_threshold=_prepare_threshold(database),
        redis_url=_url(doc, "redis", "DAVSERVER_REDIS_URL"),
        extra={k: v for k, v in doc.items()
               if k not in ("server", "storage", "encryption", "auth", "logging", "ldap",
                            "database", "redis")},
    )
    shared_state.check_database_url(cfg.database_url)
    try:
        proxies = server.get("trusted_proxies", [])
        if isinstance(proxies, str):  # "10.0.0.1, 10.0.0.2" as well as a list
            proxies = proxies.replace(",", " ").split()
        cfg.trusted_proxies = forwarded.parse_trusted(proxies)
    except (ValueError, TypeError) as e:
        raise UserError(f"[server] trusted_proxies in {path}: {e}") from None
    cfg.data_dir = os.path.abspath(cfg.data_dir)
    if storage.get("data_dir"):
        cfg.named_data_dir = os.path.abspath(storage["data_dir"])
    if not cfg.secret_file:
        cfg.secret_file = default_secret_path(path)
    if foreign_config(cfg) and os.path.exists(cfg.db_path):
        log.warning("%s; using it for the instance in %s as told", foreign_config(cfg),
                    cfg.data_dir)
    return cfg


def foreign_config(cfg: Config) -> str | None:
    """Why the config file looks like another instance's (None: it does not).

    A config names its instance's data dir; one given on the command line or in
    ``DAVSERVER_DATA_DIR`` wins, so a second instance started that way would silently run
    on the first one's config and secret."""
    if cfg.named_data_dir and os.path.realpath(cfg.named_data_dir) \
            != os.path.realpath(cfg.data_dir):
        return (f"config {cfg.path} belongs to the instance in {cfg.named_data_dir}, "
                f"not {cfg.data_dir}")
    return None


TEMPLATE = """\
# davserver configuration. Every key is optional; the values shown are the defaults
# unless noted. Run-time state (encryption on/off, key mode, maintenance) is in the
# database and changed with `davserver encryption:*` / `maintenance:mode`.

[server]
host = "{host}"          # address to listen on
port = {port}                 # TCP port
certfile = ""               # PEM certificate: set both to serve HTTPS
keyfile = ""                # PEM private key
workers = 0                 # server processes sharing the port; 0 = one per CPU core
threads = 16                # threads per process (concurrent requests)
fast_files = true           # direct GET/HEAD/PUT path; false: WsgiDAV answers everything
socket_timeout = 300        # seconds a client may stay silent (large uploads on slow links)
block_size = 262144         # bytes per read/write step of a transfer
trusted_proxies = []        # reverse proxies (addresses or CIDR) whose X-Forwarded-For
                            # names the client, for login throttling per address

[storage]
data_dir = "{data_dir}"   # files/, keys/, davserver.db and tmp/ live here
fsync = true                # flush every committed upload to disk before answering
backend = "local"           # where file contents go: "local" (files/ above), "s3", "webdav";
                            # keys, index and secret always stay on this server
# [storage.s3]              # backend = "s3": AWS S3, MinIO, Ceph RGW, Garage
# endpoint = "https://minio.example.org:9000"   # leave out for AWS
# bucket = "davserver"
# prefix = ""               # keys below this prefix; "" = the whole bucket
# objects_by = "id"         # "id": objects urn:oid:<id>, names and folders in the index
#                           #   (renames are metadata-only, no names on the store);
#                           # "path": objects named by path (browsable with other tools)
# keep_replaced_seconds = 3600  # objects_by = "id": a replaced or deleted version stays
#                           #   this long, so downloads that began before finish; 0 = delete at once
# region = "us-east-1"
# access_key = ""           # or env DAVSERVER_S3_ACCESS_KEY (empty: boto3's own lookup)
# secret_key = ""           # or env DAVSERVER_S3_SECRET_KEY
# path_style = false        # true for MinIO/Ceph reached by a bare host name or IP
# verify = true             # TLS certificate check; or a CA bundle path
# part_size = 8388608       # multipart part size; smaller files go in one PUT
# parts_in_flight = 3       # parts uploading at once per upload (memory: +1 part each)
# retries = 5               # attempts per request (with backoff), then 503 to clients
# connect_timeout = 5
# read_timeout = 30
# [storage.webdav]          # backend = "webdav": another WebDAV server
# url = "https://nas.example.org/remote.php/dav/files/svc/davserver"
# user = "svc"
# password = ""             # or env DAVSERVER_WEBDAV_PASSWORD
# verify = true

[encryption]
secret_file = "{secret_file}"   # instance secret, 0600, keep it OUTSIDE the data dir
key_storage_root = ""       # default: <data_dir>/keys; "db:" keeps the keys in the metadata
                            # database (several nodes without a shared filesystem; the same
                            # JSON documents); move with encryption:change-key-storage-root
hpke_suite = "x25519"       # key wrapping: "x25519" or the post-quantum hybrid "mlkem768-x25519"
kdf_time_cost = 3           # Argon2id for user keys (user-key mode) and the recovery key;
kdf_memory_kib = 65536      # raising these re-seals a user's key at their next login
kdf_parallelism = 4

[auth]
throttle_max_failures = 5   # failed logins per user / per client address ...
throttle_window_seconds = 300   # ... within this window, then 429 until it passes
# throttle_max_failures_per_address = 5   # default: throttle_max_failures. The address is
#                             # the socket's (X-Forwarded-For only from [server]
#                             # trusted_proxies): behind a NAT many users share one
cache_seconds = 300         # a verified password is remembered (as a keyed hash) this long
key_cache_seconds = 3600    # user-key mode: an unlocked key stays in memory this long

# LDAP logins (leave out to use local users only). Users are created at first login.
# [ldap]
# uris = ["ldap://ldap.example.org"]
# start_tls = true
# ca_file = "/etc/ssl/certs/ca-certificates.crt"
# bind_dn = "cn=davserver,ou=services,dc=example,dc=org"
# bind_password_file = "/etc/davserver/ldap-password"   # or bind_password_env = "VAR"
# user_base = "ou=people,dc=example,dc=org"
# user_filter = "(objectClass=inetOrgPerson)"
# login_attribute = "uid"
# display_name_attribute = "cn"
# email_attribute = "mail"
# quota_attribute = "davQuota"
# group_base = "ou=groups,dc=example,dc=org"
# group_filter = "(objectClass=groupOfNames)"
# timeout_seconds = 5
# cache_seconds = 60          # directory lookups (not passwords) are cached this long
# auth_cache_seconds = 0      # trust an accepted password this long without a new bind;
#                             # 0: a password changed in the directory stops working at once

[nextcloud]
upload_max_age_hours = 24   # chunked uploads (Nextcloud clients) nobody added to for this
                            # long are removed, chunks and all, when the next one starts

# Several nodes behind a load balancer (docs/DEPLOY.md). Environment variables
# DAVSERVER_DATABASE_URL / DAVSERVER_REDIS_URL win over these keys.
# [database]
# url = ""                  # "" = <data_dir>/davserver.db; or a SQLite file path; or
#                           # "postgresql://davserver:PASSWORD@db.example.org/davserver"
#                           # (pip install 'davserver[pg]'; docs/DEPLOY.md)
# pool_size = 10            # PostgreSQL: connections per server process, at most
# prepare_threshold = 2     # PostgreSQL: uses of a statement before it is prepared on
#                           # the server; 0 = never (behind a transaction-mode PgBouncer)
# [redis]
# url = "redis://127.0.0.1:6379/0"   # WebDAV locks, login throttling and job locks
#                           # shared by all nodes; leave out on a single node

[logging]
level = "info"              # debug, info, warning, error; keys/passwords/contents never logged
"""


def write_default(cfg: Config) -> None:
    p = Path(cfg.path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.format(host=cfg.host, port=cfg.port, data_dir=cfg.data_dir,
                           secret_file=cfg.secret_file)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
