"""Chunked AEAD stream: a writer, a random-access reader, and size arithmetic.

::

    +--------+-----------------+-----------------+-----+------------------+
    | header | chunk 0 + tag   | chunk 1 + tag   | ... | last chunk + tag |
    | 64 B   | CS + 16 B       | CS + 16 B       |     | 1..CS + 16 B     |
    +--------+-----------------+-----------------+-----+------------------+

Chunk ``i`` is AES-256-GCM under ``payload_key`` with

    nonce = i (11 bytes, big-endian) || final (1 byte: 0x01 on the last chunk, else 0x00)
    aad   = header bytes 0..31 || i (8 bytes, big-endian) || final (1 byte)

Rules (checked by every reader): a file has at least one chunk; only the last chunk carries
final = 1; the last chunk holds 1..CS plaintext bytes, except that an empty file is exactly
one final chunk with an empty plaintext. A truncation or extension at any point therefore
breaks the final flag or the size arithmetic. Nonces never repeat because every file
version has its own random data key (see header.py).

Plaintext size follows from the ciphertext size alone (:func:`plaintext_size`), so
listings and quotas never decrypt.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator

from davserver.crypto import header as hdr
from davserver.crypto import primitives
from davserver.errors import FormatError, IntegrityError

TAG_BYTES = primitives.TAG_BYTES
_INDEX = struct.Struct(">Q")

ReadAt = Callable[[int, int], bytes]


def chunk_count(plain_size: int, chunk_size: int) -> int:
    return max(1, -(-plain_size // chunk_size))


def ciphertext_size(plain_size: int, chunk_shift: int = hdr.DEFAULT_CHUNK_SHIFT) -> int:
    chunk_size = 1 << chunk_shift
    return hdr.HEADER_BYTES + plain_size + TAG_BYTES * chunk_count(plain_size, chunk_size)


def plaintext_size(cipher_size: int, chunk_shift: int = hdr.DEFAULT_CHUNK_SHIFT) -> int:
    """Invert :func:`ciphertext_size`; raise FormatError for sizes no writer produces."""
    body = cipher_size - hdr.HEADER_BYTES
    if body < TAG_BYTES:
        raise FormatError("file too short")
    stride = (1 << chunk_shift) + TAG_BYTES
    n = -(-body // stride)
    last = body - (n - 1) * stride
    if last < TAG_BYTES or (last == TAG_BYTES and n > 1):
        raise FormatError("impossible ciphertext size (truncated or extended)")
    return body - TAG_BYTES * n


def _nonce_and_aad(prefix: bytes, index: int, final: bool) -> tuple[bytes, bytes]:
    flag = b"\x01" if final else b"\x00"
    packed = _INDEX.pack(index)
    return bytes(3) + packed + flag, prefix + packed + flag


class StreamWriter:
    """Encrypts a byte stream into ``sink`` chunk by chunk, holding back at most one chunk.

    The last full chunk is held until :meth:`finish` because only then is it known to be
    final. ``sink`` is any callable taking bytes (a file's ``write``).
    """

    def __init__(
        self,
        sink: Callable[[bytes], object],
        data_key: bytes,
        file_id: bytes,
        chunk_shift: int = hdr.DEFAULT_CHUNK_SHIFT,
    ) -> None:
        self._sink = sink
        self.header = hdr.Header(file_id=file_id, chunk_shift=chunk_shift)
        self._prefix = self.header.prefix
        hkey, pkey = hdr.subkeys(data_key, file_id)
        self._cipher = primitives.ChunkCipher(pkey)
        self._chunk_size = self.header.chunk_size
        self._buf = bytearray()  # a partial chunk (< chunk size)
        self._held = None  # one full chunk that may turn out to be the last
        self._index = 0
        self.plain_bytes = 0
        self.cipher_bytes = hdr.HEADER_BYTES
        self._finished = False
        sink(self.header.seal_with(hkey))

    def write(self, data: bytes) -> int:
        """Encrypt ``data``; full chunks are sealed straight from it.

        A caller may reuse a mutable buffer after the call, so of such a buffer only what
        is kept past the call (the held chunk; a partial chunk is copied anyway) is
        copied: with 1 MiB writes and 256 KiB chunks that is one chunk in four, not all."""
        if self._finished:
            raise ValueError("write after finish")
        n = len(data)
        if not n:
            return 0
        self.plain_bytes += n
        cs = self._chunk_size
        mv = memoryview(data)
        if self._buf:
            take = cs - len(self._buf)
            self._buf += mv[:take]
            mv = mv[take:]
            if len(self._buf) == cs:
                self._hold(bytes(self._buf))
                self._buf = bytearray()
        while len(mv) >= cs:
            self._hold(mv[:cs])
            mv = mv[cs:]
        if len(mv):
            self._buf += mv
        if self._held is not None and self._buf:
            self._emit(self._held, final=False)  # more data follows it: not the last
            self._held = None
        if isinstance(self._held, memoryview) and not isinstance(data, bytes):
            self._held = bytes(self._held)  # the caller may reuse its buffer
        return n

    def _hold(self, chunk) -> None:
        if self._held is not None:
            self._emit(self._held, final=False)
        self._held = chunk

    def _emit(self, plain, final: bool) -> None:
        nonce, aad = _nonce_and_aad(self._prefix, self._index, final)
        sealed = self._cipher.seal(nonce, plain, aad)
        self._sink(sealed)
        self.cipher_bytes += len(sealed)
        self._index += 1

    def finish(self) -> None:
        if self._finished:
            return
        if self._held is not None:
            self._emit(self._held, final=True)
        else:
            self._emit(bytes(self._buf), final=True)  # also the empty file's one chunk
        self._held = None
        self._buf = bytearray()
        self._finished = True


def encrypt_bytes(plaintext: bytes, data_key: bytes, file_id: bytes,
                  chunk_shift: int = hdr.DEFAULT_CHUNK_SHIFT) -> bytes:
    """Whole-buffer convenience for tests, vectors and small objects."""
    out: list[bytes] = []
    w = StreamWriter(out.append, data_key, file_id, chunk_shift)
    w.write(plaintext)
    w.finish()
    return b"".join(out)


class ChunkReader:
    """Authenticated random access to the chunks of one stored ciphertext.

    ``read_at(offset, length)`` returns stored bytes; ``cipher_size`` is the stored size.
    The header is verified on construction, so a wrong key or a tampered header fails
    before any plaintext exists. ``header_bytes``: the first 64 stored bytes, when the
    caller has already read them.
    """

    def __init__(self, read_at: ReadAt, cipher_size: int, data_key: bytes,
                 header_bytes: bytes | None = None) -> None:
        self._read_at = read_at
        self.cipher_size = cipher_size
        raw = read_at(0, hdr.HEADER_BYTES) if header_bytes is None else header_bytes
        self.header, payload_key = hdr.open_header(raw, data_key)
        self.plain_size = plaintext_size(cipher_size, self.header.chunk_shift)
        self.chunk_size = self.header.chunk_size
        self.chunks = chunk_count(self.plain_size, self.chunk_size)
        self._prefix = self.header.prefix
        self._cipher = primitives.ChunkCipher(payload_key)

    def chunk(self, index: int) -> bytes:
        if not 0 <= index < self.chunks:
            raise IndexError(index)
        final = index == self.chunks - 1
        stride = self.chunk_size + TAG_BYTES
        offset = hdr.HEADER_BYTES + index * stride
        length = (self.plain_size - index * self.chunk_size) + TAG_BYTES if final else stride
        sealed = self._read_at(offset, length)
        if len(sealed) != length:
            raise IntegrityError()
        nonce, aad = _nonce_and_aad(self._prefix, index, final)
        return self._cipher.open(nonce, sealed, aad)

    def iter_plaintext(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield verified plaintext for [start, end); only the chunks touched are read."""
        end = self.plain_size if end is None else min(end, self.plain_size)
        if start >= end:
            if self.plain_size == 0:
                self.chunk(0)  # an empty file still has a final chunk to verify
            return
        first, last = start // self.chunk_size, (end - 1) // self.chunk_size
        for i in range(first, last + 1):
            data = self.chunk(i)
            base = i * self.chunk_size
            lo = max(start - base, 0)
            hi = min(end - base, len(data))
            yield data[lo:hi] if (lo, hi) != (0, len(data)) else data


#: (file ID, stored size) of versions whose final chunk authenticated as final. The final
#: flag guards against truncation and extension, i.e. against a different stored size;
#: a file ID is fresh for every version and its header is authenticated, so the same pair
#: means the same chunk layout, and the check need not decrypt the last chunk again for
#: every Range request (a multi-stream download sends one per stream). Chunks that are
#: served are still authenticated on every read.
_FINAL_OK: dict[tuple[bytes, int], None] = {}
_FINAL_OK_MAX = 4096
_final_lock = threading.Lock()


def _final_known(reader: ChunkReader) -> bool:
    return (reader.header.file_id, reader.cipher_size) in _FINAL_OK


def _final_verified(reader: ChunkReader) -> None:
    with _final_lock:
        if len(_FINAL_OK) >= _FINAL_OK_MAX:
            del _FINAL_OK[next(iter(_FINAL_OK))]  # the oldest (insertion order)
        _FINAL_OK[(reader.header.file_id, reader.cipher_size)] = None


class PlaintextFile:
    """A read-only, seekable file object over a ChunkReader (what WsgiDAV's GET wants).

    Before serving from anywhere but the start, the final chunk is authenticated once, so a
    Range read on a truncated or extended file fails instead of returning stale bytes.
    """

    def __init__(self, reader: ChunkReader, on_close: Callable[[], object] | None = None):
        self._r = reader
        self._pos = 0
        self._cache_index = -1
        self._cache = b""
        self._final_checked = False  # the final chunk authenticated by this reader
        self._layout_checked = False  # ... or by an earlier one of the same version
        self._on_close = on_close
        self.closed = False

    @property
    def size(self) -> int:
        return self._r.plain_size

    @property
    def file_id(self) -> bytes:
        return self._r.header.file_id

    def seekable(self) -> bool:
        return True

    def verify_final(self) -> None:
        """Authenticate the last chunk now (before serving a Range from the middle)."""
        if not self._final_checked:
            self._load(self._r.chunks - 1)
            _final_verified(self._r)
            self._final_checked = True

    def verify_layout(self) -> None:
        """What :meth:`verify_final` proves about the size (no truncation, no extension),
        remembered per version; serves before any seek away from the start."""
        if not self._layout_checked:
            if not _final_known(self._r):
                self.verify_final()
            self._layout_checked = True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._pos + offset
        else:
            pos = self._r.plain_size + offset
        if pos < 0:
            raise ValueError("negative seek position")
        if pos:
            self.verify_layout()
        self._pos = pos
        return pos

    def _load(self, index: int) -> bytes:
        if index != self._cache_index:
            self._cache = self._r.chunk(index)
            self._cache_index = index
        return self._cache

    def read(self, size: int = -1) -> bytes:
        total = self._r.plain_size
        if size is None or size < 0:
            size = total - self._pos
        if self._pos >= total or size == 0:
            if total == 0:
                self.verify_final()
            return b""
        end = min(total, self._pos + size)
        cs = self._r.chunk_size
        parts = []
        pos = self._pos
        while pos < end:
            i = pos // cs
            data = self._load(i)
            lo = pos - i * cs
            hi = min(len(data), end - i * cs)
            parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
            pos += hi - lo
        self._pos = end
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._cache = b""
            if self._on_close:
                self._on_close()

    def __enter__(self) -> PlaintextFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
