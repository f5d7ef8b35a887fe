"""A chunked upload written as the final file's ciphertext while its chunks arrive.

Assembling a chunked upload by decrypting every chunk and encrypting the file again costs
a second pass over the file: twice the crypto and a full extra read and write. Here the
upload gets its file ID and data key when it starts (MKCOL), and each chunk that arrives
in order (the chunk numbered above every chunk present, as Nextcloud clients send them)
is encrypted straight into ``<folder>/.data`` at its final offset, under the chunk
indexes it will have in the file. The MOVE then seals what no single chunk could: the
stream-format chunks that straddle two upload chunks, and the last one (final flag),
writes the header, flushes, and commits ``.data`` through the vault's usual protocol
(pending row, key, atomic rename, index): the destination is the old file or the new one.

What is kept per upload folder (``.uploads/USER/<id>``), all encrypted at rest:

* ``.data``: the final file's ciphertext, header first (written at MKCOL);
* a row in ``chunk_stage_parts`` per placed chunk: where it lies, and its edge bytes
  (those before its first and after its last whole stream chunk) sealed under a key
  derived from the upload's data key;
* ``<n>``: a chunk stored whole, as a vault file (arrived out of order, sent again, or
  after a MOVE was tried). Then the upload is assembled the streaming way: every chunk
  decrypted in order into a new write (also when the destination is in a storage mount).

Durability without a flush per chunk: a placed chunk's bytes are written back in the
background (every 32 MiB, as a PUT's) and flushed once, by the MOVE. A client resuming
an upload lists it (PROPFIND) and skips the chunks listed, so a listed chunk must
survive a power loss: the listing flushes ``.data`` first. A row made since then names
the boot (kernel boot ID) whose page cache held its bytes; after a reboot such a chunk
may be lost, so it is not listed and is sent again.

The data key is kept in the key store under an ID derived from the file ID
(:func:`stage_key_id`), wrapped for the uploading user like any file's, so the commit's
own key file (under the file ID, removed if a crash rolls the commit back) never holds
the only copy.

Nonces: the format's chunk nonce is its index and final flag under the version's key.
``sealed_upto`` records the highest index a chunk PUT may have sealed (bumped before it
writes), and a chunk is placed only above it; a MOVE sealing the edge chunks sets
``moved`` first, and chunks that come after that are stored whole. So no index is sealed
twice with different plaintext, whatever fails and is retried.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from davserver.crypto import header as hdr
from davserver.crypto import keywrap, primitives, stream
from davserver.crypto.segments import SegmentSealer
from davserver.durable import fsync_dir
from davserver.errors import Conflict, IntegrityError
from davserver.meta.interprocess import PathLocks
from davserver.storage.base import BlobWriter
from davserver.storage.local import EARLY_FLUSH_BYTES, LocalStorage, _flush_pool, start_writeback
from davserver.vault.files import Upload, Vault

DATA = ".data"
_EDGES_INFO = b"davserver/v1 upload edges"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


BOOT = _boot_id()


def _edges_aad(folder: str, name: str, start: int, size: int) -> bytes:
    return f"{folder}\0{int(name)}\0{start}\0{size}".encode()


def stage_key_id(file_id: bytes) -> bytes:
    """The key-store ID under which an upload keeps its data key until the MOVE."""
    return hashlib.sha256(b"davserver/v1 upload stage" + file_id).digest()[:16]


@dataclass(frozen=True)
class Part:
    """One chunk of an upload: placed in ``.data`` (``start`` set) or stored whole."""

    name: str
    size: int
    start: int | None = None
    head: int = 0
    edges: str = ""  # sealed, base64

    @property
    def number(self) -> int:
        return int(self.name)

    @property
    def placed(self) -> bool:
        return self.start is not None



class ChunkStage:
    """The staged uploads of one vault (its storage must be local)."""

    def __init__(self, vault: Vault, recipients, identities, *, run_dir: str) -> None:
        self.vault = vault
        self.db = vault.db
        self._recipients = recipients  # (user, path) -> recipients, as for any write
        self._identities = identities
        self._locks = PathLocks(os.path.join(run_dir, "uploads.lock"))

    def hold(self, folder: str):
        """One chunk PUT, listing or MOVE at a time per upload, across processes: where
        a chunk goes in the file depends on the chunks before it."""
        return self._locks.hold(folder)

    @staticmethod
    def usable(vault: Vault, encrypting: bool) -> bool:
        return encrypting and isinstance(vault.storage, LocalStorage)

    def _local(self, key: str) -> str:
        return self.vault.storage._path(key)

    # --- state -------------------------------------------------------------------------

    def create(self, folder: str, owner: str) -> None:
        """Give a new upload folder its file ID, data key and ``.data`` (header only)."""
        file_id, data_key = keywrap.new_file_id(), keywrap.new_data_key()
        self.vault.keys.wrap_new(stage_key_id(file_id), data_key,
                                 self._recipients(owner, folder))
        fd = os.open(self._local(f"{folder}/{DATA}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                     0o600)
        try:
            os.write(fd, SegmentSealer(data_key, file_id).header_bytes())
        finally:
            os.close(fd)
        with self.db.tx() as c:
            c.execute("DELETE FROM chunk_stage_parts WHERE folder = ?", (folder,))
            c.execute("INSERT INTO chunk_stages(folder, file_id, sealed_upto, moved)"
                      " VALUES (?, ?, -1, 0) ON CONFLICT(folder) DO UPDATE SET "
                      "file_id = excluded.file_id, sealed_upto = -1, moved = 0",
                      (folder, file_id.hex()))

    def state(self, folder: str) -> tuple[bytes, int, bool] | None:
        """(file ID, sealed_upto, moved) of a staged upload; None: not staged."""
        rows = self.db.query("SELECT file_id, sealed_upto, moved FROM chunk_stages "
                             "WHERE folder = ?", (folder,))
        if not rows or self.vault.storage.stat(f"{folder}/{DATA}") is None:
            return None
        return bytes.fromhex(rows[0][0]), int(rows[0][1]), bool(rows[0][2])

    def data_key(self, file_id: bytes) -> bytes:
        return self.vault.keys.unwrap(stage_key_id(file_id), self._identities())

    def parts(self, folder: str) -> list[Part]:
        """The chunks present, in number order: whole ones (``<n>``) and placed ones (a
        row whose bytes are flushed, or still in this boot's page cache)."""
        out: dict[int, Part] = {}
        for r in self.db.query("SELECT chunk, name, start, size, head, edges, boot FROM "
                               "chunk_stage_parts WHERE folder = ?", (folder,)):
            if r[6] in ("", BOOT):
                out[r[0]] = Part(r[1], r[3], r[2], r[4], r[5])
        for e in self.vault.storage.list_dir(folder):
            if not e.is_dir and e.name.isdigit():
                out[int(e.name)] = Part(e.name, self.vault.stat(f"{folder}/{e.name}").size)
        return [out[n] for n in sorted(out)]

    def pending_bytes(self, area: str, except_folder: str, except_chunk: int) -> int:
        """Chunk bytes held in ``.data`` files under ``area`` (whole chunks are vault
        files, counted from the index), except one chunk about to be replaced."""
        rows = self.db.query(
            "SELECT coalesce(sum(size), 0) FROM chunk_stage_parts "
            "WHERE substr(folder, 1, length(?) + 1) = ? || '/' AND NOT (folder = ? AND "
            "chunk = ?)", (area, area, except_folder, except_chunk))
        return int(rows[0][0])

    def flush(self, folder: str) -> None:
        """Make every placed chunk durable (before a listing names it); the caller holds
        the upload's lock."""
        if not self.db.query("SELECT 1 FROM chunk_stage_parts WHERE folder = ? AND boot = ?",
                             (folder, BOOT)):
            return
        if self.vault.storage.fsync:
            fd = os.open(self._local(f"{folder}/{DATA}"), os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        with self.db.tx() as c:
            c.execute("UPDATE chunk_stage_parts SET boot = '' WHERE folder = ? AND boot = ?",
                      (folder, BOOT))

    def forget(self, folder: str) -> None:
        """Drop the rows and the kept key of an upload whose folder is going or gone."""
        rows = self.db.query("SELECT file_id FROM chunk_stages WHERE folder = ?", (folder,))
        with self.db.tx() as c:
            c.execute("DELETE FROM chunk_stage_parts WHERE folder = ?", (folder,))
            c.execute("DELETE FROM chunk_stages WHERE folder = ?", (folder,))
        if rows:
            self.vault.keys.delete(stage_key_id(bytes.fromhex(rows[0][0])))

    # --- chunk PUT ---------------------------------------------------------------------

    def placement(self, folder: str, number: int, size: int) -> int | None:
        """Where chunk ``number`` goes in the file, if it can be placed: the caller holds
        the upload's lock. None: store it whole."""
        st = self.state(folder)
        if st is None or st[2]:
            return None
        parts = self.parts(folder)
        if parts and (number <= parts[-1].number or not all(p.placed for p in parts)):
            return None
        start = sum(p.size for p in parts)
        cs = 1 << hdr.DEFAULT_CHUNK_SHIFT
        first = -(-start // cs)
        if first <= st[1]:
            return None  # a failed PUT may have sealed these indexes: never again
        last = (start + size) // cs - 1
        if last >= first:
            with self.db.tx() as c:
                c.execute("UPDATE chunk_stages SET sealed_upto = ? WHERE folder = ?",
                          (last, folder))
        return start

    def placer(self, folder: str, start: int, size: int, observe=None) -> Placer:
        """``observe``: something with ``update(bytes)`` shown the chunk's bytes too."""
        file_id = self.state(folder)[0]
        sealer = SegmentSealer(self.data_key(file_id), file_id)
        return Placer(self._local(f"{folder}/{DATA}"), sealer, start, size, observe=observe)

    def record(self, folder: str, name: str, placer: Placer) -> None:
        """The chunk's bytes are written (not yet flushed): its row, which lists it."""
        st = self.state(folder)
        edges = primitives.aead_seal(self._edges_key(st[0]), bytes(placer.head + placer.tail),
                                     _edges_aad(folder, name, placer.start, placer.size))
        with self.db.tx() as c:
            c.execute("INSERT INTO chunk_stage_parts(folder, chunk, name, start, size, head, "
                      "edges, boot) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(folder, chunk) "
                      "DO UPDATE SET name = excluded.name, start = excluded.start, "
                      "size = excluded.size, head = excluded.head, edges = excluded.edges, "
                      "boot = excluded.boot",
                      (folder, int(name), name, placer.start, placer.size, len(placer.head),
                       base64.b64encode(edges).decode(),
                       BOOT if self.vault.storage.fsync else ""))

    def _edges_key(self, file_id: bytes) -> bytes:
        return primitives.hkdf_sha256(self.data_key(file_id), salt=file_id, info=_EDGES_INFO)

    def _edges(self, folder: str, part: Part, key: bytes) -> bytes:
        return primitives.aead_open(key, base64.b64decode(part.edges),
                                    _edges_aad(folder, part.name, part.start, part.size))

    def stored_whole(self, folder: str, name: str) -> None:
        """Chunk ``name`` was stored whole (or deleted): a placed copy of it is gone."""
        with self.db.tx() as c:
            c.execute("DELETE FROM chunk_stage_parts WHERE folder = ? AND chunk = ?",
                      (folder, int(name)))

    # --- MOVE --------------------------------------------------------------------------

    def in_place(self, folder: str, parts: list[Part]) -> bool:
        """Can the MOVE commit ``.data`` as it is (after sealing the edges)?"""
        st = self.state(folder)
        if st is None or not all(p.placed for p in parts):
            return False
        at = 0
        for p in parts:
            if p.start != at:
                return False
            at += p.size
        return True

    def seal(self, folder: str, parts: list[Part], total: int) -> tuple[bytes, bytes]:
        """Seal the edge chunks, the final chunk and the header into ``.data`` and flush
        it; returns (file ID, data key) for the commit. Safe to run again."""
        file_id = self.state(folder)[0]
        data_key = self.data_key(file_id)
        with self.db.tx() as c:
            c.execute("UPDATE chunk_stages SET moved = 1 WHERE folder = ?", (folder,))
        sealer = SegmentSealer(data_key, file_id)
        cs = sealer.chunk_size
        last = stream.chunk_count(total, cs) - 1
        pieces: dict[int, list[tuple[int, bytes]]] = {}
        edges_key = primitives.hkdf_sha256(data_key, salt=file_id, info=_EDGES_INFO)
        for p in parts:
            edges = self._edges(folder, p, edges_key)
            for at, data in ((p.start, edges[:p.head]),
                             (p.start + p.size - (len(edges) - p.head), edges[p.head:])):
                while data:
                    i = at // cs
                    take = min(len(data), (i + 1) * cs - at)
                    pieces.setdefault(i, []).append((at, data[:take]))
                    at, data = at + take, data[take:]
        path = self._local(f"{folder}/{DATA}")
        fd = os.open(path, os.O_RDWR)
        try:
            for i, got in sorted(pieces.items()):
                got.sort()
                end = min((i + 1) * cs, total)
                at = i * cs
                for start, data in got:
                    if start != at:
                        raise Conflict("the upload's chunks do not fit together")
                    at += len(data)
                if at != end:
                    raise Conflict("the upload's chunks do not fit together")
                os.pwrite(fd, sealer.seal(i, b"".join(d for _, d in got), i == last),
                          sealer.offset(i))
            if total == 0:
                os.pwrite(fd, sealer.seal(0, b"", True), sealer.offset(0))
            elif last not in pieces:
                # The last chunk is whole inside one upload chunk: sealed as not final
                # when it arrived (or final already, by an earlier MOVE).
                sealed = os.pread(fd, sealer.stride, sealer.offset(last))
                try:
                    plain = sealer.open(last, sealed, False)
                    os.pwrite(fd, sealer.seal(last, plain, True), sealer.offset(last))
                except IntegrityError:
                    sealer.open(last, sealed, True)
            os.pwrite(fd, sealer.header_bytes(), 0)
            os.ftruncate(fd, stream.ciphertext_size(total))
            if self.vault.storage.fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        return file_id, data_key

    def commit_upload(self, folder: str, dest: str, file_id: bytes, data_key: bytes,
                      total: int, quota: int | None) -> Upload:
        """The vault write that renames ``.data`` onto ``dest`` when committed; its keys
        are wrapped for whoever a write to ``dest`` is (a team folder's groups, shares)."""
        blob = _StagedBlob(self._local(f"{folder}/{DATA}"), self._local(dest),
                           fsync=self.vault.storage.fsync)
        return self.vault.begin_staged(dest, blob, file_id=file_id, data_key=data_key,
                                       size=total, quota=quota)

    def plaintext(self, folder: str, parts: list[Part], block: int) -> Iterator[bytes]:
        """Every chunk's bytes in order (the streaming assembly)."""
        st = self.state(folder)
        sealer = reader = edges_key = None
        if st is not None and any(p.placed for p in parts):
            sealer = SegmentSealer(self.data_key(st[0]), st[0])
            edges_key = self._edges_key(st[0])
            reader = self.vault.storage.open_reader(f"{folder}/{DATA}")
        try:
            for p in parts:
                if not p.placed:
                    f = self.vault.open_read(f"{folder}/{p.name}")
                    try:
                        while data := f.read(block):
                            yield data
                    finally:
                        f.close()
                    continue
                edges = self._edges(folder, p, edges_key)
                yield edges[:p.head]
                cs = sealer.chunk_size
                first = (p.start + p.head) // cs
                for i in range(first, first + (p.size - len(edges)) // cs):
                    sealed = reader.read_at(sealer.offset(i), sealer.stride)
                    yield sealer.open(i, sealed, False)
                yield edges[p.head:]
        finally:
            if reader is not None:
                reader.close()


def forget_all(vault: Vault, area: str) -> None:
    """Drop the rows and kept keys of every upload under ``area`` (a user's uploads,
    when the user is deleted)."""
    rows = vault.db.query("SELECT folder, file_id FROM chunk_stages WHERE "
                          "substr(folder, 1, length(?) + 1) = ? || '/'", (area, area))
    with vault.db.tx() as c:
        for folder, _fid in rows:
            c.execute("DELETE FROM chunk_stage_parts WHERE folder = ?", (folder,))
            c.execute("DELETE FROM chunk_stages WHERE folder = ?", (folder,))
    for _folder, fid in rows:
        vault.keys.delete(stage_key_id(bytes.fromhex(fid)))


class Placer:
    """Receives one chunk: whole stream chunks are sealed into ``.data`` at their offsets,
    the bytes before the first and after the last whole one are kept (edges)."""

    def __init__(self, path: str, sealer: SegmentSealer, start: int, size: int, *,
                 observe=None) -> None:
        self.start, self.size = start, size
        self._observe = observe
        self._sealer = sealer
        cs = sealer.chunk_size
        end = start + size
        first_full = -(-start // cs) * cs
        last_full = end // cs * cs
        if last_full <= first_full:  # no whole stream chunk inside: all of it is edge
            self._head_end, self._body_end = end, end
        else:
            self._head_end, self._body_end = first_full, last_full
        self.head = bytearray()
        self.tail = bytearray()
        self._pos = start
        self._pending = bytearray()  # part of a stream chunk
        self._next = self._head_end // cs  # index of the next stream chunk to seal
        self._fd = os.open(path, os.O_RDWR)
        self._unflushed = 0
        self._flushing: Future | None = None

    def write(self, data) -> None:
        mv = memoryview(data)
        if self._observe is not None:
            self._observe.update(mv)
        if self._pos < self._head_end:
            take = min(len(mv), self._head_end - self._pos)
            self.head += mv[:take]
            mv, self._pos = mv[take:], self._pos + take
        if mv and self._pos < self._body_end:
            take = min(len(mv), self._body_end - self._pos)
            self._body(mv[:take])
            mv, self._pos = mv[take:], self._pos + take
        if mv:
            self.tail += mv
            self._pos += len(mv)

    def _body(self, mv: memoryview) -> None:
        cs = self._sealer.chunk_size
        first, out = self._next, []
        if self._pending:
            take = min(len(mv), cs - len(self._pending))
            self._pending += mv[:take]
            mv = mv[take:]
            if len(self._pending) < cs:
                return
            out.append(self._sealer.seal(self._next, bytes(self._pending), False))
            self._next += 1
            self._pending = bytearray()
        while len(mv) >= cs:
            out.append(self._sealer.seal(self._next, mv[:cs], False))
            self._next += 1
            mv = mv[cs:]
        if len(mv):
            self._pending += mv
        if out:
            self._flush_out(out, first)

    def _flush_out(self, out: list[bytes], index: int) -> None:
        offset = self._sealer.offset(index)
        n = os.pwritev(self._fd, out, offset)
        want = sum(len(b) for b in out)
        while n < want:  # a short write: the rest, from where it stopped
            blob = b"".join(out)[n:]
            n += os.pwrite(self._fd, blob, offset + n)
        self._unflushed += want
        if self._unflushed >= EARLY_FLUSH_BYTES and (
                self._flushing is None or self._flushing.done()):
            self._unflushed = 0
            self._flushing = _flush_pool().submit(start_writeback, self._fd, 0, 0)

    def finish(self) -> None:
        """Everything received. Not flushed here: see the module docstring."""
        if self._pending:
            raise AssertionError("a stream chunk was left half received")
        if self._pos != self.start + self.size:
            raise AssertionError("finish before the whole chunk was received")
        self._wait()
        start_writeback(self._fd, 0, 0)  # 0 bytes: to the end of the file

    def _wait(self) -> None:
        f, self._flushing = self._flushing, None
        if f is not None:
            f.result()

    def close(self) -> None:
        try:
            self._wait()
        except OSError:
            pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _StagedBlob(BlobWriter):
    """The commit step for ``.data``: an atomic rename onto the destination."""

    def __init__(self, src: str, dst: str, *, fsync: bool) -> None:
        self._src, self._dst, self._fsync = src, dst, fsync

    def write(self, data: bytes) -> None:
        raise AssertionError("a staged upload is written by its chunks")

    def commit(self) -> None:
        parent = os.path.dirname(self._dst)
        if not os.path.isdir(parent):
            raise Conflict("parent folder does not exist")
        os.replace(self._src, self._dst)
        if self._fsync:
            fsync_dir(parent)

    def abort(self) -> None:
        """Nothing to undo: ``.data`` stays for another try of the MOVE."""
