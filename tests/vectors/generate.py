"""Regenerate the format v1 test vectors in this directory (run on purpose only).

    python3 tests/vectors/generate.py

The vectors are committed; ``tests/test_vectors.py`` checks davserver against them. This
generator deliberately does NOT import davserver: it implements docs/FORMAT.md directly on
top of ``cryptography`` so that the vectors test the implementation instead of echoing it.

Every stream vector is a pure function of fixed inputs (data keys, file IDs, plaintexts), so
running the generator twice writes identical files. HPKE wraps and AES-GCM sealed private
keys use fresh randomness; those vectors are generated once and kept as long as the file
on disk still matches the fixed inputs and still decrypts.

File format (one scenario per ``<name>.txt``)::

    expect: success | header failure | payload failure | size failure | unwrap failure
    <field>: <value>          one per line, fields as documented in docs/FORMAT.md
    comment: free text
    <blank line>
    <body: base64 wrapped at 76 columns>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = Path(__file__).resolve().parent
SHIFT = 12  # 4 KiB chunks keep multi-chunk vectors a few KiB
CS = 1 << SHIFT
TAG = 16
HEADER = 64

# Fixed inputs. Never change them casually: the committed vectors depend on them.
KEY_A = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
KEY_B = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
FID_A = bytes.fromhex("00112233445566778899aabbccddeeff")
FID_B = bytes.fromhex("ffeeddccbbaa99887766554433221100")
WRAP_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
WRAP_DATA_KEY = bytes.fromhex("5ac3f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccdd")
WRAP_FILE_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
OTHER_FILE_ID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f1")
SECRET = bytes.fromhex("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
WRONG_SECRET = bytes(31) + b"\x01"
MASTER_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
EXAMPLE_KEY = bytes.fromhex("c0ffee00" * 8)
EXAMPLE_FID = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")

SELF_NONCE = bytes.fromhex("0102030405060708090a0b0c")  # random in davserver; fixed here

SECRET_PREFIX = "davserver-secret-v1:"
DATA_KEY_INFO = b"davserver/v1 data key"
SELF_WRAP_INFO = b"davserver/v1 self wrap"
PRIVATE_AAD = b"davserver/v1 private key"


# --- the format, from docs/FORMAT.md ----------------------------------------------------


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def header_key(key: bytes, fid: bytes) -> bytes:
    return hkdf(key, fid, b"davserver/v1 header")


def payload_key(key: bytes, fid: bytes) -> bytes:
    return hkdf(key, fid, b"davserver/v1 payload")


def header(key: bytes, fid: bytes, shift: int = SHIFT, *, magic: bytes = b"DAVSSE",
           version: int = 1, cipher: int = 1, reserved: bytes = bytes(7),
           mac_fid: bytes | None = None) -> bytes:
    prefix = magic + bytes([version, cipher, shift]) + reserved + fid
    mac = hmac.new(header_key(key, mac_fid or fid), prefix, hashlib.sha256).digest()
    return prefix + mac


def seal_chunk(key: bytes, hdr: bytes, index: int, final: bool, plain: bytes) -> bytes:
    flag = b"\x01" if final else b"\x00"
    nonce = index.to_bytes(11, "big") + flag
    aad = hdr[:32] + index.to_bytes(8, "big") + flag
    return AESGCM(payload_key(key, hdr[16:32])).encrypt(nonce, plain, aad)


def encrypt(plain: bytes, key: bytes, fid: bytes, shift: int = SHIFT,
            chunks: list[tuple[int, bool, bytes]] | None = None) -> bytes:
    """Encrypt per the spec; ``chunks`` overrides the (index, final, plaintext) layout to
    build files a correct writer never produces (but with a genuine key)."""
    hdr = header(key, fid, shift)
    if chunks is None:
        cs = 1 << shift
        pieces = [plain[i:i + cs] for i in range(0, len(plain), cs)] or [b""]
        chunks = [(i, i == len(pieces) - 1, p) for i, p in enumerate(pieces)]
    return hdr + b"".join(seal_chunk(key, hdr, i, f, p) for i, f, p in chunks)


def plaintext(n: int, label: bytes = b"davserver vector") -> bytes:
    """Deterministic, non-periodic filler: SHA-256(label || counter) blocks."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(label + i.to_bytes(4, "big")).digest()
        i += 1
    return bytes(out[:n])


