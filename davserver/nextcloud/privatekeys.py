"""Password-protected RSA private keys (user, master, recovery and public-link keys).

A private key file is a key-file header (``cipher``, ``keyFormat``, ``encoding``) followed by
one block in the content format (see ``content``), encrypting the PEM key. The block key::

    keyFormat hash   PBKDF2-SHA256(password, SHA256(uid || instanceid || secret), 100000)
    keyFormat hash2  the same with 600000 iterations
    keyFormat password (or no header, ownCloud <= 8)   the password itself, as OpenSSL
                     takes it (NUL-padded or cut to the cipher's key length)

with the key length of the header's cipher. Passwords: a user's login password; the
config.php ``secret`` for ``master_*``; the recovery password for ``recoveryKey_*``; the
empty password for ``pubShare_*``. The uid in the salt is the user's name, the key ID for the
master key, and empty for the recovery and public-link keys (the key ID is tried too).
"""

from __future__ import annotations

from davserver.crypto import legacy_nextcloud as nc
from davserver.errors import FormatError, IntegrityError, WrongPassword
from davserver.nextcloud import content
from davserver.nextcloud.phpconfig import NextcloudConfig

ITERATIONS = {"hash": 100_000, "hash2": 600_000}


def derive_key(password: str, header: content.Header, uid: str,
               cfg: NextcloudConfig) -> bytes:
    iterations = ITERATIONS.get(header.key_format)
    if iterations is None:
        return password.encode()
    salt = nc.sha256((uid + cfg.instanceid + cfg.secret).encode())
    return nc.pbkdf2_sha256(password.encode(), salt, iterations,
                            nc.CIPHER_KEY_BYTES[header.cipher])


def decrypt_private_key(blob: bytes, password: str, uids: list[str], cfg: NextcloudConfig,
                        what: str):
    """The RSA private key in ``blob``; WrongPassword if no uid candidate opens it."""
    header = content.parse_header(blob, padded=False) or content.LEGACY_HEADER
    tried = set()
    for uid in uids:
        key = derive_key(password, header, uid, cfg)
        if key in tried:
            continue
        tried.add(key)
        try:
            pem = content.decrypt_single(blob, header, key)
            return nc.load_private_pem(pem)
        except (IntegrityError, FormatError):
            continue
    raise WrongPassword(f" for {what} (or a different config.php)")

