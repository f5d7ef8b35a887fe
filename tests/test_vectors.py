"""davserver.crypto against the committed format v1 vectors in tests/vectors/.

The vectors are produced by tests/vectors/generate.py, which implements docs/FORMAT.md
without importing davserver; see docs/FORMAT.md, "Test vectors", for the file format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from davserver.crypto import header, keywrap, stream
from davserver.errors import FormatError, IntegrityError
from davserver.instance import read_secret
from davserver.vault.keystore import KeyStore

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
FORMAT_MD = ROOT / "docs" / "FORMAT.md"

STREAM_OUTCOMES = {"success", "header failure", "payload failure", "size failure"}


def parse(path: Path) -> tuple[dict[str, str], bytes]:
    text = path.read_text()
    head, sep, body = text.partition("\n\n")
    assert sep, f"{path.name}: no blank line between fields and body"
    fields: dict[str, str] = {}
    for line in head.splitlines():
        key, colon, value = line.partition(": ")
        assert colon, f"{path.name}: bad field line {line!r}"
        assert key not in fields, f"{path.name}: duplicate field {key!r}"
        fields[key] = value
    assert all(len(line) <= 76 for line in body.splitlines()), f"{path.name}: body not wrapped"
    return fields, base64.b64decode("".join(body.split()), validate=True)


ALL = sorted(VECTORS.glob("*.txt"))
STREAM = [p for p in ALL if "chunk shift" in parse(p)[0]]


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_vector_inventory():
    assert len(STREAM) >= 15, "expected at least 15 stream scenarios"
    outcomes = {parse(p)[0]["expect"] for p in STREAM}
    assert outcomes == STREAM_OUTCOMES
    for p in ALL:
        fields, _ = parse(p)
        assert fields["expect"] in STREAM_OUTCOMES | {"unwrap failure"}, p.name
        assert fields.get("comment"), f"{p.name}: every vector explains itself"
    names = {p.stem for p in ALL}
    assert {"keywrap_x25519", "master_key", "example_instance"} <= names


def _read_all(data: bytes, key: bytes) -> tuple[stream.ChunkReader, bytes]:
    reader = stream.ChunkReader(lambda o, n: data[o:o + n], len(data), key)
    return reader, b"".join(reader.iter_plaintext())


@pytest.mark.parametrize("path", STREAM, ids=_ids(STREAM))
def test_stream_vector(path: Path):
    fields, data = parse(path)
    expect = fields["expect"]
    key = bytes.fromhex(fields["data key"])
    shift = int(fields["chunk shift"])

    if expect == "header failure":
        with pytest.raises((FormatError, IntegrityError)):
            header.verify(data[: header.HEADER_BYTES], key)
        with pytest.raises((FormatError, IntegrityError)):
            stream.ChunkReader(lambda o, n: data[o:o + n], len(data), key)
        return

    hdr = header.verify(data[: header.HEADER_BYTES], key)
    assert hdr.chunk_shift == shift
    assert hdr.file_id.hex() == fields["file id"]

    if expect == "size failure":
        with pytest.raises(FormatError):
            stream.plaintext_size(len(data), shift)
        with pytest.raises(FormatError):
            stream.ChunkReader(lambda o, n: data[o:o + n], len(data), key)
        return

    size = stream.plaintext_size(len(data), shift)
    if expect == "payload failure":
        with pytest.raises(IntegrityError):
            _read_all(data, key)
        reader = stream.ChunkReader(lambda o, n: data[o:o + n], len(data), key)
        with pytest.raises(IntegrityError):
            stream.PlaintextFile(reader).read()
        return

    assert expect == "success"
    reader, plain = _read_all(data, key)
    assert size == reader.plain_size == len(plain) == int(fields["plaintext size"])
    assert hashlib.sha256(plain).hexdigest() == fields["plaintext sha256"]
    assert stream.ciphertext_size(size, shift) == len(data)
    # The writer is deterministic given (key, file ID): it must reproduce the vector.
    assert stream.encrypt_bytes(plain, key, hdr.file_id, shift) == data


# --- key wrapping -------------------------------------------------------------------------


def _hpke_open_rfc9180(private: bytes, sealed: bytes, info: bytes) -> bytes:
    """RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, written
    out from the RFC to pin the byte layout FORMAT.md documents: enc (32) || ct || tag."""

    def extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt, ikm, hashlib.sha256).digest()

    def expand(prk: bytes, info: bytes, n: int) -> bytes:
        out, t, i = b"", b"", 1
        while len(out) < n:
            t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
            out, i = out + t, i + 1
        return out[:n]

    def lextract(sid: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return extract(salt, b"HPKE-v1" + sid + label + ikm)

    def lexpand(sid: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
        return expand(prk, struct.pack(">H", n) + b"HPKE-v1" + sid + label + info, n)

    enc, ct = sealed[:32], sealed[32:]
    sk = X25519PrivateKey.from_private_bytes(private)
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    kem = b"KEM\x00\x20"
    shared = lexpand(kem, lextract(kem, b"", b"eae_prk", dh), b"shared_secret",
                     enc + sk.public_key().public_bytes_raw(), 32)
    sid = b"HPKE\x00\x20\x00\x01\x00\x02"
    ctx = (b"\x00" + lextract(sid, b"", b"psk_id_hash", b"")
           + lextract(sid, b"", b"info_hash", info))
    secret = lextract(sid, shared, b"secret", b"")
    key = lexpand(sid, secret, b"key", ctx, 32)
    nonce = lexpand(sid, secret, b"base_nonce", ctx, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")


def test_keywrap_x25519_vector():
    fields, sealed = parse(VECTORS / "keywrap_x25519.txt")
    assert fields["expect"] == "success" and fields["suite"] == "x25519"
    private = bytes.fromhex(fields["private key"])
    fid = bytes.fromhex(fields["file id"])
    data_key = bytes.fromhex(fields["data key"])
    assert len(sealed) == 80
    assert bytes.fromhex(fields["hpke info"]) == b"davserver/v1 data key" + fid
    from davserver.crypto import primitives

    assert primitives.public_from_private("x25519", private).hex() == fields["public key"]
    assert keywrap.unwrap_data_key("x25519", private, sealed, fid) == data_key
    assert _hpke_open_rfc9180(private, sealed, b"davserver/v1 data key" + fid) == data_key


def test_keywrap_x25519_wrong_file_id_vector():
    fields, sealed = parse(VECTORS / "keywrap_x25519_wrong_file_id.txt")
    assert fields["expect"] == "unwrap failure"
    with pytest.raises(IntegrityError):
        keywrap.unwrap_data_key("x25519", bytes.fromhex(fields["private key"]), sealed,
                                bytes.fromhex(fields["file id"]))


@pytest.mark.parametrize("name", ["keywrap_self", "keywrap_self_wrong_file_id"])
def test_keywrap_self_vectors(name: str):
    fields, sealed = parse(VECTORS / f"{name}.txt")
    assert fields["suite"] == keywrap.SELF_SUITE and len(sealed) == 60
    private, fid = bytes.fromhex(fields["private key"]), bytes.fromhex(fields["file id"])
    # the documented derivation, spelled out with cryptography alone
    wrap_key = HKDF(hashes.SHA256(), 32, fid, b"davserver/v1 self wrap").derive(private)
    assert wrap_key.hex() == fields["wrap key"]
    if fields["expect"] == "unwrap failure":
        with pytest.raises(IntegrityError):
            keywrap.open_wrap("self", private, sealed, fid)
        return
    data_key = bytes.fromhex(fields["data key"])
    assert keywrap.open_wrap("self", private, sealed, fid) == data_key
    assert AESGCM(wrap_key).decrypt(sealed[:12], sealed[12:],
                                    b"davserver/v1 data key" + fid) == data_key


def _secret(tmp_path: Path, line: str) -> bytes:
    p = tmp_path / "secret"
    p.write_text(line + "\n")
    return read_secret(str(p))


@pytest.mark.parametrize("name", ["master_key", "master_key_wrong_secret"])
def test_master_key_vectors(tmp_path: Path, name: str):
    fields, body = parse(VECTORS / f"{name}.txt")
    root = tmp_path / "keys"
    root.mkdir()
    (root / fields["master file"]).write_bytes(body)
    secret = _secret(tmp_path, fields["secret file"])
    assert len(secret) == 32
    store = KeyStore(str(root), fsync=False)
    if fields["expect"] == "unwrap failure":
        with pytest.raises(IntegrityError):
            store.load_master(secret)
        return
    ident = store.load_master(secret)
    assert ident.private.hex() == fields["private key"]
    assert ident.public.hex() == fields["public key"]
    assert ident.recipient == "master:" + json.loads(body)["id"]
    assert fields["master file"] == f"master-{keywrap.key_id(ident.public)}.json"


EXAMPLES = ["example_instance", "example_instance_self"]


def _example_instance(tmp_path: Path, name: str) -> tuple[dict[str, str], Path, Path, Path]:
    fields, ct = parse(VECTORS / f"{name}.txt")
    root = tmp_path / "keys"
    (root / Path(fields["key file"]).parent).mkdir(parents=True)
    (root / fields["master file"]).write_text(fields["master json"])
    (root / fields["key file"]).write_text(fields["key file json"])
    secret = tmp_path / "secret"
    secret.write_text(fields["secret file"] + "\n")
    blob = tmp_path / "file.bin"
    blob.write_bytes(ct)
    return fields, secret, root, blob


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_instance_with_davserver(tmp_path: Path, name: str):
    fields, secret, root, blob = _example_instance(tmp_path, name)
    suite = json.loads(fields["key file json"])["wraps"][0]["suite"]
    assert suite == ("self" if name.endswith("_self") else "x25519")
    store = KeyStore(str(root), fsync=False)
    ident = store.load_master(read_secret(str(secret)))
    data = blob.read_bytes()
    fid = header.parse(data).file_id
    assert fid.hex() == fields["file id"]
    key = store.unwrap(fid, [ident])
    assert key.hex() == fields["data key"]
    _, plain = _read_all(data, key)
    assert hashlib.sha256(plain).hexdigest() == fields["plaintext sha256"]


def _snippet() -> str:
    text = FORMAT_MD.read_text()
    section = text.split("## Decrypting by hand", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python block in the 'Decrypting by hand' section"
    return m.group(1)


@pytest.mark.parametrize("name", EXAMPLES)
def test_format_md_snippet_decrypts_example(tmp_path: Path, name: str):
    """The hand decryptor printed in docs/FORMAT.md works, with cryptography alone."""
    code = _snippet()
    assert "davserver" not in re.sub(r'b?"[^"]*"', "", code), "snippet must not import davserver"
    assert len(code.splitlines()) <= 40
    fields, secret, root, blob = _example_instance(tmp_path, name)
    script = tmp_path / "decrypt.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script), str(secret), str(root), str(blob)],
                         capture_output=True, check=True, cwd=tmp_path).stdout
    assert hashlib.sha256(out).hexdigest() == fields["plaintext sha256"]
    # ...and it refuses a truncated file (last chunk removed) with a non-zero exit.
    stride = (1 << int(fields["chunk shift"])) + 16
    blob.write_bytes(blob.read_bytes()[: 64 + 3 * stride])
    bad = subprocess.run([sys.executable, str(script), str(secret), str(root), str(blob)],
                         capture_output=True, cwd=tmp_path)
    assert bad.returncode != 0


def test_generator_is_reproducible(tmp_path: Path, capsys):
    """Re-running generate.py rewrites every vector byte for byte (randomized HPKE and
    sealed-key bodies are kept because the committed ones still decrypt)."""
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = tmp_path / "vectors"
    shutil.copytree(VECTORS, out, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    gen.HERE = out
    assert gen.main() == 0
    produced = sorted(p.name for p in out.glob("*.txt"))
    assert produced == [p.name for p in ALL]
    for p in ALL:
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