def chunk_at(ct: bytes, i: int, shift: int = SHIFT) -> tuple[int, int]:
    stride = (1 << shift) + TAG
    start = HEADER + i * stride
    return start, min(start + stride, len(ct))


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


# --- keys ---------------------------------------------------------------------------------


def hpke_suite() -> hpke.Suite:
    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def wrap(public: bytes, data_key: bytes, fid: bytes) -> bytes:
    return hpke_suite().encrypt(data_key, X25519PublicKey.from_public_bytes(public),
                                info=DATA_KEY_INFO + fid)


def unwrap(private: bytes, sealed: bytes, fid: bytes) -> bytes:
    return hpke_suite().decrypt(sealed, X25519PrivateKey.from_private_bytes(private),
                                info=DATA_KEY_INFO + fid)


def self_wrap_key(private: bytes, fid: bytes) -> bytes:
    return hkdf(private, fid, SELF_WRAP_INFO)


def self_wrap(private: bytes, data_key: bytes, fid: bytes) -> bytes:
    return SELF_NONCE + AESGCM(self_wrap_key(private, fid)).encrypt(
        SELF_NONCE, data_key, DATA_KEY_INFO + fid)


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def master_kek(secret: bytes) -> bytes:
    return hkdf(secret, b"davserver", b"davserver/v1 master kek")


def master_doc(secret: bytes, private: bytes) -> dict:
    public = x25519_public(private)
    kid = key_id(public)
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(master_kek(secret)).encrypt(nonce, private, PRIVATE_AAD + kid.encode())
    return {"format": "davserver-master/1", "id": kid, "suite": "x25519",
            "public": b64(public), "private_sealed": b64(sealed)}


def open_master(secret: bytes, doc: dict) -> bytes:
    sealed = base64.b64decode(doc["private_sealed"])
    return AESGCM(master_kek(secret)).decrypt(sealed[:12], sealed[12:],
                                              PRIVATE_AAD + doc["id"].encode())


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# --- vector files -------------------------------------------------------------------------


def render(fields: dict[str, object], body: bytes) -> str:
    lines = [f"{k}: {v}" for k, v in fields.items()]
    enc = base64.b64encode(body).decode()
    lines.append("")
    lines += [enc[i:i + 76] for i in range(0, len(enc), 76)] or [""]
    return "\n".join(lines) + "\n"


def parse(text: str) -> tuple[dict[str, str], bytes]:
    head, _, body = text.partition("\n\n")
    fields = {}
    for line in head.splitlines():
        k, _, v = line.partition(": ")
        fields[k] = v
    return fields, base64.b64decode("".join(body.split()))


def write(name: str, fields: dict[str, object], body: bytes) -> None:
    (HERE / f"{name}.txt").write_text(render(fields, body))


def existing(name: str) -> tuple[dict[str, str], bytes] | None:
    path = HERE / f"{name}.txt"
    return parse(path.read_text()) if path.exists() else None


def stream_vector(name: str, expect: str, ct: bytes, comment: str, *, key: bytes = KEY_A,
                  fid: bytes = FID_A, shift: int = SHIFT, plain: bytes | None = None) -> None:
    fields: dict[str, object] = {"expect": expect, "data key": key.hex(), "file id": fid.hex(),
                                 "chunk shift": shift}
    if plain is not None:
        fields["plaintext size"] = len(plain)
        fields["plaintext sha256"] = hashlib.sha256(plain).hexdigest()
    fields["comment"] = comment
    write(name, fields, ct)


