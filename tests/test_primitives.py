"""HKDF-SHA256 is written out on HMAC (crypto/primitives.py): it must be RFC 5869's."""

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from davserver.crypto import header, primitives

# RFC 5869, appendix A, test cases 1 and 3 (SHA-256).
RFC5869 = [
    ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
     "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
     "34007208d5b887185865"),
    ("0b" * 22, "", "", 42,
     "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
     "9d201395faa4b61a96c8"),
]


@pytest.mark.parametrize("ikm,salt,info,length,prk,okm", RFC5869)
def test_hkdf_matches_rfc5869(ikm, salt, info, length, prk, okm):
    ikm, salt, info = bytes.fromhex(ikm), bytes.fromhex(salt), bytes.fromhex(info)
    assert primitives.hkdf_sha256_extract(ikm, salt=salt).hex() == prk
    assert primitives.hkdf_sha256(ikm, salt=salt, info=info, length=length).hex() == okm


def test_hkdf_matches_cryptography_for_random_inputs():
    for n in range(200):
        ikm, salt, info = os.urandom(32), os.urandom(n % 40), os.urandom(n % 23)
        length = 1 + (n * 37) % 100
        ref = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None,
                   info=info).derive(ikm)
        assert primitives.hkdf_sha256(ikm, salt=salt, info=info, length=length) == ref


def test_hkdf_refuses_impossible_lengths():
    for length in (0, 255 * 32 + 1):
        with pytest.raises(ValueError):
            primitives.hkdf_sha256(b"k", salt=b"s", info=b"i", length=length)


def test_subkeys_are_the_two_separate_derivations():
    key, file_id = os.urandom(32), os.urandom(16)
    assert header.subkeys(key, file_id) == (header.header_key(key, file_id),
                                            header.payload_key(key, file_id))
    assert header.subkeys(key, file_id)[0] != header.subkeys(key, os.urandom(16))[0]
