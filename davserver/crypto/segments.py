"""Sealing single chunks of the stream format at known indexes, in any order.

:class:`~davserver.crypto.stream.StreamWriter` encrypts a file front to back. A chunked
upload (dav.ncupload, vault.chunkstage) receives the file in pieces whose place in the
file is known when each piece arrives, and writes each piece's chunks straight to their
final offsets, so that assembling the file needs no second pass over it. The bytes are
exactly the stream format's (docs/FORMAT.md): same header, same nonce and associated data
per chunk index and final flag.

The caller owns the one rule the format's nonces rely on: under one data key, a chunk
index is never sealed twice with the same final flag but different plaintext.
"""

from __future__ import annotations

from davserver.crypto import header as hdr
from davserver.crypto import primitives
from davserver.crypto.stream import TAG_BYTES, _nonce_and_aad


class SegmentSealer:
    """The header and chunks of one file version (one data key, one file ID)."""

    def __init__(self, data_key: bytes, file_id: bytes,
                 chunk_shift: int = hdr.DEFAULT_CHUNK_SHIFT) -> None:
        self.header = hdr.Header(file_id=file_id, chunk_shift=chunk_shift)
        self._prefix = self.header.prefix
        self._hkey, pkey = hdr.subkeys(data_key, file_id)
        self._cipher = primitives.ChunkCipher(pkey)
        self.chunk_size = self.header.chunk_size
        self.stride = self.chunk_size + TAG_BYTES

    def header_bytes(self) -> bytes:
        return self.header.seal_with(self._hkey)

    def offset(self, index: int) -> int:
        """Where chunk ``index`` starts in the stored file."""
        return hdr.HEADER_BYTES + index * self.stride

    def seal(self, index: int, plain, final: bool) -> bytes:
        nonce, aad = _nonce_and_aad(self._prefix, index, final)
        return self._cipher.seal(nonce, plain, aad)

    def open(self, index: int, sealed: bytes, final: bool) -> bytes:
        """Verified plaintext of one stored chunk (IntegrityError if it is not that
        chunk, with that final flag, of this version)."""
        nonce, aad = _nonce_and_aad(self._prefix, index, final)
        return self._cipher.open(nonce, sealed, aad)