def stream_vectors() -> None:
    ok = "success"
    for name, n, comment in [
        ("empty", 0, "empty file: header + one final chunk holding only a tag (80 bytes)"),
        ("one_byte", 1, "1 byte: one final chunk of 1 byte"),
        ("one_chunk", CS, "exactly one chunk: a single full final chunk, no empty chunk after"),
        ("one_chunk_plus_one", CS + 1, "one full chunk + a final chunk of 1 byte"),
        ("three_chunks", 2 * CS + 1234, "two full chunks + a final chunk of 1234 bytes"),
        ("three_full_chunks", 3 * CS, "three full chunks, the third one final"),
    ]:
        p = plaintext(n)
        stream_vector(name, ok, encrypt(p, KEY_A, FID_A), comment, plain=p)
    p = plaintext(1000, b"shift 18")
    stream_vector("shift18_small", ok, encrypt(p, KEY_B, FID_B, 18), "default chunk shift 18, "
                  "1000 bytes in one final chunk", key=KEY_B, fid=FID_B, shift=18, plain=p)
    stream_vector("shift24_empty", ok, encrypt(b"", KEY_B, FID_A, 24),
                  "largest chunk shift (24), empty file", key=KEY_B, shift=24, plain=b"")

    base_plain = plaintext(2 * CS + 1234)
    base = encrypt(base_plain, KEY_A, FID_A)  # == three_chunks
    full = encrypt(plaintext(CS), KEY_A, FID_A)  # == one_chunk
    c0, c1, c2 = (base[slice(*chunk_at(base, i))] for i in range(3))
    hf, pf, sf = "header failure", "payload failure", "size failure"
    body = base[HEADER:]

    def hv(name, hdr, comment):
        stream_vector(name, hf, hdr + body, comment)

    hv("header_flipped_file_id", flip(base, 20)[:HEADER],
       "three_chunks with a bit of the file ID flipped: the header MAC fails")
    hv("header_flipped_mac", flip(base, 40)[:HEADER], "three_chunks with a bit of the MAC flipped")
    stream_vector("wrong_data_key", hf, base, "three_chunks opened with another data key: the "
                  "header MAC (the key commitment) fails", key=KEY_B)
    hv("reserved_nonzero", header(KEY_A, FID_A, reserved=b"\x00\x00\x00\x00\x00\x00\x01"),
       "reserved byte 15 = 0x01 with a VALID MAC: readers must still reject it")
    hv("bad_magic", header(KEY_A, FID_A, magic=b"DAVSSF"), "magic 'DAVSSF' with a valid MAC")
    hv("bad_version", header(KEY_A, FID_A, version=2), "version 2 with a valid MAC")
    hv("bad_cipher", header(KEY_A, FID_A, cipher=2), "cipher 2 with a valid MAC")
    hv("chunk_shift_11", header(KEY_A, FID_A, shift=11), "chunk shift 11 (< 12), valid MAC")
    hv("chunk_shift_25", header(KEY_A, FID_A, shift=25), "chunk shift 25 (> 24), valid MAC")
    stream_vector("header_from_other_file", pf, header(KEY_A, FID_B) + body,
                  "a genuine header of another file (file ID ffee..00, same data key, valid "
                  "MAC) in front of three_chunks' chunks: the payload subkey and AAD differ",
                  fid=FID_B)
    stream_vector("truncated_header", hf, base[:40], "only 40 bytes: shorter than the header")

    stream_vector("payload_flipped_byte", pf, flip(base, HEADER + CS + 16 + 100),
                  "a bit flipped inside chunk 1")
    stream_vector("payload_flipped_tag", pf, flip(base, len(base) - 1),
                  "a bit flipped in the tag of the final chunk")
    stream_vector("chunks_swapped", pf, base[:HEADER] + c1 + c0 + c2, "chunks 0 and 1 swapped")
    other = encrypt(plaintext(2 * CS + 1234, b"other"), KEY_A, FID_B)
    o1 = other[slice(*chunk_at(other, 1))]
    stream_vector("chunk_from_other_file", pf, base[:HEADER] + c0 + o1 + c2,
                  "chunk 1 replaced by chunk 1 of another file with the SAME data key but "
                  "another file ID (payload subkey and AAD differ)")
    stream_vector("truncated_after_chunk_0", pf, base[:HEADER] + c0, "cut at the first chunk "
                  "boundary: chunk 0 was written with final = 0 but is now the last chunk")
    stream_vector("last_chunk_removed", pf, base[:HEADER] + c0 + c1,
                  "final chunk removed: chunk 1 (final = 0) is now last")
    stream_vector("extra_chunk_appended", pf, base + c0, "a copy of chunk 0 appended: the old "
                  "final chunk now sits where a full non-final chunk is expected")
    stream_vector("trailing_garbage_byte", pf, base + b"\x00",
                  "one byte appended after a partial final chunk: the final chunk's tag fails")
    stream_vector("trailing_garbage_after_full_chunk", sf, full + b"\x00",
                  "one_chunk + 1 byte: a last chunk of 1 byte cannot hold a 16-byte tag")
    stream_vector("truncated_inside_tag", sf, base[:-(1234 + 6)],
                  "three_chunks cut so that the last chunk has 10 bytes (< 16-byte tag)")
    stream_vector("header_only", sf, base[:HEADER], "header without any chunk")
    p = plaintext(CS)
    stream_vector("empty_final_chunk_appended", sf,
                  encrypt(p, KEY_A, FID_A, chunks=[(0, False, p), (1, True, b"")]),
                  "genuinely keyed: a full chunk (final = 0) then an EMPTY final chunk; only an "
                  "empty file may end in an empty chunk, so the size is impossible")
    stream_vector("empty_not_final", pf, encrypt(b"", KEY_A, FID_A, chunks=[(0, False, b"")]),
                  "genuinely keyed empty file whose only chunk has final = 0")
    stream_vector("final_flag_on_first_chunk", pf,
                  encrypt(p + b"x", KEY_A, FID_A, chunks=[(0, True, p), (1, True, b"x")]),
                  "genuinely keyed: chunk 0 carries final = 1 although chunk 1 follows")
    stream_vector("chunk_index_skipped", pf, encrypt(
        p + b"x", KEY_A, FID_A, chunks=[(0, False, p), (2, True, b"x")]),
        "genuinely keyed: the second chunk was sealed as index 2")


