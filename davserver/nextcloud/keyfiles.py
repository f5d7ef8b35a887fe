"""Key files as Nextcloud stores them, and the instance-secret wrapping of NC >= 20.

Since Nextcloud 20 every key file (file keys, share keys, private and public keys) is
stored as ``hex(ciphertext)|hex(iv)|hex(hmac)|3``: the JSON ``{"key": base64(key), ...}``
encrypted by ``OC\\Security\\Crypto`` under the instance ``secret``::

    km      = HKDF-SHA512(secret)                       (empty salt and info, 64 bytes)
    aes key = PBKDF2-SHA1(km[:32], "phpseclib", 1000, 16)   -> AES-128-CBC, PKCS#7
    hmac    = HMAC-SHA512(hex(SHA512(km[32:] || "a")), hex(ct) || hex(iv))

Versions 1 and 2 of that format use the secret itself for both keys (version 1 also keeps
the IV as 16 raw characters). Key files from before NC 20 are not wrapped: their bytes are
the key. Which one a file is shows in the bytes, so no version switch is needed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from davserver.crypto import legacy_nextcloud as nc
from davserver.errors import FormatError, IntegrityError, KeyNotFound

_WRAPPED = re.compile(rb"^([0-9a-fA-F]+)\|([0-9a-zA-Z+/=]+)\|([0-9a-fA-F]+)(?:\|([0-9]))?\s*$")


def is_wrapped(data: bytes) -> bool:
    return _WRAPPED.match(data) is not None


def keys_for(secret: str, version: str) -> tuple[bytes, bytes]:
    if version == "3":
        km = nc.hkdf_sha512(secret.encode())
        return km[:32], km[32:]
    return secret.encode(), secret.encode()


def unwrap(data: bytes, secret: str) -> bytes:
    """The key inside an instance-secret-wrapped key file.

    Tries the secret, then the empty secret (Nextcloud does the same for instances whose
    secret was empty when the key was written). Raises IntegrityError if neither MAC
    matches: wrong ``secret`` in config.php, or a damaged file.
    """
    m = _WRAPPED.match(data)
    if m is None:
        raise FormatError("not an instance-secret wrapped key file")
    ct_hex, iv_text, mac_hex, version = (g.decode() if g else "" for g in m.groups())
    if len(mac_hex) % 2 or len(ct_hex) % 2:
        raise FormatError("odd-length hex in a wrapped key file")
    for candidate in (secret, ""):
        enc_pw, mac_pw = keys_for(candidate, version)
        mac_key = nc.sha512(mac_pw + b"a").hex().encode()
        expect = nc.hmac_sha512(mac_key, (ct_hex + iv_text).encode())
        if not nc.equal(expect, binascii.unhexlify(mac_hex)):
            continue
        iv = binascii.unhexlify(iv_text) if version and int(version) >= 2 else iv_text.encode()
        key = nc.pbkdf2_sha1(enc_pw, b"phpseclib", 1000, 16)
        plain = nc.cbc_decrypt(key, iv[:16], binascii.unhexlify(ct_hex))
        try:
            doc = json.loads(plain)
            return base64.b64decode(doc["key"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise FormatError("wrapped key file does not hold a key") from None
    raise IntegrityError("key file does not match the instance secret (wrong config.php "
                         "or a damaged key file)")


def read_key(path: str, secret: str) -> bytes:
    """A key file's key, unwrapped if it is wrapped; KeyNotFound if it does not exist."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise KeyNotFound(path) from None
    return unwrap(data, secret) if is_wrapped(data) else data
