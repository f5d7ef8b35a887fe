"""Small files that survive a power loss once written: key files, key pairs, settings.

A file is durable when its bytes are flushed (fsync of the file) and so is the name that
leads to it (fsync of its folder, and of every folder created on the way). Readers must see
the old or the new content, never a mix, so a file that may already exist is replaced
through a temporary name; a file written once under a fresh name (a new file ID) needs no
second name, because nothing refers to it until it is complete.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid

#: Prefix of the temporary names; a crash may leave such files behind (see KeyStore.cleanup).
TMP_PREFIX = ".tmp-"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str, *, fsync: bool) -> None:
    """``os.makedirs`` whose new folders are recorded in their parents when ``fsync``."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    make_dirs(parent, fsync=fsync)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    if fsync:
        fsync_dir(parent)


def _open_new(path: str, fsync: bool, mode: int) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileNotFoundError:
        make_dirs(os.path.dirname(path), fsync=fsync)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)


def _create(path: str, data: bytes, fsync: bool, mode: int) -> None:
    """Write ``data`` to a file that must not exist yet; on failure remove it again."""
    fd = _open_new(path, fsync, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def write_atomic(path: str, data: bytes, *, fsync: bool = True, mode: int = 0o600) -> None:
    """Write or replace a small file so that readers see the old or the new content."""
    tmp = os.path.join(os.path.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}")
    _create(tmp, data, fsync, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(os.path.dirname(path))


def write_new(path: str, data: bytes, *, fsync: bool = True, mode: int = 0o600) -> None:
    """Create a file under a name never used before, in place: one rename fewer than
    :func:`write_atomic`. Fails with ``FileExistsError`` if the name is taken. A crash
    mid-write leaves a short file under that name; callers make sure nothing points at the
    name until this returns (the key of a new file ID, before the file is renamed in)."""
    _create(path, data, fsync, mode)
    if fsync:
        fsync_dir(os.path.dirname(path))


def _libc_syncfs():
    """``syncfs(2)`` (Linux), or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _libc_syncfs()


def append_many(items: list[tuple[str, bytes]], *, fsync: bool = True) -> list[str]:
    """Append ``data`` to each existing file ``path``; returns the paths that did not exist.

    Appending changes no name, so no folder needs an fsync, and a crash mid-write can only
    leave a short tail after the old content, which stays intact (readers of such files
    must ignore a torn tail). With ``fsync`` the whole batch is made durable at once: one
    ``syncfs`` of the file system where the C library has it (it also flushes other dirty
    data there, which the upload paths fsync soon anyway), else one fsync per file."""
    missing: list[str] = []
    kept: list[int] = []  # descriptors still to fsync one by one (no syncfs)
    last: str | None = None
    try:
        for path, data in items:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                missing.append(path)
                continue
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                os.close(fd)
                raise
            last = path
            if fsync and _SYNCFS is None:
                kept.append(fd)
            else:
                os.close(fd)
        if fsync and last is not None:
            if _SYNCFS is None:
                for fd in kept:
                    os.fsync(fd)
            else:
                _syncfs(os.path.dirname(last))
    finally:
        for fd in kept:
            os.close(fd)
    return missing


def sync_filesystems(paths: list[str]) -> None:
    """Make everything written so far on the file systems holding ``paths`` durable:
    one ``syncfs`` per file system (several paths on one count once), new names
    included, so a batch of files needs no fsync of each file and folder. Where the C
    library has no syncfs, ``sync()`` (all file systems) does the same, more slowly."""
    if _SYNCFS is None:
        os.sync()
        return
    seen: dict[int, str] = {}
    for path in paths:
        seen.setdefault(os.stat(path).st_dev, path)
    for path in seen.values():
        _syncfs(path)


def _syncfs(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