def keywrap_vectors() -> None:
    public = x25519_public(WRAP_PRIVATE)
    fixed = {"suite": "x25519", "private key": WRAP_PRIVATE.hex(), "public key": public.hex(),
             "file id": WRAP_FILE_ID.hex(), "data key": WRAP_DATA_KEY.hex()}
    old = existing("keywrap_x25519")
    sealed = None
    if old and all(old[0].get(k) == v for k, v in fixed.items()):
        try:
            if unwrap(WRAP_PRIVATE, old[1], WRAP_FILE_ID) == WRAP_DATA_KEY:
                sealed = old[1]
        except Exception:
            sealed = None
    if sealed is None:
        sealed = wrap(public, WRAP_DATA_KEY, WRAP_FILE_ID)
    info = DATA_KEY_INFO + WRAP_FILE_ID
    write("keywrap_x25519", {"expect": "success", **fixed, "hpke info": info.hex(),
                             "comment": "HPKE base mode, DHKEM(X25519, HKDF-SHA256), "
                             "HKDF-SHA256, AES-256-GCM; body = enc (32) || ct+tag (48); "
                             "randomized, recorded once"}, sealed)
    write("keywrap_x25519_wrong_file_id",
          {"expect": "unwrap failure", **fixed, "file id": OTHER_FILE_ID.hex(),
           "hpke info": (DATA_KEY_INFO + OTHER_FILE_ID).hex(),
           "comment": "the wrap of keywrap_x25519 presented for another file ID: the HPKE info "
           "differs, so it must not open"}, sealed)


def self_wrap_vectors() -> None:
    fixed = {"suite": "self", "private key": WRAP_PRIVATE.hex(), "file id": WRAP_FILE_ID.hex(),
             "data key": WRAP_DATA_KEY.hex()}
    sealed = self_wrap(WRAP_PRIVATE, WRAP_DATA_KEY, WRAP_FILE_ID)
    write("keywrap_self", {"expect": "success", **fixed,
                           "wrap key": self_wrap_key(WRAP_PRIVATE, WRAP_FILE_ID).hex(),
                           "comment": "a self wrap: body = nonce (12) || ct+tag (48); the "
                           "nonce is fixed here, random in davserver"}, sealed)
    write("keywrap_self_wrong_file_id",
          {"expect": "unwrap failure", **fixed, "file id": OTHER_FILE_ID.hex(),
           "wrap key": self_wrap_key(WRAP_PRIVATE, OTHER_FILE_ID).hex(),
           "comment": "the wrap of keywrap_self presented for another file ID: another wrap "
           "key and another aad, so it must not open"}, sealed)


