"""Key wrapping recipes: data keys to recipients (HPKE), private keys under secrets.

Derivations (one line each; ``||`` is concatenation):

    wrapped_data_key = HPKE-Seal(suite, recipient_pub, "davserver/v1 data key" || file_id, data_key)
    master_kek       = HKDF-SHA256(secret, salt="davserver", info="davserver/v1 master kek")
    sealed_private   = nonce(12) || AES-256-GCM(kek, nonce, private,
                                                aad="davserver/v1 private key" || key_id)
    key_id           = hex(SHA-256(public))[:16]

Binding the file ID into the HPKE info means a wrapped key copied next to another file's
ID does not open: keys are found by file ID and only work for that file ID.
"""

from __future__ import annotations

import hashlib

from davserver.crypto import primitives

DATA_KEY_BYTES = 32
_DATA_KEY_INFO = b"davserver/v1 data key"
_PRIVATE_AAD = b"davserver/v1 private key"
_MASTER_KEK_INFO = b"davserver/v1 master kek"


def new_data_key() -> bytes:
    return primitives.random_bytes(DATA_KEY_BYTES)


def new_file_id() -> bytes:
    return primitives.random_bytes(16)


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def wrap_data_key(suite: str, public: bytes, data_key: bytes, file_id: bytes) -> bytes:
    return primitives.hpke_seal(suite, public, data_key, _DATA_KEY_INFO + file_id)


def unwrap_data_key(suite: str, private: bytes, sealed: bytes, file_id: bytes) -> bytes:
    return primitives.hpke_open(suite, private, sealed, _DATA_KEY_INFO + file_id)


def master_kek(instance_secret: bytes) -> bytes:
    return primitives.hkdf_sha256(instance_secret, salt=b"davserver", info=_MASTER_KEK_INFO)


def seal_private_key(kek: bytes, private: bytes, kid: str) -> bytes:
    return primitives.aead_seal(kek, private, _PRIVATE_AAD + kid.encode())


def open_private_key(kek: bytes, sealed: bytes, kid: str) -> bytes:
    return primitives.aead_open(kek, sealed, _PRIVATE_AAD + kid.encode())


def new_keypair(suite: str) -> tuple[bytes, bytes]:
    return primitives.generate_keypair(suite)
