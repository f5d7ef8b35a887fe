"""Known-answer and self-consistency checks run by ``davserver selftest`` on the user's
machine: the crypto library in use must reproduce our format byte for byte."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from davserver.crypto import keywrap, stream
from davserver.errors import IntegrityError

_DATA_KEY = bytes(range(32))
_FILE_ID = bytes(range(100, 116))
_PLAIN = bytes(i % 251 for i in range(5000))
#: sha256 of the v1 ciphertext of _PLAIN (chunk_shift 12) and of the empty file
_KAT_5000 = "4e78731d840420441afcd9edf39dff6822cf5ebc5c50b9c891d818d531c44d28"
_KAT_EMPTY = "1b5831e8a5242aa048b69f73cbdc34b76a893e07f4a41e7b7c51ef7cc156c720"


def _kat() -> None:
    ct = stream.encrypt_bytes(_PLAIN, _DATA_KEY, _FILE_ID, chunk_shift=12)
    assert hashlib.sha256(ct).hexdigest() == _KAT_5000, "ciphertext differs from the KAT"
    ct0 = stream.encrypt_bytes(b"", _DATA_KEY, _FILE_ID, chunk_shift=12)
    assert hashlib.sha256(ct0).hexdigest() == _KAT_EMPTY, "empty-file ciphertext differs"


def _roundtrip_and_tamper() -> None:
    ct = stream.encrypt_bytes(_PLAIN, _DATA_KEY, _FILE_ID, chunk_shift=12)
    r = stream.ChunkReader(lambda o, n: ct[o:o + n], len(ct), _DATA_KEY)
    assert b"".join(r.iter_plaintext()) == _PLAIN
    bad = bytearray(ct)
    bad[200] ^= 1
    r = stream.ChunkReader(lambda o, n: bytes(bad[o:o + n]), len(bad), _DATA_KEY)
    try:
        b"".join(r.iter_plaintext())
    except IntegrityError:
        return
    raise AssertionError("a flipped byte was not detected")


def _hpke(suite: str) -> Callable[[], None]:
    def check() -> None:
        priv, pub = keywrap.new_keypair(suite)
        sealed = keywrap.wrap_data_key(suite, pub, _DATA_KEY, _FILE_ID)
        assert keywrap.unwrap_data_key(suite, priv, sealed, _FILE_ID) == _DATA_KEY
        try:
            keywrap.unwrap_data_key(suite, priv, sealed, bytes(16))
        except IntegrityError:
            return
        raise AssertionError("a wrap opened for the wrong file ID")

    return check


def _self_wrap() -> None:
    priv, _pub = keywrap.new_keypair("x25519")
    sealed = keywrap.seal_to_self(priv, _DATA_KEY, _FILE_ID)
    assert keywrap.open_wrap(keywrap.SELF_SUITE, priv, sealed, _FILE_ID) == _DATA_KEY
    try:
        keywrap.open_wrap(keywrap.SELF_SUITE, priv, sealed, bytes(16))
    except IntegrityError:
        return
    raise AssertionError("a self wrap opened for the wrong file ID")


CHECKS: list[tuple[str, Callable[[], None]]] = [
    ("stream format known answers", _kat),
    ("round trip and tamper detection", _roundtrip_and_tamper),
    ("HPKE X25519 key wrap", _hpke("x25519")),
    ("HPKE ML-KEM-768+X25519 key wrap", _hpke("mlkem768-x25519")),
    ("self key wrap", _self_wrap),
]


def run() -> list[tuple[str, str | None]]:
    """Return (check, None if passed else the failure) for every check."""
    out = []
    for name, fn in CHECKS:
        try:
            fn()
            out.append((name, None))
        except Exception as e:  # noqa: BLE001 - report every failure, whatever it is
            out.append((name, f"{type(e).__name__}: {e}"))
    return out
