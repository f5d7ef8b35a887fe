"""The content format of Nextcloud's default encryption module: header and blocks.

File layout (all sizes in bytes)::

    header   8192   "HBEGIN:key:value:...:HEND" padded with "-"  (absent: ownCloud <= 6)
    block    8192   one per plaintext block; the last one may be shorter

    signed block   = ct || "00iv00" || iv(16) || "00sig00" || hex(mac)(64) || "xxx"
    unsigned block = ct || "00iv00" || iv(16) || "xx"
    ct             = AES-CTR/CFB(file key, iv, plain)   raw, or base64 text ("encoding")
    mac            = HMAC-SHA256(SHA512(file key || "_" || version || "_" || pos || "a"), ct)
    pos            = block index from 0, with "end" appended on a partial last block

Plaintext per full block: signed binary 8096, signed base64 6072, unsigned binary 8168,
unsigned base64 6126. ``version`` is kept only in Nextcloud's database, so it is found by
trying 0..N against the first block's MAC (as Nextcloud's recovery tools suggest); all later
blocks must then match with that version. Private key files use the same block format for
their single block (version 0, position 0), after an unpadded header.

An unsigned block under a CTR cipher is refused (Nextcloud never wrote one, and unsigned
CTR would let anyone flip plaintext bits). Unsigned legacy CFB data cannot be
authenticated at all; it is decrypted as it is, which is all Nextcloud itself ever did.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from davserver.crypto import legacy_nextcloud as nc
from davserver.errors import FormatError, IntegrityError

HEADER_BYTES = 8192
BLOCK_BYTES = 8192
READ_BLOCKS = 128  # blocks per read: 1 MiB, so the per-call overhead is spread thin
DEFAULT_MAX_VERSION = 1000

_IV_TAG = b"00iv00"
_SIG_TAG = b"00sig00"
_SIGNED_TAIL = len(_IV_TAG) + 16 + len(_SIG_TAG) + 64 + 3  # 96
_UNSIGNED_TAIL = len(_IV_TAG) + 16 + 2  # 24

PLAIN_PER_BLOCK = {(True, "binary"): 8096, (True, "base64"): 6072,
                   (False, "binary"): 8168, (False, "base64"): 6126}


@dataclass(frozen=True)
class Header:
    """What the header says, with ownCloud's defaults for what it leaves out."""

    cipher: str = "AES-128-CFB"
    encoding: str = "base64"
    signed: bool = False
    key_format: str = "password"
    legacy_file_key: bool | None = None  # None: header does not say (before NC 27)
    present: bool = False
    length: int = 0  # bytes of header before the data

    @property
    def plain_per_block(self) -> int:
        return PLAIN_PER_BLOCK[(self.signed, self.encoding)]


def parse_header(data: bytes, *, padded: bool = True) -> Header | None:
    """The header at the start of ``data``; None if there is none.

    ``padded``: file headers fill a whole block; key-file headers end at ``HEND``.
    """
    if not data.startswith(b"HBEGIN:"):
        return None
    end = data.find(b":HEND", 0, HEADER_BYTES)
    if end < 0:
        raise FormatError("header has no end (HEND)")
    try:
        fields = data[len(b"HBEGIN:"):end].decode("ascii").split(":")
    except UnicodeDecodeError:
        raise FormatError("header is not text") from None
    if len(fields) % 2:
        raise FormatError("header fields are not key:value pairs")
    values = {k: v for k, v in zip(fields[0::2], fields[1::2], strict=True) if k and v}
    module = values.get("oc_encryption_module", "OC_DEFAULT_MODULE")
    if module != "OC_DEFAULT_MODULE":
        raise FormatError(f"encryption module {module!r} is not supported")
    cipher = values.get("cipher", "AES-128-CFB").upper()
    if cipher not in nc.CIPHER_KEY_BYTES:
        raise FormatError(f"unsupported cipher {cipher!r}")
    encoding = values.get("encoding", "base64")
    if encoding not in ("binary", "base64"):
        raise FormatError(f"unsupported encoding {encoding!r}")
    legacy = values.get("useLegacyFileKey")
    length = HEADER_BYTES if padded else end + len(b":HEND")
    if padded and len(data) < HEADER_BYTES and data[end + 5:].strip(b"-"):
        raise FormatError("header block is cut short")
    return Header(cipher=cipher, encoding=encoding, signed=values.get("signed") == "true",
                  key_format=values.get("keyFormat", "password"),
                  legacy_file_key=None if legacy is None else legacy == "true",
                  present=True, length=length)


LEGACY_HEADER = Header()


def block_signed(block: bytes) -> bool:
    return block.endswith(b"xxx") and block[-74:-67] == _SIG_TAG


def split_block(block: bytes, signed: bool) -> tuple[bytes, bytes, bytes | None]:
    """(ciphertext as stored, iv, hex mac or None); FormatError if the tags are not there."""
    if signed:
        if len(block) < _SIGNED_TAIL or not block_signed(block) \
                or block[-96:-90] != _IV_TAG:
            raise FormatError("a block is cut short or damaged (its signature tags are "
                              "missing)")
        return block[:-96], block[-90:-74], block[-67:-3]
    if block.endswith(b"xx"):
        block = block[:-2]
    if len(block) < 22 or block[-22:-16] != _IV_TAG:
        raise FormatError("a block is cut short or damaged (its IV tag is missing)")
    return block[:-22], block[-16:], None


def block_mac(key: bytes, version: int, position: str, stored_ct: bytes) -> bytes:
    mac_key = nc.sha512(key + f"_{version}_{position}a".encode())
    return nc.hmac_sha256(mac_key, stored_ct).hex().encode()


