"""Build the configured storage backend: the one place that reads ``[storage]``'s
``backend`` and the backend's table, so the instance, the CLI and the tests agree.

Secrets may come from the environment instead of the config file (systemd
``EnvironmentFile``, container secrets): ``DAVSERVER_S3_ACCESS_KEY``,
``DAVSERVER_S3_SECRET_KEY``, ``DAVSERVER_WEBDAV_PASSWORD``. The environment wins.
"""

from __future__ import annotations

import dataclasses
import os

from davserver.config import Config
from davserver.errors import DavServerError, UserError
from davserver.storage.base import Storage

BACKENDS = ("local", "s3", "webdav")

_ENV = {
    "s3": {"access_key": "DAVSERVER_S3_ACCESS_KEY", "secret_key": "DAVSERVER_S3_SECRET_KEY"},
    "webdav": {"password": "DAVSERVER_WEBDAV_PASSWORD"},
}


def _options(cfg: Config, kind: str) -> dict:
    opts = dict(cfg.storage_options)
    for key, var in _ENV.get(kind, {}).items():
        if os.environ.get(var):
            opts[key] = os.environ[var]
    return opts


def _settings(cls, opts: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise UserError(f"unknown key(s) in {where}: {', '.join(unknown)} "
                        f"(known: {', '.join(sorted(known))})")
    try:
        return cls(**opts)
    except (TypeError, ValueError, DavServerError) as e:
        raise UserError(f"{where}: {e}") from None


def make_storage(cfg: Config, db=None) -> Storage:
    """``db`` (the instance's MetaDB) holds the names when objects are named by ID."""
    kind = cfg.storage_backend
    where = f"[storage.{kind}] in {cfg.path}"
    if kind == "local":
        from davserver.storage.local import LocalStorage

        return LocalStorage(cfg.files_dir, cfg.tmp_dir, fsync=cfg.fsync)
    if kind == "s3":
        from davserver.storage.s3 import S3Settings, S3Storage

        opts = _options(cfg, kind)
        naming = opts.pop("objects_by", "id")
        keep = opts.pop("keep_replaced_seconds", 3600.0)
        if isinstance(keep, bool) or not isinstance(keep, int | float) or keep < 0:
            raise UserError(f"{where}: keep_replaced_seconds = {keep!r}: use a number of "
                            "seconds >= 0")
        store = S3Storage(_settings(S3Settings, opts, where))
        if naming == "path":
            return store
        if naming != "id":
            raise UserError(f"{where}: objects_by = {naming!r}: use \"id\" or \"path\"")
        if db is None:
            raise UserError(f"{where}: objects named by ID need the instance database")
        from davserver.storage.by_id import IdNamedStorage

        return IdNamedStorage(store, db, stale_seconds=store.s.stale_upload_seconds,
                              keep_replaced_seconds=float(keep))
    if kind == "webdav":
        from davserver.storage.webdav import WebDavSettings, WebDavStorage

        return WebDavStorage(_settings(WebDavSettings, _options(cfg, kind), where))
    raise UserError(f"[storage] backend = {kind!r} in {cfg.path}: use one of "
                    f"{', '.join(BACKENDS)}")