def master_vectors() -> tuple[dict, str]:
    private = MASTER_PRIVATE
    public = x25519_public(private)
    secret_line = SECRET_PREFIX + b64(SECRET)
    old = existing("master_key")
    doc = None
    if old and old[0].get("secret file") == secret_line:
        try:
            cand = json.loads(old[1])
            if open_master(SECRET, cand) == private and cand["public"] == b64(public):
                doc = cand
        except Exception:
            doc = None
    if doc is None:
        doc = master_doc(SECRET, private)
    body = json.dumps(doc, indent=1).encode()
    fields = {"secret file": secret_line, "master file": f"master-{doc['id']}.json",
              "private key": private.hex(), "public key": public.hex()}
    write("master_key", {"expect": "success", **fields, "comment": "body = the master key file "
                         "(JSON); private_sealed is randomized, recorded once"}, body)
    write("master_key_wrong_secret", {"expect": "unwrap failure", **fields,
                                      "secret file": SECRET_PREFIX + b64(WRONG_SECRET),
                                      "comment": "master_key opened with another secret"}, body)
    return doc, secret_line


def example_vector(master: dict, secret_line: str, *, self_wrapped: bool = False) -> None:
    """A whole instance in one file: secret, master key file, key file and ciphertext."""
    name = "example_instance_self" if self_wrapped else "example_instance"
    plain = plaintext(3 * CS + 5, b"example")
    ct = encrypt(plain, EXAMPLE_KEY, EXAMPLE_FID)
    pub = base64.b64decode(master["public"])
    kid = master["id"]
    old = existing(name)
    key_doc = None
    if self_wrapped:
        key_doc = {"format": "davserver-key/1", "file_id": EXAMPLE_FID.hex(),
                   "wraps": [{"to": f"master:{kid}", "suite": "self",
                              "sealed": b64(self_wrap(MASTER_PRIVATE, EXAMPLE_KEY,
                                                      EXAMPLE_FID))}]}
    elif old and old[0].get("master json") == json.dumps(master) and old[1] == ct:
        try:
            cand = json.loads(old[0]["key file json"])
            if unwrap(MASTER_PRIVATE, base64.b64decode(cand["wraps"][0]["sealed"]),
                      EXAMPLE_FID) == EXAMPLE_KEY:
                key_doc = cand
        except Exception:
            key_doc = None
    if key_doc is None:
        key_doc = {"format": "davserver-key/1", "file_id": EXAMPLE_FID.hex(),
                   "wraps": [{"to": f"master:{kid}", "suite": "x25519",
                              "sealed": b64(wrap(pub, EXAMPLE_KEY, EXAMPLE_FID))}]}
    h = EXAMPLE_FID.hex()
    write(name, {
        "expect": "success",
        "secret file": secret_line,
        "master file": f"master-{kid}.json",
        "master json": json.dumps(master),
        "key file": f"files/{h[:2]}/{h}.json",
        "key file json": json.dumps(key_doc),
        "data key": EXAMPLE_KEY.hex(),
        "file id": h,
        "chunk shift": SHIFT,
        "plaintext size": len(plain),
        "plaintext sha256": hashlib.sha256(plain).hexdigest(),
        "comment": "a key store root (master file + key file"
                   + (" with a self wrap" if self_wrapped else "") + ") plus one encrypted "
                   "file; decrypt it with the FORMAT.md 'Decrypting by hand' snippet",
    }, ct)


def main() -> int:
    stream_vectors()
    keywrap_vectors()
    self_wrap_vectors()
    doc, secret_line = master_vectors()
    example_vector(doc, secret_line)
    example_vector(doc, secret_line, self_wrapped=True)
    print(f"wrote {len(list(HERE.glob('*.txt')))} vectors to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
