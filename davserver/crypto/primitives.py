"""The one module that touches ``cryptography.hazmat``.

Everything above this module speaks in terms of recipes (seal a chunk, derive a subkey,
wrap a key for a recipient); only here do we pick primitives and their parameters. Keeping
the boundary narrow means a reviewer audits one file to know which algorithms we run.

Caveat (nonce reuse): :func:`seal_chunk` takes a nonce from the caller. It is safe only
because every file gets a fresh random data key and the stream module derives nonces from
the chunk index, so a (key, nonce) pair is never used twice.
"""

from __future__ import annotations

import functools
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from davserver.errors import FormatError, IntegrityError

KEY_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12

#: HPKE suites we accept, by the name stored next to each wrapped key.
SUITE_NAMES = ("x25519", "mlkem768-x25519")


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return hkdf_sha256_expand(hkdf_sha256_extract(ikm, salt=salt), info, length)


# HKDF (RFC 5869) is written out on HMAC-SHA256 rather than taken from
# cryptography's HKDF class so that the subkeys of one file share one extract step: a
# file's two subkeys cost 3 HMACs instead of 4, and no object per derivation. For a 4 KiB
# GET that was 8 us of 170. tests/test_primitives.py checks it against RFC 5869's test
# vectors and against cryptography's HKDF.


def hkdf_sha256_extract(ikm: bytes, *, salt: bytes) -> bytes:
    """The pseudorandom key; an empty salt means 32 zero bytes (same HMAC key)."""
    return hmac.digest(salt, ikm, "sha256")


def hkdf_sha256_expand(prk: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output must be 1..8160 bytes")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def scrypt(password: bytes, salt: bytes, *, log2_n: int, r: int, p: int) -> bytes:
    """Password -> 32-byte key; parameters are stored beside whatever it protects."""
    return Scrypt(salt=salt, length=KEY_BYTES, n=1 << log2_n, r=r, p=p).derive(password)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class ChunkCipher:
    """AES-256-GCM bound to one payload key; one instance per open file."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise IntegrityError() from None


def aead_seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """One-shot AES-256-GCM with a random nonce prefixed: for small secrets at rest."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise IntegrityError()
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityError() from None


# --- HPKE key wrapping (RFC 9180, base mode) ------------------------------------------------


def _suite(name: str) -> hpke.Suite:
    if name == "x25519":
        kem = hpke.KEM.X25519
    elif name == "mlkem768-x25519":
        kem = hpke.KEM.MLKEM768_X25519
    else:
        raise FormatError(f"unknown HPKE suite {name!r}")
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


# Raw encodings of the hybrid suite's keys: the ML-KEM-768 part first, X25519 second.
#   private: 64-byte ML-KEM seed || 32-byte X25519 private key  (96 bytes)
#   public:  1184-byte ML-KEM public key || 32-byte X25519 public key  (1216 bytes)
_MLKEM_SEED, _MLKEM_PUB, _X25519 = 64, 1184, 32


def _check_suite(suite: str) -> None:
    if suite not in SUITE_NAMES:
        raise FormatError(f"unknown HPKE suite {suite!r}")


def generate_keypair(suite: str) -> tuple[bytes, bytes]:
    """Return (private, public) as raw bytes for the named suite."""
    _check_suite(suite)
    x = X25519PrivateKey.generate()
    if suite == "x25519":
        return x.private_bytes_raw(), x.public_key().public_bytes_raw()
    m = mlkem.MLKEM768PrivateKey.generate()
    private = m.private_bytes_raw() + x.private_bytes_raw()
    return private, public_from_private(suite, private)


@functools.lru_cache(maxsize=256)
def _load_private(suite: str, raw: bytes):
    """Cached: the same few private keys (master, logged-in users) open every wrap."""
    _check_suite(suite)
    if suite == "x25519":
        return X25519PrivateKey.from_private_bytes(raw)
    if len(raw) != _MLKEM_SEED + _X25519:
        raise ValueError("bad hybrid private key length")
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED]),
        X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:]))


def _load_public(suite: str, raw: bytes):
    _check_suite(suite)
    if suite == "x25519":
        return X25519PublicKey.from_public_bytes(raw)
    if len(raw) != _MLKEM_PUB + _X25519:
        raise ValueError("bad hybrid public key length")
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM_PUB]),
        X25519PublicKey.from_public_bytes(raw[_MLKEM_PUB:]))


def public_from_private(suite: str, raw_private: bytes) -> bytes:
    _check_suite(suite)
    if suite == "x25519":
        return X25519PrivateKey.from_private_bytes(raw_private).public_key().public_bytes_raw()
    m = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw_private[:_MLKEM_SEED])
    x = X25519PrivateKey.from_private_bytes(raw_private[_MLKEM_SEED:])
    return m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()


def hpke_seal(suite: str, public: bytes, plaintext: bytes, info: bytes) -> bytes:
    try:
        pub = _load_public(suite, public)
    except ValueError as e:
        raise FormatError(f"bad public key: {e}") from None
    return _suite(suite).encrypt(plaintext, pub, info=info)


def hpke_open(suite: str, private: bytes, sealed: bytes, info: bytes) -> bytes:
    _check_suite(suite)
    try:
        priv = _load_private(suite, private)
        return _suite(suite).decrypt(sealed, priv, info=info)
    except (InvalidTag, ValueError):
        raise IntegrityError() from None
