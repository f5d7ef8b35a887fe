"""What only the remote backends do: S3 multipart copy, folder markers and aborted uploads,
reads pinned to one version, stores that are down, and how the config builds them."""

from __future__ import annotations

import os
import socket

import pytest

from davserver import config as config_mod
from davserver.errors import StorageUnavailable, UserError
from davserver.meta.db import MetaDB
from davserver.storage.by_id import IdNamedStorage
from davserver.storage.s3 import S3Storage
from davserver.storage.webdav import WebDavSettings, WebDavStorage
from davserver.vault.storage_factory import make_storage
from tests.conftest_storage import make_storage as fresh_storage


@pytest.fixture
def s3(request, tmp_path) -> S3Storage:
    return fresh_storage("s3", tmp_path, request)


def raw_keys(moto, st: S3Storage) -> list[str]:
    r = moto.client().list_objects_v2(Bucket=st.s.bucket)
    return sorted(o["Key"] for o in r.get("Contents", []))


def test_rename_above_copy_limit_copies_in_parts(s3, moto):
    s3.copy_threshold = 6 << 20  # stands in for S3's 5 GiB single-copy limit
    s3.copy_part_size = 5 << 20
    data = os.urandom(13 << 20)
    s3.make_dir("d")
    w = s3.writer("d/big")
    w.write(data)
    w.commit()
    s3.rename("d/big", "d/moved")
    head = moto.client().head_object(Bucket=s3.s.bucket, Key="pre/fix/d/moved")
    assert head["ETag"].strip('"').endswith("-3")  # three copied parts
    with s3.open_reader("d/moved") as r:
        assert r.read_at(0, r.size) == data
    assert s3.stat("d/big") is None


def test_empty_folder_is_a_marker_object(s3, moto):
    s3.make_dir("empty")
    assert raw_keys(moto, s3) == ["pre/fix/empty/"]
    # A folder another tool made without a marker still exists while it holds objects.
    moto.client().put_object(Bucket=s3.s.bucket, Key="pre/fix/other/inner/f", Body=b"x")
    assert s3.stat("other").is_dir and s3.stat("other/inner").is_dir
    assert {e.name for e in s3.list_dir("")} == {"empty", "other"}


def test_abort_removes_the_multipart_upload(s3, moto):
    s3.make_dir("a")
    w = s3.writer("a/f")
    w.write(os.urandom(11 << 20))  # two parts sent
    w.abort()
    ups = moto.client().list_multipart_uploads(Bucket=s3.s.bucket).get("Uploads", [])
    assert ups == []
    assert s3.stat("a/f") is None


def test_young_multipart_uploads_survive_cleanup(s3, moto):
    s3.s.stale_upload_seconds = 10 ** 10  # every upload counts as in progress
    s3.make_dir("y")
    w = s3.writer("y/f")
    w.write(os.urandom(6 << 20))
    w._wait()
    assert s3.cleanup() == 0
    assert moto.client().list_multipart_uploads(Bucket=s3.s.bucket).get("Uploads")
    w.abort()


@pytest.mark.parametrize("kind", ["s3", "webdav"])
def test_object_replaced_during_read_fails(kind, request, tmp_path):
    st = fresh_storage(kind, tmp_path, request)
    st.make_dir("r")
    first, second = os.urandom(1 << 20), os.urandom(1 << 20)
    for data in (first,):
        w = st.writer("r/f")
        w.write(data)
        w.commit()
    with st.open_reader("r/f") as r:
        assert r.read_at(0, 64) == first[:64]
        w = st.writer("r/f")
        w.write(second)
        w.commit()
        with pytest.raises(StorageUnavailable):
            r.read_at(512 << 10, 64)  # outside the first window: a new GET


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webdav_down_is_unavailable():
    st = WebDavStorage(WebDavSettings(f"http://127.0.0.1:{_closed_port()}/dav", "u", "p",
                                      retries=1, connect_timeout=1, read_timeout=1))
    with pytest.raises(StorageUnavailable):
        st.stat("x")
    with pytest.raises(StorageUnavailable):
        st.writer("x")


def test_webdav_half_upload_never_visible(request, tmp_path):
    st = fresh_storage("webdav", tmp_path, request)
    st.make_dir("h")
    w = st.writer("h/f")
    w.write(os.urandom(300_000))
    w.abort()
    assert st.stat("h/f") is None
    assert st.list_dir("") == [st.stat("h")]  # the temp folder is not listed
    assert st.cleanup() == 0


def _cfg(tmp_path, text: str):
    p = tmp_path / "davserver.toml"
    p.write_text(text)
    return config_mod.load(str(p), str(tmp_path / "data"))


def test_config_builds_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("DAVSERVER_S3_ACCESS_KEY", "from-env")
    monkeypatch.setenv("DAVSERVER_S3_SECRET_KEY", "secret-from-env")
    st = make_storage(_cfg(tmp_path, '[storage]\nbackend = "s3"\n[storage.s3]\n'
                                     'bucket = "b"\nprefix = "x/y/"\nsecret_key = "file"\n'
                                     'path_style = true\nobjects_by = "path"\n'))
    assert isinstance(st, S3Storage)
    assert (st.s.access_key, st.s.secret_key, st.s.prefix) == ("from-env", "secret-from-env",
                                                                "x/y/")
    assert not st.atomic_dir_rename
    db = MetaDB(str(tmp_path / "db" / "davserver.db"))
    st = make_storage(_cfg(tmp_path, '[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\n'),
                      db)
    assert isinstance(st, IdNamedStorage) and isinstance(st.inner, S3Storage)
    assert st.keep_replaced_seconds == 3600
    st = make_storage(_cfg(tmp_path, '[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\n'
                                     'keep_replaced_seconds = 0\n'), db)
    assert st.keep_replaced_seconds == 0
    assert st.atomic_dir_rename and st.kind == "s3-by-id"
    st = make_storage(_cfg(tmp_path, '[storage]\nbackend = "webdav"\n[storage.webdav]\n'
                                     'url = "https://nas.example/dav/"\nuser = "u"\n'))
    assert isinstance(st, WebDavStorage) and st.s.url == "https://nas.example/dav"
    assert make_storage(_cfg(tmp_path, "")).kind == "local"


@pytest.mark.parametrize("text, says", [
    ('[storage]\nbackend = "ftp"\n', "use one of local, s3, webdav"),
    ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nbuckett = "c"\n', "buckett"),
    ('[storage]\nbackend = "s3"\n[storage.s3]\nendpoint = "http://x"\n', "bucket"),
    ('[storage]\nbackend = "webdav"\n[storage.webdav]\nurl = "nas/dav"\n', "http"),
    ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nobjects_by = "name"\n', "objects_by"),
    ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nkeep_replaced_seconds = "1h"\n',
     "keep_replaced_seconds"),
    ('[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "b"\nkeep_replaced_seconds = -1\n',
     "keep_replaced_seconds"),
])
def test_config_errors_are_user_errors(tmp_path, text, says):
    with pytest.raises(UserError) as e:
        make_storage(_cfg(tmp_path, text))
    assert says in str(e.value)
