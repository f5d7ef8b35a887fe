"""From a file's share keys to its file key.

Two formats, told apart by what opens:

- NC >= 27 (header ``useLegacyFileKey:false``): each ``<keyname>.shareKey`` is the file key
  encrypted with RSA-OAEP (SHA-1) for that key pair; the ``fileKey`` file is absent.
- Before: ``openssl_seal`` with RC4. ``fileKey`` is RC4(file key, k) with a random 16-byte
  k, and each share key is RSA-PKCS#1-v1.5(k).

PKCS#1 v1.5 with the wrong private key returns random bytes instead of failing (implicit
rejection), so every key found here is only a candidate: the file's MAC decides.
"""

from __future__ import annotations

from davserver.crypto import legacy_nextcloud as nc
from davserver.errors import KeyNotFound
from davserver.nextcloud import keyfiles
from davserver.nextcloud.layout import FileKeyPaths

RC4_KEY_BYTES = 16


class ShareKeyMissing(KeyNotFound):
    """no share key this import can open {detail}"""


def candidates(paths: list[FileKeyPaths], private_keys: dict[str, object], secret: str,
               legacy: bool | None) -> list[bytes]:
    """File keys to try, from the share keys we hold a private key for.

    ``legacy``: the header's useLegacyFileKey (None: unknown, try both). Raises
    KeyNotFound when no share key exists for any key pair we hold.
    """
    out: list[bytes] = []
    usable = 0
    for p in paths:
        file_key_blob = None
        for name, share_path in p.share_key_of.items():
            priv = private_keys.get(name)
            if priv is None:
                continue
            usable += 1
            share = keyfiles.read_key(share_path, secret)
            if legacy is not False:
                if file_key_blob is None:
                    try:
                        file_key_blob = keyfiles.read_key(p.file_key, secret)
                    except KeyNotFound:
                        file_key_blob = b""
                k = nc.rsa_decrypt_pkcs1v15(priv, share) if file_key_blob else None
                if k is not None and len(k) == RC4_KEY_BYTES:
                    out.append(nc.rc4(k, file_key_blob))
            if legacy is not True:
                k = nc.rsa_decrypt_oaep(priv, share)
                if k is not None:
                    out.insert(0, k)  # OAEP checks its padding: a sure key goes first
    if not usable:
        held = ", ".join(sorted(private_keys)) or "none"
        found = sorted({n for p in paths for n in p.share_key_of})
        hint = "" if private_keys else (": per-user keys need --password-from-env or "
                                        "--recovery-password-from-env")
        raise ShareKeyMissing(f"(share keys for {', '.join(found) or 'nobody'}; "
                              f"keys opened: {held}){hint}")
    return list(dict.fromkeys(out))
