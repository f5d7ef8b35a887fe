"""S3-compatible object storage backend (AWS S3, MinIO, Ceph RGW, Garage, moto).

How the storage interface maps onto a flat key space:

* A blob ``a/b/f`` is the object ``<prefix>a/b/f``.
* A folder is a key prefix. An empty folder would not exist on S3, so :meth:`make_dir`
  writes a zero-byte marker object ``<prefix>a/b/`` (the convention of the S3 console,
  rclone and s3fs, so other tools show the folder too). A folder also exists when objects
  lie below it without a marker (written by another tool); removing its last file then
  makes it vanish, as those tools expect.
* Atomic visibility comes from S3 itself: an object appears only when its single PUT or
  its multipart upload completes, so a crash mid-upload leaves no partial object, only an
  unfinished multipart upload that :meth:`S3Storage.cleanup` aborts.
* A rename is a server-side copy plus a delete (multipart copy above 5 GiB). A folder
  rename is one such step per object, not atomic: ``atomic_dir_rename = False`` tells the
  vault to move folders file by file.
* A reader pins the object's ETag from its first HEAD and sends it as ``If-Match`` on every
  ranged GET, so a blob replaced while it is being read fails instead of mixing versions.

Every call has connect/read timeouts and botocore's retry with backoff; once those are used
up the call raises :class:`StorageUnavailable` (HTTP 503 + Retry-After), never hangs a
worker and never looks like a server bug.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from davserver.errors import (
    Conflict,
    StorageChanged,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from davserver.storage.base import BlobReader, BlobWriter, Entry, Storage, checked_parts
from davserver.storage.readahead import Guarded, Window

log = logging.getLogger("davserver.storage.s3")

#: S3's limit for a single CopyObject; larger objects are copied part by part.
MAX_SINGLE_COPY = 5 << 30
#: S3's smallest part (all but the last) and the most parts of one upload.
MIN_PART = 5 << 20
MAX_PARTS = 10000


#: One boto3 session per process: it caches the parsed service model, which makes creating
#: a client cheap (a fresh session reads and parses it again, about a second).
_session = None
_session_lock = threading.Lock()


@dataclass
class S3Settings:
    bucket: str
    endpoint: str = ""          # empty: AWS for the region
    region: str = "us-east-1"
    prefix: str = ""            # keys live below this ("" = the whole bucket)
    access_key: str = ""        # empty: boto3's own lookup (env, instance profile)
    secret_key: str = ""
    path_style: bool = False    # MinIO/Ceph/moto on a bare host name need path-style URLs
    verify: bool | str = True   # False, or a CA bundle path
    part_size: int = 8 << 20    # multipart part; objects below it go in one PUT
    parts_in_flight: int = 3    # parts uploading at once per upload (memory: +1 part each)
    retries: int = 5            # attempts per call (botocore "standard" mode, backoff)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Completing a multipart upload or copy can take minutes on a large object (S3 keeps
    #: the connection alive meanwhile): those calls wait this long instead.
    commit_timeout: float = 600.0
    stale_upload_seconds: float = 24 * 3600.0  # cleanup() aborts older unfinished uploads

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket is required")
        if self.part_size < MIN_PART:
            raise ValueError(f"part_size must be at least {MIN_PART} bytes")
        p = "/".join(checked_parts(self.prefix))
        self.prefix = p + "/" if p else ""


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Translate botocore's exceptions into ours; the credentials never appear in them."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
    )

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload"):
            raise StorageNotFound(what) from None
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "RequestTimeout",
                                     "InternalError", "503"):
            raise StorageUnavailable(f"S3 {code} on {what}") from None
        if code in ("412", "PreconditionFailed"):
            raise StorageChanged(f"{what} was replaced while it was read") from None
        raise StorageError(f"S3 {code or status} on {what}") from None
    except (ConnectionError, HTTPClientError) as e:
        raise StorageUnavailable(f"S3 not reachable on {what}: {type(e).__name__}") from None
    except BotoCoreError as e:
        raise StorageError(f"S3 client on {what}: {type(e).__name__}") from None


class _S3Reader(BlobReader):
    def __init__(self, store: S3Storage, key: str) -> None:
        self._store = store
        self._key = store._full(key)
        with s3_errors(key):
            head = store.client.head_object(Bucket=store.s.bucket, Key=self._key)
        self.size = int(head["ContentLength"])
        self._etag = head["ETag"]
        self._window = Window(self.size, self._get, self._stream)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._window.read_at(offset, length)

    def _get(self, offset: int, length: int) -> bytes:
        s = self._store
        with s3_errors(self._key):
            r = s.client.get_object(Bucket=s.s.bucket, Key=self._key, IfMatch=self._etag,
                                    Range=f"bytes={offset}-{offset + length - 1}")
            return r["Body"].read()

    def _stream(self, offset: int) -> Guarded:
        s = self._store
        with s3_errors(self._key):
            r = s.client.get_object(Bucket=s.s.bucket, Key=self._key, IfMatch=self._etag,
                                    Range=f"bytes={offset}-")
        return Guarded(r["Body"], self._key)

    def close(self) -> None:
        self._window.drop()


class _S3Writer(BlobWriter):
    """Parts go out while the next ones are received (``parts_in_flight`` at once), so
    memory per upload is bounded by (parts_in_flight + 1) parts whatever the file size,
    and the client's upload overlaps the store's."""

    def __init__(self, store: S3Storage, key: str) -> None:
        self._store = store
        self._key = key
        self._full = store._full(key)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._inflight: list[Future] = []
        self._done = False

    def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("write after commit or abort")
        self._buf += data
        ps = self._store.s.part_size
        while len(self._buf) >= ps:
            with memoryview(self._buf) as mv:
                part = bytes(mv[:ps])  # the one copy a part costs
            del self._buf[:ps]
            self._send_part(part)

    def _send_part(self, data: bytes) -> None:
        s = self._store
        if self._upload_id is None:
            with s3_errors(self._key):
                r = s.client.create_multipart_upload(Bucket=s.s.bucket, Key=self._full)
            self._upload_id = r["UploadId"]
        while len(self._inflight) >= max(1, s.s.parts_in_flight):
            self._inflight.pop(0).result()
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._inflight.append(s.pool().submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> None:
        s = self._store
        with s3_errors(self._key):
            r = s.client.upload_part(Bucket=s.s.bucket, Key=self._full, PartNumber=number,
                                     UploadId=self._upload_id, Body=data)
        self._parts[number - 1]["ETag"] = r["ETag"]

    def _wait(self) -> None:
        pending, self._inflight = self._inflight, []
        for f in pending:
            f.result()

    def commit(self) -> None:
        if self._done:
            raise StorageError("upload already finished")
        s = self._store
        try:
            s._check_target(self._key)
            if self._upload_id is None:
                with s3_errors(self._key):
                    s.client.put_object(Bucket=s.s.bucket, Key=self._full, Body=bytes(self._buf))
            else:
                if self._buf:
                    self._send_part(bytes(self._buf))
                self._wait()
                with s3_errors(self._key):
                    s.slow_client.complete_multipart_upload(
                        Bucket=s.s.bucket, Key=self._full, UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts})
            self._done = True
            self._buf = bytearray()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf = bytearray()
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the upload is being thrown away anyway
            pass
        if self._upload_id is not None:
            s = self._store
            try:
                with s3_errors(self._key):
                    s.client.abort_multipart_upload(Bucket=s.s.bucket, Key=self._full,
                                                    UploadId=self._upload_id)
            except StorageError as e:
                # cleanup() at the next start aborts it; until then it is invisible.
                log.warning("could not abort the upload of %s: %s", self._key, e)


class S3Storage(Storage):
    atomic_dir_rename = False
    local_durability = False
    kind = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.s = settings
        self._client = None
        self._slow_client = None
        self._pid = 0
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # --- plumbing ----------------------------------------------------------------------

    @property
    def client(self):
        """One client per process: a forked worker must not share its parent's sockets."""
        self._per_process()
        return self._client

    @property
    def slow_client(self):
        """For calls that may take minutes (complete, copy): a longer read timeout."""
        self._per_process()
        return self._slow_client

    def _per_process(self) -> None:
        pid = os.getpid()
        if self._client is None or self._pid != pid:
            with self._lock:
                if self._client is None or self._pid != pid:
                    self._client = self._make_client(self.s.read_timeout)
                    self._slow_client = self._make_client(
                        max(self.s.read_timeout, self.s.commit_timeout))
                    self._pool = None
                    self._pid = pid

    def _make_client(self, read_timeout: float):
        import boto3
        from botocore.config import Config as BotoConfig

        s = self.s
        cfg = BotoConfig(
            region_name=s.region or "us-east-1",
            signature_version="s3v4",
            retries={"max_attempts": max(1, s.retries), "mode": "standard"},
            connect_timeout=s.connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
            s3={"addressing_style": "path" if s.path_style else "auto"},
            # Older MinIO/Ceph reject the CRC trailers newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kwargs = {}
        if s.access_key or s.secret_key:
            kwargs = {"aws_access_key_id": s.access_key,
                      "aws_secret_access_key": s.secret_key}
        global _session
        with _session_lock:
            if _session is None:
                _session = boto3.session.Session()
            return _session.client("s3", endpoint_url=s.endpoint or None, verify=s.verify,
                                   config=cfg, **kwargs)

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-part")
            return self._pool

    def _full(self, key: str) -> str:
        try:
            parts = checked_parts(key)
        except ValueError as e:
            raise StorageError(str(e)) from None
        return self.s.prefix + "/".join(parts)

    def _children_prefix(self, key: str) -> str:
        parts = checked_parts(key) if key else []
        return self.s.prefix + "".join(p + "/" for p in parts)

    def _head(self, full: str) -> dict | None:
        try:
            with s3_errors(full):
                return self.client.head_object(Bucket=self.s.bucket, Key=full)
        except StorageNotFound:
            return None

    def _first_below(self, prefix: str, n: int = 1) -> list[dict]:
        with s3_errors(prefix):
            r = self.client.list_objects_v2(Bucket=self.s.bucket, Prefix=prefix, MaxKeys=n)
        return r.get("Contents", [])

    def _is_dir(self, key: str) -> bool:
        if not checked_parts(key):
            return True
        return bool(self._first_below(self._children_prefix(key)))

    def _check_target(self, key: str) -> None:
        """A blob may only land in an existing folder and never on a folder."""
        parts = checked_parts(key)
        if not parts:
            raise Conflict("cannot write the root folder")
        if len(parts) > 1 and not self._is_dir("/".join(parts[:-1])):
            raise Conflict("parent folder does not exist")
        if self._is_dir(key):
            raise Conflict(f"{key} is a folder")

    def _iter_below(self, prefix: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        with s3_errors(prefix):
            for page in paginator.paginate(Bucket=self.s.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    # --- the interface -----------------------------------------------------------------

    def stat(self, key: str) -> Entry | None:
        parts = checked_parts(key) if key else []
        if not parts:
            return Entry("", True, 0, 0.0)
        name = parts[-1]
        head = self._head(self._full(key))
        if head is not None:
            return Entry(name, False, int(head["ContentLength"]),
                         head["LastModified"].timestamp())
        first = self._first_below(self._children_prefix(key))
        if not first:
            return None
        marker = first[0]["Key"] == self._children_prefix(key)
        return Entry(name, True, 0, first[0]["LastModified"].timestamp() if marker else 0.0)

    def list_dir(self, key: str) -> list[Entry]:
        prefix = self._children_prefix(key)
        out: list[Entry] = []
        seen_any = False
        paginator = self.client.get_paginator("list_objects_v2")
        with s3_errors(key or "/"):
            for page in paginator.paginate(Bucket=self.s.bucket, Prefix=prefix, Delimiter="/"):
                for obj in page.get("Contents", []):
                    seen_any = True
                    name = obj["Key"][len(prefix):]
                    if name and _valid_name(name):
                        out.append(Entry(name, False, int(obj["Size"]),
                                         obj["LastModified"].timestamp()))
                for cp in page.get("CommonPrefixes", []):
                    seen_any = True
                    name = cp["Prefix"][len(prefix):-1]
                    if name and _valid_name(name):
                        out.append(Entry(name, True, 0, 0.0))
        if not seen_any and checked_parts(key):
            raise StorageNotFound(key)
        return out

    def open_reader(self, key: str) -> BlobReader:
        if not checked_parts(key):
            raise StorageNotFound(key)
        return _S3Reader(self, key)

    def writer(self, key: str) -> BlobWriter:
        self._full(key)  # validates the key now, not at commit
        return _S3Writer(self, key)

    def delete(self, key: str) -> None:
        full = self._full(key)
        if not checked_parts(key) or self._head(full) is None:
            raise StorageNotFound(key)
        with s3_errors(key):
            self.client.delete_object(Bucket=self.s.bucket, Key=full)

    def make_dir(self, key: str) -> None:
        parts = checked_parts(key)
        if not parts:
            raise Conflict("the root folder exists")
        if self.stat(key) is not None:
            raise Conflict(f"{key} exists")
        if len(parts) > 1 and not self._is_dir("/".join(parts[:-1])):
            raise Conflict("parent folder does not exist")
        with s3_errors(key):
            self.client.put_object(Bucket=self.s.bucket, Key=self._children_prefix(key),
                                   Body=b"")

    def remove_dir(self, key: str) -> None:
        prefix = self._children_prefix(key)
        if not checked_parts(key):
            raise Conflict("cannot remove the root folder")
        below = self._first_below(prefix, 2)
        if not below:
            raise StorageNotFound(key)
        if any(o["Key"] != prefix for o in below):
            raise Conflict(f"{key} is not empty")
        with s3_errors(key):
            self.client.delete_object(Bucket=self.s.bucket, Key=prefix)

    def rename(self, src: str, dst: str) -> None:
        if not checked_parts(src) or not checked_parts(dst):
            raise Conflict("cannot move the root folder")
        if self.stat(dst) is not None:
            raise Conflict(f"{dst} exists")
        e = self.stat(src)
        if e is None:
            raise StorageNotFound(src)
        dparts = checked_parts(dst)
        if len(dparts) > 1 and not self._is_dir("/".join(dparts[:-1])):
            raise Conflict("parent folder does not exist")
        if not e.is_dir:
            self._copy(self._full(src), self._full(dst), e.size)
            with s3_errors(src):
                self.client.delete_object(Bucket=self.s.bucket, Key=self._full(src))
            return
        sp, dp = self._children_prefix(src), self._children_prefix(dst)
        if (dp + "/").startswith(sp):
            raise Conflict("cannot move a folder into itself")
        objs = list(self._iter_below(sp))
        for o in objs:
            self._copy(o["Key"], dp + o["Key"][len(sp):], int(o["Size"]))
        self._delete_many([o["Key"] for o in objs])

    def _delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            with s3_errors(keys[i]):
                self.client.delete_objects(Bucket=self.s.bucket,
                                           Delete={"Objects": batch, "Quiet": True})

    def _copy(self, src_full: str, dst_full: str, size: int) -> None:
        """Server-side copy: the bytes never pass through this machine."""
        b = self.s.bucket
        source = {"Bucket": b, "Key": src_full}
        if size <= self.copy_threshold:
            with s3_errors(src_full):
                self.slow_client.copy_object(Bucket=b, Key=dst_full, CopySource=source)
            return
        part = max(self.copy_part_size, -(-size // MAX_PARTS))
        with s3_errors(dst_full):
            upload_id = self.client.create_multipart_upload(Bucket=b, Key=dst_full)["UploadId"]
        try:
            parts = []
            for n, start in enumerate(range(0, size, part), 1):
                end = min(start + part, size) - 1
                with s3_errors(src_full):
                    r = self.slow_client.upload_part_copy(
                        Bucket=b, Key=dst_full, UploadId=upload_id, PartNumber=n,
                        CopySource=source, CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]})
            with s3_errors(dst_full):
                self.slow_client.complete_multipart_upload(Bucket=b, Key=dst_full,
                                                           UploadId=upload_id,
                                                           MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=b, Key=dst_full, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - cleanup() catches what is left
                pass
            raise

    #: Objects larger than this are copied in parts (S3 refuses a single copy above 5 GiB).
    copy_threshold = MAX_SINGLE_COPY
    copy_part_size = 512 << 20

    def cleanup(self) -> int:
        """Abort multipart uploads older than ``stale_upload_seconds``: what a crash left.
        Younger ones may belong to another node's upload in progress."""
        n = 0
        now = time.time()
        paginator = self.client.get_paginator("list_multipart_uploads")
        with s3_errors("multipart uploads"):
            for page in paginator.paginate(Bucket=self.s.bucket, Prefix=self.s.prefix):
                for u in page.get("Uploads", []):
                    if now - u["Initiated"].timestamp() < self.s.stale_upload_seconds:
                        continue
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.s.bucket, Key=u["Key"], UploadId=u["UploadId"])
                        n += 1
                    except Exception as e:  # noqa: BLE001 - one stuck upload must not stop start-up
                        log.warning("could not abort a stale upload of %s: %s",
                                    u["Key"], type(e).__name__)
        return n


def _valid_name(name: str) -> bool:
    return name not in (".", "..") and "\x00" not in name
