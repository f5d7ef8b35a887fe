"""The storage interface: opaque blobs and folders addressed by '/'-separated keys.

Storage sees ciphertext (or plaintext placed there by hand) and nothing else: it imports
nothing from crypto or DAV. Every backend passes the same conformance suite
(tests/test_storage_conformance.py). Writes are atomic: a blob is either the old one or the
complete new one, never a mix, whatever happens to the process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Container, Iterator
from typing import NamedTuple


class Entry(NamedTuple):
    """One member of a storage listing (a NamedTuple: immutable, quick to make)."""

    name: str
    is_dir: bool
    size: int
    mtime: float


class BlobReader(ABC):
    """An open blob; ``read_at`` is positional so one reader serves any access pattern."""

    size: int

    @abstractmethod
    def read_at(self, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BlobWriter(ABC):
    """A pending blob: invisible until :meth:`commit`, gone after :meth:`abort`."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None: ...


class Storage(ABC):
    """A backend. The capability attributes name what a backend cannot promise, so the
    vault handles each case once instead of asking which backend it talks to."""

    #: Is :meth:`rename` of a folder one atomic step? False on object stores (S3), where a
    #: folder is a key prefix and moving it copies every object: the vault then moves the
    #: folder's files one by one, keeping the index in step after each.
    atomic_dir_rename: bool = True
    #: Has commit_many (one flush for a batch of blobs); only local files so far.
    batch_commit: bool = False

    #: Does a committed blob survive a power loss of this machine (fsync)? Remote stores
    #: acknowledge a write once they hold it; their durability is theirs.
    local_durability: bool = True

    #: A short name for logs and ``davserver status``: "local", "s3", "webdav".
    kind: str = "local"

    @abstractmethod
    def stat(self, key: str) -> Entry | None: ...

    @abstractmethod
    def list_dir(self, key: str) -> list[Entry]: ...

    def list_dir_known(self, key: str, known: Container[str]) -> list[Entry]:
        """:meth:`list_dir`, except that files named in ``known`` (the index already has
        their size and time) may come with size 0 and mtime 0.0. A local folder of 10,000
        files spends a fifth of a PROPFIND on stat calls whose answers go unused;
        backends whose listing carries them anyway keep this default."""
        return self.list_dir(key)

    @abstractmethod
    def open_reader(self, key: str) -> BlobReader: ...

    @abstractmethod
    def writer(self, key: str) -> BlobWriter: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def make_dir(self, key: str) -> None: ...

    @abstractmethod
    def remove_dir(self, key: str) -> None:
        """Remove an empty folder."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Move a blob or a whole folder; ``dst`` must not exist."""

    def walk(self, key: str) -> Iterator[tuple[str, Entry]]:
        """Yield (key, entry) for every blob and folder below ``key``, parents first."""
        for e in self.list_dir(key):
            child = f"{key}/{e.name}" if key else e.name
            yield child, e
            if e.is_dir:
                yield from self.walk(child)

    def cleanup(self) -> int:
        """Remove leftovers of interrupted writes; return how many were removed."""
        return 0


def split_key(key: str) -> list[str]:
    """Validate a key and return its parts: no empty, '.', '..' or NUL components."""
    parts = [p for p in key.split("/") if p != ""]
    for p in parts:
        if p in (".", "..") or "\x00" in p:
            raise ValueError(f"invalid storage key component {p!r}")
    return parts


def checked_parts(key: str) -> list[str]:
    """:func:`split_key` for backends: a bad key is the caller's StorageError."""
    from davserver.errors import StorageError

    try:
        return split_key(key)
    except ValueError as e:
        raise StorageError(str(e)) from None