def decode_ct(stored: bytes, encoding: str) -> bytes:
    if encoding == "binary":
        return stored
    try:
        return base64.b64decode(stored, validate=True)
    except binascii.Error:
        raise FormatError("base64 block is not valid base64") from None


def decrypt_single(data: bytes, header: Header, key: bytes) -> bytes:
    """The one block after a key file's header (version 0, position 0)."""
    body = data[header.length:]
    signed = header.signed or block_signed(body)
    ct, iv, mac = split_block(body, signed)
    if mac is not None and not nc.equal(block_mac(key, 0, "0", ct), mac):
        raise IntegrityError("key blob signature")
    if mac is None and header.cipher.endswith("CTR"):
        raise FormatError("unsigned CTR key blob")
    return nc.stream_decrypt(header.cipher, key, iv, decode_ct(ct, header.encoding))


# --- files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """A stored file's header and block geometry (from its size, no DB)."""

    header: Header
    size: int  # bytes on disk

    @property
    def data_bytes(self) -> int:
        return max(0, self.size - self.header.length)

    @property
    def blocks(self) -> int:
        return -(-self.data_bytes // BLOCK_BYTES)

    def position(self, index: int) -> str:
        """Block ``index``'s MAC position: "end" marks a partial last block."""
        last_partial = self.data_bytes % BLOCK_BYTES != 0
        return f"{index}end" if last_partial and index == self.blocks - 1 else str(index)


def read_info(path: str) -> FileInfo:
    """Header and size of a stored file; no header means ownCloud's legacy defaults (the
    caller decides from the keys whether such a file is encrypted at all)."""
    with open(path, "rb") as f:
        first = f.read(HEADER_BYTES)
        size = os.fstat(f.fileno()).st_size
    header = parse_header(first)
    if header is None:
        header = LEGACY_HEADER
    return FileInfo(header, size)


def looks_legacy(path: str, info: FileInfo) -> bool:
    """Does a file without header have ownCloud <= 6's block structure? (A file that
    Nextcloud decrypted in place can keep stale keys; it must be copied, not decrypted.)"""
    if info.blocks == 0:
        return False
    with open(path, "rb") as f:
        first = f.read(BLOCK_BYTES)
    try:
        ct, _iv, _mac = split_block(first, False)
        decode_ct(ct, "base64")
    except FormatError:
        return False
    return True


def plaintext_size(path: str, info: FileInfo) -> int:
    """Exact plaintext size from the sizes and the last block (no decryption)."""
    if info.blocks == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(info.header.length + (info.blocks - 1) * BLOCK_BYTES)
        last = f.read(BLOCK_BYTES)
    signed = info.header.signed or block_signed(last)
    ct, _iv, _mac = split_block(last, signed)
    last_plain = len(ct) if info.header.encoding == "binary" else len(decode_ct(ct, "base64"))
    return (info.blocks - 1) * info.header.plain_per_block + last_plain


def find_key_and_version(path: str, info: FileInfo, candidates: Iterable[bytes],
                         max_version: int = DEFAULT_MAX_VERSION) -> tuple[bytes, int | None]:
    """The file key (of ``candidates``) and version whose MAC opens the first block.

    Unsigned data has no MAC: the first candidate is taken, version None. A signed file
    that no candidate and version opens raises IntegrityError: a wrong key (a share key
    opened with another user's RSA key looks fine until here), a version beyond
    ``max_version``, or a damaged file.
    """
    keys = [k for k in candidates if k]
    if not keys:
        raise IntegrityError("no share key opened with the keys held (another key pair's "
                             "share key, or a wrong password)")
    if info.blocks == 0:
        return keys[0], None
    with open(path, "rb") as f:
        f.seek(info.header.length)
        first = f.read(BLOCK_BYTES)
    signed = info.header.signed or block_signed(first)
    if not signed:
        return keys[0], None
    ct, _iv, mac = split_block(first, True)
    pos = info.position(0)
    for key in keys:
        for version in range(max_version + 1):
            if nc.equal(block_mac(key, version, pos, ct), mac):
                return key, version
    raise IntegrityError(f"no file key and version 0..{max_version} match the signature "
                         "(wrong key, version out of range, or a changed file)")


def decrypt_file(path: str, info: FileInfo, key: bytes, version: int | None,
                 write: Callable[[bytes], object]) -> int:
    """Stream the plaintext of ``path`` to ``write``, checking every block's MAC first.

    Returns the plaintext byte count. On any failure nothing more is written and an error
    is raised; the caller must throw away what was written (it writes to a temp name).
    """
    h = info.header
    ctr = h.cipher.endswith("CTR")
    total = 0
    index = 0
    with open(path, "rb") as f:
        f.seek(h.length)
        while True:
            chunk = f.read(BLOCK_BYTES * READ_BLOCKS)
            if not chunk:
                break
            out = []
            for off in range(0, len(chunk), BLOCK_BYTES):
                block = chunk[off:off + BLOCK_BYTES]
                signed = h.signed or block_signed(block)
                ct, iv, mac = split_block(block, signed)
                if mac is not None:
                    if version is None:
                        raise IntegrityError(f"block {index} is signed but the first was not")
                    if not nc.equal(block_mac(key, version, info.position(index), ct), mac):
                        raise IntegrityError(f"block {index} failed authentication")
                elif ctr or version is not None:
                    raise IntegrityError(f"block {index} has no signature")
                out.append(nc.stream_decrypt(h.cipher, key, iv, decode_ct(ct, h.encoding)))
                index += 1
            data = b"".join(out)
            write(data)
            total += len(data)
    if index != info.blocks:
        raise FormatError("file changed while it was read")
    return total
