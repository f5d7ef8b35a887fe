"""The 64-byte header that starts every encrypted file (format v1).

::

    offset  size  field
    0       6     magic        "DAVSSE"
    6       1     version      0x01
    7       1     cipher       0x01 = AES-256-GCM
    8       1     chunk_shift  log2(plaintext chunk size); writers use 18 (256 KiB)
    9       7     reserved     zero; readers reject anything else
    16      16    file_id      random, fresh for every full write of a file
    32      32    mac          HMAC-SHA256(header_key, bytes 0..31)

The MAC is also the key commitment: it is keyed with a subkey of the data key, so one
header (and hence one ciphertext) opens under exactly one data key, and every field above
it, the file ID included, is authenticated before a single chunk is decrypted.

Subkeys (HKDF-SHA256, salt = file_id; one key per primitive):

    header_key  = HKDF(data_key, salt=file_id, info="davserver/v1 header")
    payload_key = HKDF(data_key, salt=file_id, info="davserver/v1 payload")
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from davserver.crypto import primitives
from davserver.errors import FormatError, IntegrityError

MAGIC = b"DAVSSE"
VERSION = 1
CIPHER_AES_256_GCM = 1
HEADER_BYTES = 64
FILE_ID_BYTES = 16
DEFAULT_CHUNK_SHIFT = 18  # 256 KiB: 0.0061% overhead, a Range read decrypts <= 256 KiB
MIN_CHUNK_SHIFT = 12
MAX_CHUNK_SHIFT = 24

_PREFIX = struct.Struct(">6sBBB7s16s")  # 32 bytes: everything the MAC covers
_HEADER_INFO = b"davserver/v1 header"
_PAYLOAD_INFO = b"davserver/v1 payload"


@dataclass(frozen=True)
class Header:
    file_id: bytes
    chunk_shift: int = DEFAULT_CHUNK_SHIFT
    version: int = VERSION
    cipher: int = CIPHER_AES_256_GCM

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_shift

    @property
    def prefix(self) -> bytes:
        """The authenticated fields; also bound into every chunk's associated data."""
        return _PREFIX.pack(
            MAGIC, self.version, self.cipher, self.chunk_shift, bytes(7), self.file_id
        )

    def seal(self, data_key: bytes) -> bytes:
        """Serialise with the MAC computed under ``data_key``."""
        return self.seal_with(header_key(data_key, self.file_id))

    def seal_with(self, header_key: bytes) -> bytes:
        return self.prefix + primitives.hmac_sha256(header_key, self.prefix)


def subkeys(data_key: bytes, file_id: bytes) -> tuple[bytes, bytes]:
    """(header_key, payload_key): the two HKDFs of the table above, one extract shared."""
    prk = primitives.hkdf_sha256_extract(data_key, salt=file_id)
    return (primitives.hkdf_sha256_expand(prk, _HEADER_INFO),
            primitives.hkdf_sha256_expand(prk, _PAYLOAD_INFO))


def header_key(data_key: bytes, file_id: bytes) -> bytes:
    return primitives.hkdf_sha256(data_key, salt=file_id, info=_HEADER_INFO)


def payload_key(data_key: bytes, file_id: bytes) -> bytes:
    return primitives.hkdf_sha256(data_key, salt=file_id, info=_PAYLOAD_INFO)


def is_encrypted(first_bytes: bytes) -> bool:
    """Cheap sniff used to tell our files from plaintext placed in storage by hand."""
    return first_bytes[: len(MAGIC)] == MAGIC


def parse(raw: bytes) -> Header:
    """Parse without verifying: the file ID is needed to find the key that verifies it."""
    if len(raw) < HEADER_BYTES:
        raise FormatError("file shorter than the header")
    magic, version, cipher, shift, reserved, file_id = _PREFIX.unpack(raw[:32])
    if magic != MAGIC:
        raise FormatError("bad magic")
    if version != VERSION:
        raise FormatError(f"unsupported version {version}")
    if cipher != CIPHER_AES_256_GCM:
        raise FormatError(f"unsupported cipher {cipher}")
    if not MIN_CHUNK_SHIFT <= shift <= MAX_CHUNK_SHIFT:
        raise FormatError(f"unsupported chunk size 2^{shift}")
    if reserved != bytes(7):
        raise FormatError("reserved header bytes are not zero")
    return Header(file_id=file_id, chunk_shift=shift, version=version, cipher=cipher)


def verify(raw: bytes, data_key: bytes) -> Header:
    """Parse and authenticate the header; the data key is committed to by the MAC."""
    return open_header(raw, data_key)[0]


def open_header(raw: bytes, data_key: bytes) -> tuple[Header, bytes]:
    """:func:`verify`, and the payload key that goes with the header."""
    hdr = parse(raw)
    hkey, pkey = subkeys(data_key, hdr.file_id)
    expected = primitives.hmac_sha256(hkey, raw[:32])
    if not primitives.constant_time_equal(expected, raw[32:HEADER_BYTES]):
        raise IntegrityError()
    return hdr, pkey
