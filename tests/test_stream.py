"""Unit tests of the chunked stream (writer, reader, size arithmetic) and key wrapping.

The byte-level format is pinned by tests/test_vectors.py; here we test edge cases and
behaviour at scale (a 3 GiB stream, random access over a 64 MiB file on disk).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from davserver.crypto import header as hdr
from davserver.crypto import keywrap, primitives, stream
from davserver.errors import FormatError, IntegrityError, KeyNotFound
from davserver.vault.keystore import KeyStore, Recipient, Wrap

SHIFT = 12
CS = 1 << SHIFT
STRIDE = CS + stream.TAG_BYTES
KEY = bytes(range(32))
FID = bytes(range(100, 116))


def pattern(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def enc(plain: bytes, shift: int = SHIFT, key: bytes = KEY, fid: bytes = FID) -> bytes:
    return stream.encrypt_bytes(plain, key, fid, shift)


def reader(data: bytes, key: bytes = KEY) -> stream.ChunkReader:
    return stream.ChunkReader(lambda o, n: data[o:o + n], len(data), key)


def decrypt(data: bytes, key: bytes = KEY) -> bytes:
    return b"".join(reader(data, key).iter_plaintext())


def flip(data: bytes, offset: int) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x80
    return bytes(b)


# --- writer / reader edge cases -----------------------------------------------------------


def test_empty_file_is_one_final_empty_chunk():
    ct = enc(b"")
    assert len(ct) == hdr.HEADER_BYTES + stream.TAG_BYTES == 80
    r = reader(ct)
    assert (r.plain_size, r.chunks) == (0, 1)
    assert r.chunk(0) == b""
    assert decrypt(ct) == b""
    f = stream.PlaintextFile(r)
    assert f.read() == b"" and f.read(10) == b""
    # Even an empty file's only chunk is authenticated on read.
    bad = flip(ct, len(ct) - 1)
    with pytest.raises(IntegrityError):
        decrypt(bad)
    with pytest.raises(IntegrityError):
        stream.PlaintextFile(reader(bad)).read()


def test_exactly_one_chunk_has_no_trailing_empty_chunk():
    p = pattern(CS)
    ct = enc(p)
    assert len(ct) == 64 + CS + 16
    r = reader(ct)
    assert (r.plain_size, r.chunks) == (CS, 1)
    assert decrypt(ct) == p


def test_one_byte_past_a_chunk():
    p = pattern(CS + 1)
    ct = enc(p)
    assert len(ct) == 64 + STRIDE + 1 + 16
    r = reader(ct)
    assert (r.plain_size, r.chunks) == (CS + 1, 2)
    assert r.chunk(1) == p[-1:]
    assert decrypt(ct) == p


@pytest.mark.parametrize("piece", [1, 7, CS - 1, CS, CS + 1, 3 * CS + 5])
def test_write_piece_size_does_not_change_the_output(piece: int):
    p = pattern(3 * CS + 5)
    calls: list[bytes] = []
    w = stream.StreamWriter(calls.append, KEY, FID, SHIFT)
    for i in range(0, len(p), piece):
        assert w.write(p[i:i + piece]) == len(p[i:i + piece])
    w.finish()
    w.finish()  # idempotent
    assert [len(c) for c in calls] == [64, STRIDE, STRIDE, STRIDE, 5 + 16]
    assert b"".join(calls) == enc(p)
    assert (w.plain_bytes, w.cipher_bytes) == (len(p), stream.ciphertext_size(len(p), SHIFT))
    assert decrypt(b"".join(calls)) == p
    with pytest.raises(ValueError):
        w.write(b"x")


@pytest.mark.parametrize("piece", [CS - 1, CS, 2 * CS, 4 * CS, 4 * CS + 3])
def test_a_reused_receive_buffer_does_not_change_the_output(piece: int):
    """The direct PUT path receives every block into one buffer it overwrites after each
    write: chunks the writer keeps past a call must be its own copies."""
    p = pattern(9 * CS + 5)
    calls: list[bytes] = []
    w = stream.StreamWriter(calls.append, KEY, FID, SHIFT)
    buf = bytearray(piece)
    view = memoryview(buf)
    for i in range(0, len(p), piece):
        n = len(p[i:i + piece])
        buf[:n] = p[i:i + piece]
        w.write(view[:n])
        buf[:] = b"\xff" * piece  # the caller reuses its buffer
    w.finish()
    assert b"".join(calls) == enc(p)


def test_empty_writes_are_harmless():
    calls: list[bytes] = []
    w = stream.StreamWriter(calls.append, KEY, FID, SHIFT)
    for chunk in (b"", b"a", b"", b"b" * CS, b""):
        w.write(chunk)
    w.finish()
    assert b"".join(calls) == enc(b"a" + b"b" * CS)


def test_same_plaintext_different_key_and_file_id():
    assert keywrap.new_file_id() != keywrap.new_file_id()
    assert keywrap.new_data_key() != keywrap.new_data_key()
    assert len(keywrap.new_file_id()) == 16 and len(keywrap.new_data_key()) == 32
    p = pattern(2 * CS)
    a = enc(p, key=keywrap.new_data_key(), fid=keywrap.new_file_id())
    b = enc(p, key=keywrap.new_data_key(), fid=keywrap.new_file_id())
    assert hdr.parse(a).file_id != hdr.parse(b).file_id
    assert a[32:] != b[32:] and len(a) == len(b)


# --- size arithmetic ----------------------------------------------------------------------


def test_size_round_trip_every_small_size():
    for n in range(0, 3 * CS + 6):
        size = stream.ciphertext_size(n, SHIFT)
        assert size == 64 + n + 16 * max(1, -(-n // CS))
        assert stream.plaintext_size(size, SHIFT) == n


def test_plaintext_size_rejects_every_impossible_size():
    limit = stream.ciphertext_size(4 * CS + 5, SHIFT)
    valid = {stream.ciphertext_size(n, SHIFT) for n in range(4 * CS + 6)}
    for size in range(limit + 1):
        if size in valid:
            assert stream.ciphertext_size(stream.plaintext_size(size, SHIFT), SHIFT) == size
        else:
            with pytest.raises(FormatError):
                stream.plaintext_size(size, SHIFT)
    # sizes just below the smallest file
    for size in (-1, 0, 63, 64, 79):
        with pytest.raises(FormatError):
            stream.plaintext_size(size, SHIFT)


@pytest.mark.parametrize("shift", range(hdr.MIN_CHUNK_SHIFT, hdr.MAX_CHUNK_SHIFT + 1))
def test_impossible_sizes_at_chunk_boundaries(shift: int):
    stride = (1 << shift) + 16
    for k in (1, 2, 1000):
        full = 64 + k * stride
        assert stream.plaintext_size(full, shift) == k << shift
        for extra in range(1, 17):  # a last chunk of 1..16 bytes holds no plaintext
            with pytest.raises(FormatError):
                stream.plaintext_size(full + extra, shift)
        assert stream.plaintext_size(full + 17, shift) == (k << shift) + 1


@pytest.mark.parametrize("n", [2**30, 2**30 + 1, 3 * 2**30 + 5, 4 * 2**30, 2**40, 2**40 - 1])
@pytest.mark.parametrize("shift", [12, 18, 24])
def test_size_round_trip_large(n: int, shift: int):
    chunks = -(-n // (1 << shift))
    size = stream.ciphertext_size(n, shift)
    assert size == 64 + n + 16 * chunks
    assert stream.plaintext_size(size, shift) == n
    if n % (1 << shift) == 0:  # full final chunk: 1..16 more bytes cannot be a chunk
        for extra in (1, 15, 16):
            with pytest.raises(FormatError):
                stream.plaintext_size(size + extra, shift)
        assert stream.plaintext_size(size + 17, shift) == n + 1


def test_overhead_of_one_gib_at_default_shift():
    overhead = stream.ciphertext_size(2**30) - 2**30
    assert overhead == 64 + 16 * 4096 == 65600
    assert round(100 * overhead / 2**30, 4) == 0.0061


# --- random access ------------------------------------------------------------------------


def _offsets(size: int, cs: int, rng: random.Random, n_random: int) -> list[tuple[int, int]]:
    points = {0, 1, size - 1, size, size + 10}
    for k in range(size // cs + 1):
        points |= {k * cs - 1, k * cs, k * cs + 1}
    points = sorted(p for p in points if 0 <= p <= size + 10)
    pairs = [(a, b) for a in points for b in points if a <= b]
    pairs += [tuple(sorted((rng.randrange(size + 1), rng.randrange(size + 1))))
              for _ in range(n_random)]
    return pairs


def test_random_access_equals_slicing():
    p = pattern(5 * CS + 123)
    ct = enc(p)
    r = reader(ct)
    f = stream.PlaintextFile(r)
    rng = random.Random(7)
    for a, b in _offsets(len(p), CS, rng, 300):
        assert b"".join(r.iter_plaintext(a, b)) == p[a:b], (a, b)
        assert f.seek(a) == a
        assert f.read(b - a) == p[a:b], (a, b)
        assert f.tell() == (a if a >= len(p) else min(b, len(p)))
    assert b"".join(r.iter_plaintext()) == p
    assert b"".join(r.iter_plaintext(CS + 3)) == p[CS + 3:]
    # whence 1 and 2, read(-1), read past the end
    f.seek(-10, 2)
    assert f.read() == p[-10:]
    f.seek(100)
    f.seek(50, 1)
    assert f.read(7) == p[150:157]
    assert f.read(-1) == p[157:]
    assert f.read(5) == b""
    with pytest.raises(ValueError):
        f.seek(-1)
    with f:
        pass
    assert f.closed


def test_plaintext_file_checks_final_chunk_before_serving_the_middle():
    p = pattern(3 * CS + 10)
    ct = enc(p)
    truncated = ct[: 64 + 3 * STRIDE]  # last chunk removed, at a chunk boundary
    r = reader(truncated)
    assert r.plain_size == 3 * CS  # a possible size: only the final flag betrays it
    assert r.chunk(1) == p[CS:2 * CS]  # middle chunks are individually authentic...
    f = stream.PlaintextFile(r)
    for pos in (1, CS, 2 * CS + 5):
        with pytest.raises(IntegrityError):
            f.seek(pos)  # ...so the final chunk is checked on any non-zero seek
    with pytest.raises(IntegrityError):
        stream.PlaintextFile(reader(truncated)).read()
    # The same for an extended file (a copy of chunk 0 appended after the final chunk).
    full = enc(pattern(3 * CS))
    extended = full + full[64:64 + STRIDE]
    g = stream.PlaintextFile(reader(extended))
    with pytest.raises(IntegrityError):
        g.seek(CS + 1)


def test_reader_rejects_short_reads_and_bad_headers():
    p = pattern(2 * CS + 1)
    ct = enc(p)
    short = stream.ChunkReader(lambda o, n: ct[o:o + n - (o > 0)], len(ct), KEY)
    with pytest.raises(IntegrityError):
        short.chunk(0)
    with pytest.raises(IntegrityError):
        reader(ct, key=bytes(32))
    with pytest.raises(FormatError):
        reader(ct[:50])
    with pytest.raises(IndexError):
        reader(ct).chunk(3)


def _plain_block(counter: int, base: bytearray) -> bytearray:
    base[:8] = counter.to_bytes(8, "big")
    base[-8:] = (counter * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "big")
    return base


def test_three_gib_stream():
    """3 GiB + 5 bytes through the writer at the default chunk size, into a sink that keeps
    only a hash, a byte count, the sink call sizes, and the first and last chunks."""
    mib = 1 << 20
    total = 3 * 1024 * mib + 5
    shift = hdr.DEFAULT_CHUNK_SHIFT
    stride = (1 << shift) + 16
    data_key, fid = keywrap.new_data_key(), keywrap.new_file_id()
    base = bytearray(pattern(mib, seed=3))

    def run(piece_sizes: list[int]) -> tuple[str, int, dict[int, bytes], list[int]]:
        h = hashlib.sha256()
        state = {"count": 0}
        kept: dict[int, bytes] = {}
        odd_calls: list[int] = []

        def sink(b: bytes) -> None:
            h.update(b)
            if len(b) != stride:
                odd_calls.append(len(b))
            if state["count"] < 64 + stride or state["count"] >= expected - stride - 16:
                kept[state["count"]] = bytes(b)
            state["count"] += len(b)

        w = stream.StreamWriter(sink, data_key, fid)
        pending, k, written = bytearray(), 0, 0
        counter = 0
        while written < total:
            want = min(piece_sizes[k % len(piece_sizes)], total - written)
            k += 1
            while len(pending) < want:
                pending += _plain_block(counter, base)
                counter += 1
            w.write(memoryview(pending)[:want])
            del pending[:want]
            written += want
        w.finish()
        return h.hexdigest(), state["count"], kept, odd_calls

    expected = stream.ciphertext_size(total)
    digest, count, kept, odd = run([mib])
    assert count == expected == 64 + total + 16 * (3 * 4096 + 1)
    assert odd == [64, 5 + 16]  # header, then only full chunks, then the 5-byte final chunk
    assert stream.plaintext_size(count) == total

    # Authenticate the first and the last chunk through the normal reader, sparsely.
    def read_at(off: int, n: int) -> bytes:
        for start, b in kept.items():
            if start <= off and off + n <= start + len(b):
                return b[off - start:off - start + n]
        raise AssertionError(f"read of a region not kept: {off}+{n}")

    r = stream.ChunkReader(read_at, count, data_key)
    assert r.chunks == 3 * 4096 + 1
    assert r.chunk(0) == bytes(_plain_block(0, bytearray(base)))[: 1 << shift]
    assert r.chunk(r.chunks - 1) == bytes(_plain_block(3 * 1024, bytearray(base)))[:5]

    # Odd write sizes produce the identical 3 GiB ciphertext.
    digest2, count2, _, _ = run([7 * mib + 3, 1, (1 << shift) - 1, 5 * mib])
    assert (digest2, count2) == (digest, count)


def test_random_access_on_a_64_mib_file_on_disk(tmp_path: Path):
    size = 64 * (1 << 20) + 77
    p = pattern(size, seed=11)
    path = tmp_path / "blob"
    with open(path, "wb") as out:
        w = stream.StreamWriter(out.write, KEY, FID)
        for i in range(0, size, 3 * (1 << 20) + 1):
            w.write(p[i:i + 3 * (1 << 20) + 1])
        w.finish()
    assert path.stat().st_size == stream.ciphertext_size(size)
    fd = os.open(path, os.O_RDONLY)
    try:
        r = stream.ChunkReader(lambda o, n: os.pread(fd, n, o), path.stat().st_size, KEY)
        assert r.plain_size == size
        f = stream.PlaintextFile(r)
        rng = random.Random(5)
        cs = r.chunk_size
        for _ in range(200):
            a = rng.randrange(size)
            b = min(size, a + rng.choice([1, 100, cs - 1, cs, cs + 1, 3 * cs + 7, 2 << 20]))
            f.seek(a)
            assert f.read(b - a) == p[a:b]
            assert b"".join(r.iter_plaintext(a, b)) == p[a:b]
        f.seek(0)
        h = hashlib.sha256()
        while block := f.read(1 << 20):
            h.update(block)
        assert h.digest() == hashlib.sha256(p).digest()
    finally:
        os.close(fd)


# --- key wrapping and the key store -------------------------------------------------------

SUITES = list(primitives.SUITE_NAMES)


@pytest.mark.parametrize("suite", SUITES)
def test_hpke_wrap_round_trip(suite: str):
    private, public = keywrap.new_keypair(suite)
    assert primitives.public_from_private(suite, private) == public
    data_key, fid = keywrap.new_data_key(), keywrap.new_file_id()
    sealed = keywrap.wrap_data_key(suite, public, data_key, fid)
    assert keywrap.unwrap_data_key(suite, private, sealed, fid) == data_key
    assert keywrap.wrap_data_key(suite, public, data_key, fid) != sealed  # randomized


@pytest.mark.parametrize("suite", SUITES)
def test_wrap_for_one_file_id_does_not_open_for_another(suite: str):
    private, public = keywrap.new_keypair(suite)
    data_key = keywrap.new_data_key()
    a, b = keywrap.new_file_id(), keywrap.new_file_id()
    sealed = keywrap.wrap_data_key(suite, public, data_key, a)
    with pytest.raises(IntegrityError):
        keywrap.unwrap_data_key(suite, private, sealed, b)
    with pytest.raises(IntegrityError):
        keywrap.unwrap_data_key(suite, private, flip(sealed, len(sealed) - 1), a)
    other_private, _ = keywrap.new_keypair(suite)
    with pytest.raises(IntegrityError):
        keywrap.unwrap_data_key(suite, other_private, sealed, a)


@pytest.mark.parametrize("suite", SUITES)
def test_self_wrap_opens_only_with_its_private_key_and_file_id(suite: str):
    private, public = keywrap.new_keypair(suite)
    data_key = keywrap.new_data_key()
    a, b = keywrap.new_file_id(), keywrap.new_file_id()
    w = Recipient("master:x", suite, public, private).wrap(data_key, a)
    assert w.suite == keywrap.SELF_SUITE and len(w.sealed) == 12 + 32 + 16
    assert keywrap.open_wrap(w.suite, private, w.sealed, a) == data_key
    assert Recipient("master:x", suite, public, private).wrap(data_key, a).sealed != w.sealed
    other_private, _ = keywrap.new_keypair(suite)
    for bad in ((private, w.sealed, b), (private, flip(w.sealed, 20), a),
                (other_private, w.sealed, a)):
        with pytest.raises(IntegrityError):
            keywrap.open_wrap(w.suite, *bad)
    # without the private key the same recipient gets an HPKE wrap
    h = Recipient("master:x", suite, public).wrap(data_key, a)
    assert h.suite == suite
    assert keywrap.open_wrap(h.suite, private, h.sealed, a) == data_key


def test_x25519_wrap_layout():
    private, public = keywrap.new_keypair("x25519")
    assert len(private) == len(public) == 32
    sealed = keywrap.wrap_data_key("x25519", public, bytes(32), bytes(16))
    assert len(sealed) == 32 + 32 + 16


def test_unknown_suite_is_a_format_error():
    with pytest.raises(FormatError):
        keywrap.new_keypair("rsa")
    with pytest.raises(FormatError):
        keywrap.wrap_data_key("rsa", bytes(32), bytes(32), bytes(16))


def test_keystore_round_trip(tmp_path: Path):
    ks = KeyStore(str(tmp_path / "keys"), fsync=False)
    secret = os.urandom(32)
    master = ks.create_master(secret)
    fid, data_key = keywrap.new_file_id(), keywrap.new_data_key()
    assert not ks.exists(fid)
    ks.wrap_new(fid, data_key, [Recipient(master.recipient, master.suite, master.public)])
    assert ks.exists(fid)
    h = fid.hex()
    assert (tmp_path / "keys" / "files" / h[:2] / f"{h}.json").is_file()
    wraps = ks.load(fid)
    assert [(w.recipient, w.suite, len(w.sealed)) for w in wraps] == \
        [(master.recipient, "x25519", 80)]
    assert ks.unwrap(fid, [master]) == data_key
    assert list(ks.iter_file_ids()) == [fid]
    # A fresh store (no cache) reads the same from disk.
    ks2 = KeyStore(str(tmp_path / "keys"), fsync=False)
    assert ks2.unwrap(fid, [ks2.load_master(secret)]) == data_key
    # save/load keeps arbitrary wraps verbatim.
    fid2 = keywrap.new_file_id()
    ks.save(fid2, [Wrap("user:alice", "x25519", b"\x01" * 80)])
    assert ks.load(fid2) == [Wrap("user:alice", "x25519", b"\x01" * 80)]
    ks.delete(fid)
    ks.delete(fid)  # idempotent
    assert not ks.exists(fid)
    with pytest.raises(KeyNotFound):
        ks.unwrap(fid, [master])  # the cache was dropped too
    with pytest.raises(KeyNotFound):
        ks.unwrap(fid2, [master])  # no wrap for this principal


def test_keystore_key_file_must_belong_to_its_file_id(tmp_path: Path):
    ks = KeyStore(str(tmp_path), fsync=False)
    a, b = keywrap.new_file_id(), keywrap.new_file_id()
    ks.save(a, [Wrap("master:x", "x25519", b"s")])
    ha, hb = a.hex(), b.hex()
    dst = tmp_path / "files" / hb[:2] / f"{hb}.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes((tmp_path / "files" / ha[:2] / f"{ha}.json").read_bytes())
    with pytest.raises(FormatError):
        ks.load(b)


def test_master_key_right_and_wrong_secret(tmp_path: Path):
    ks = KeyStore(str(tmp_path), fsync=False)
    secret = os.urandom(32)
    created = ks.create_master(secret)
    assert [os.path.basename(f) for f in ks.master_files()] == \
        [f"master-{keywrap.key_id(created.public)}.json"]
    loaded = ks.load_master(secret)
    assert loaded == created
    assert loaded.recipient == f"master:{keywrap.key_id(created.public)}"
    with pytest.raises(IntegrityError):
        ks.load_master(os.urandom(32))
    with pytest.raises(KeyNotFound):
        ks.load_master(secret, kid="0000000000000000")
    assert ks.load_master(secret, kid=keywrap.key_id(created.public)) == created


def test_final_chunk_check_remembered_only_for_the_same_stored_size():
    """A version's final chunk is checked once per process; a truncated or extended copy
    of that same version (same file ID, other size) is still checked and refused."""
    p = pattern(3 * CS + 10)
    ct = enc(p)
    f = stream.PlaintextFile(reader(ct))
    f.seek(CS + 1)
    assert f.read(3) == p[CS + 1:CS + 4]
    reads = []
    r = reader(ct)
    real = r._read_at
    r._read_at = lambda off, n: reads.append(off) or real(off, n)
    stream.PlaintextFile(r).seek(5)
    assert reads == []  # remembered: the last chunk was not read again
    for cut in (ct[: 64 + 3 * STRIDE], ct + ct[64:64 + STRIDE]):
        with pytest.raises(IntegrityError):
            stream.PlaintextFile(reader(cut)).seek(1)
