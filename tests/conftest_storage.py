"""Session-wide remote stores for the storage tests: one moto S3 server and one WsgiDAV
server per test session (each test gets its own bucket or remote folder), plus the
``storage`` fixture that runs a test once per backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.s3_server import MotoServer
from tests.webdav_server import PASSWORD, USER, RemoteDav


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    srv = MotoServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def remote_dav(tmp_path_factory) -> Iterator[RemoteDav]:
    srv = RemoteDav(tmp_path_factory.mktemp("remote-dav")).start()
    try:
        yield srv
    finally:
        srv.stop()


def make_storage(kind: str, tmp_path, request):
    """A fresh, empty store of ``kind`` ("local", "s3", "s3-by-id", "webdav")."""
    if kind == "local":
        from davserver.storage.local import LocalStorage

        return LocalStorage(tmp_path / "root", tmp_path / "tmp", fsync=False)
    if kind in ("s3", "s3-by-id"):
        from davserver.storage.s3 import S3Storage

        moto = request.getfixturevalue("moto")
        s3 = S3Storage(moto.settings(moto.new_bucket(), prefix="pre/fix",
                                     stale_upload_seconds=0, part_size=5 << 20))
        if kind == "s3":
            return s3
        from davserver.meta.db import MetaDB
        from davserver.storage.by_id import IdNamedStorage

        return IdNamedStorage(s3, MetaDB(str(tmp_path / "db" / "davserver.db")),
                              stale_seconds=0)
    from davserver.storage.webdav import WebDavSettings, WebDavStorage

    dav = request.getfixturevalue("remote_dav")
    sub = f"t-{uuid.uuid4().hex[:12]}"
    (dav.root / sub).mkdir()
    return WebDavStorage(WebDavSettings(f"{dav.url}/{sub}", USER, PASSWORD, retries=1,
                                        connect_timeout=2, read_timeout=10))


@pytest.fixture(params=["local", "s3", "s3-by-id", "webdav"])
def storage(request, tmp_path):
    return make_storage(request.param, tmp_path, request)
