"""Primitives Nextcloud's and ownCloud's server-side encryption used, for reading their data.

Why a separate module: these are algorithms davserver would never choose (unauthenticated
AES-CTR/CFB, RC4, RSA with PKCS#1 v1.5, AES-CBC under a PBKDF2-SHA1 key). They are here only
so ``davserver.nextcloud`` can read old data, and only ``davserver/crypto`` may import
``cryptography.hazmat``. The encrypting halves exist for the test encoder and the benchmark,
which must produce Nextcloud-format data without PHP.

Caveat (implicit rejection): :func:`rsa_decrypt_pkcs1v15` with the wrong private key does
not raise on OpenSSL >= 3.2; it returns pseudo-random bytes. Callers must check what they
got (length, then the file's MAC) before trusting it.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from davserver.errors import FormatError

#: Key length in bytes of each cipher name found in Nextcloud headers.
CIPHER_KEY_BYTES = {"AES-256-CTR": 32, "AES-128-CTR": 16, "AES-256-CFB": 32, "AES-128-CFB": 16}


def _mode(cipher: str, iv: bytes):
    name = cipher.upper()
    if name not in CIPHER_KEY_BYTES:
        raise FormatError(f"unsupported Nextcloud cipher {cipher!r}")
    return modes.CTR(iv) if name.endswith("CTR") else CFB(iv)


def _fit_key(cipher: str, key: bytes) -> bytes:
    """OpenSSL's key handling as PHP's openssl_* functions use it: a short key is padded
    with NUL bytes, a long one cut (legacy private keys use the password itself as key)."""
    n = CIPHER_KEY_BYTES[cipher.upper()]
    return key[:n].ljust(n, b"\0")


def stream_decrypt(cipher: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CTR or AES-CFB(128) decryption, as ``openssl_decrypt`` with that cipher name."""
    mode = _mode(cipher, iv)
    d = Cipher(algorithms.AES(_fit_key(cipher, key)), mode).decryptor()
    return d.update(data) + d.finalize()


def stream_encrypt(cipher: str, key: bytes, iv: bytes, data: bytes) -> bytes:
    mode = _mode(cipher, iv)
    e = Cipher(algorithms.AES(_fit_key(cipher, key)), mode).encryptor()
    return e.update(data) + e.finalize()


def cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding (the instance-secret wrapping of key files)."""
    if len(data) % 16 or not data:
        raise FormatError("AES-CBC ciphertext is not a whole number of blocks")
    d = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = d.update(data) + d.finalize()
    u = padding.PKCS7(128).unpadder()
    try:
        return u.update(padded) + u.finalize()
    except ValueError:
        raise FormatError("bad padding in an AES-CBC key file") from None


def cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    p = padding.PKCS7(128).padder()
    padded = p.update(data) + p.finalize()
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(padded) + e.finalize()


def rc4(key: bytes, data: bytes) -> bytes:
    """RC4 (what ``openssl_seal`` used for the legacy ``fileKey``); symmetric."""
    try:
        c = Cipher(ARC4(key), mode=None).encryptor()
    except UnsupportedAlgorithm:  # pragma: no cover - an OpenSSL built without RC4
        return _rc4_python(key, data)
    return c.update(data) + c.finalize()


def _rc4_python(key: bytes, data: bytes) -> bytes:
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(len(data))
    i = j = 0
    for n, byte in enumerate(data):  # only file keys (32 bytes) go through here
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out[n] = byte ^ s[(s[i] + s[j]) & 0xFF]
    return bytes(out)


def pbkdf2_sha256(password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations, length)


def pbkdf2_sha1(password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha1", password, salt, iterations, length)


def hkdf_sha512(ikm: bytes, length: int = 64) -> bytes:
    """HKDF-SHA512 with empty salt and info (PHP's ``hash_hkdf('sha512', $ikm)``)."""
    prk = hmac.digest(b"\0" * 64, ikm, "sha512")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + bytes((counter,)), "sha512")
        out += block
        counter += 1
    return out[:length]


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hmac_sha512(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha512")


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


# --- RSA -------------------------------------------------------------------------------


def load_private_pem(pem: bytes):
    """An RSA private key from PEM (PKCS#1 or PKCS#8), or FormatError.

    The consistency check of the key is skipped (it costs 1.7 s for RSA-4096): the key only
    ever decrypts share keys, and whatever it yields is checked by the file's MAC."""
    try:
        key = serialization.load_pem_private_key(pem, password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError("not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FormatError("not an RSA private key")
    return key


def load_public_pem(pem: bytes):
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError("not a PEM public key") from None


def rsa_decrypt_oaep(key, data: bytes) -> bytes | None:
    """RSA-OAEP with SHA-1 (``OPENSSL_PKCS1_OAEP_PADDING``); None if it does not open."""
    try:
        return key.decrypt(data, asym_padding.OAEP(asym_padding.MGF1(hashes.SHA1()),
                                                   hashes.SHA1(), None))
    except ValueError:
        return None


def rsa_decrypt_pkcs1v15(key, data: bytes) -> bytes | None:
    """RSA PKCS#1 v1.5; see the module docstring: a wrong key may give random bytes."""
    try:
        return key.decrypt(data, asym_padding.PKCS1v15())
    except ValueError:
        return None


def rsa_encrypt_oaep(public, data: bytes) -> bytes:
    return public.encrypt(data, asym_padding.OAEP(asym_padding.MGF1(hashes.SHA1()),
                                                  hashes.SHA1(), None))


def rsa_encrypt_pkcs1v15(public, data: bytes) -> bytes:
    return public.encrypt(data, asym_padding.PKCS1v15())


def rsa_generate(bits: int = 2048) -> tuple[bytes, object]:
    """A new key pair as (private PEM, public key object); for the test encoder."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, key.public_key()


def public_pem(public) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
