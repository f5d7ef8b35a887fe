"""Property tests (hypothesis) for every parser that reads bytes an attacker controls.

Parsers: the encrypted file's header and chunk stream (crypto/header.py, stream.py), the
key files (vault/keystore.py, crypto/keywrap.py), the XML request bodies (dav/propfind.py's
FastPropfind, WsgiDAV's parse_xml_body through defusedxml for PROPPATCH and LOCK) and the
Range header (dav/range_guard.py in front of WsgiDAV's obtain_content_ranges).

Properties: no exception but the documented ones (davserver/errors.py classes, WsgiDAV's
DAVError with a 4xx status, the fall-back signal); no hang (the hypothesis deadline, set
far above any honest run, fails an example that takes seconds); and never plaintext from
unauthenticated input: any mutation of a valid encrypted file either fails with
IntegrityError/FormatError or yields exactly the original plaintext, never other bytes.

Runs: a short one in the suite (profile "ci"); HYPOTHESIS_PROFILE=fuzz-long with many more
examples from scripts/fuzz.sh. bench/atheris_parsers.py drives the same targets with
coverage-guided fuzzing.
"""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from wsgidav import util as wsgidav_util
from wsgidav.dav_error import DAVError

from davserver.crypto import header as hdr
from davserver.crypto import keywrap, stream
from davserver.dav import range_guard
from davserver.dav.propfind import FastPropfind, _Fallback
from davserver.errors import DavServerError, FormatError, IntegrityError, KeyNotFound
from davserver.vault.keystore import Identity, KeyStore, Recipient

settings.register_profile(
    "ci", max_examples=60, deadline=10_000, database=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile(
    "fuzz-long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")), deadline=10_000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHIFT = hdr.MIN_CHUNK_SHIFT  # 4 KiB chunks: multi-chunk files stay small
CHUNK = 1 << SHIFT
DATA_KEY = bytes(range(32))
FILE_ID = bytes(range(100, 116))


def encrypt(plain: bytes) -> bytes:
    return stream.encrypt_bytes(plain, DATA_KEY, FILE_ID, SHIFT)


def read_back(blob: bytes, key: bytes = DATA_KEY, start: int = 0,
              end: int | None = None) -> bytes:
    """Decrypt [start, end) the way the server does (header first, then chunks)."""
    r = stream.ChunkReader(lambda off, n: blob[off:off + n], len(blob), key)
    return b"".join(r.iter_plaintext(start, end))


# --- header and chunk stream ------------------------------------------------------------

@given(st.binary(max_size=200))
@example(b"DAVSSE\x01\x01\x12" + bytes(7) + bytes(48))
def test_header_parse_accepts_or_raises_format_error(raw):
    try:
        h = hdr.parse(raw)
    except FormatError:
        return
    assert raw[:6] == hdr.MAGIC and hdr.MIN_CHUNK_SHIFT <= h.chunk_shift <= hdr.MAX_CHUNK_SHIFT
    with pytest.raises((IntegrityError, FormatError)):
        hdr.verify(raw, DATA_KEY)  # a random MAC never verifies


@given(st.integers(min_value=-10, max_value=1 << 40),
       st.integers(min_value=hdr.MIN_CHUNK_SHIFT, max_value=hdr.MAX_CHUNK_SHIFT))
def test_plaintext_size_inverts_ciphertext_size_or_refuses(cipher_size, shift):
    try:
        plain = stream.plaintext_size(cipher_size, shift)
    except FormatError:
        return
    assert plain >= 0 and stream.ciphertext_size(plain, shift) == cipher_size


@given(st.binary(max_size=3 * CHUNK + 100))
def test_arbitrary_bytes_never_decrypt(blob):
    """Bytes nobody encrypted with the key (magic forced, so the parser gets further)."""
    blob = hdr.MAGIC + blob[6:] if len(blob) >= 6 else blob
    with pytest.raises((IntegrityError, FormatError)):
        read_back(blob)


_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(min_value=0)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=CHUNK + 40)),
    st.tuples(st.just("splice"), st.integers(min_value=0), st.integers(min_value=0)),
    st.tuples(st.just("swap_chunks"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("drop_chunk"), st.integers(0, 3)),
    st.tuples(st.just("other_file_chunk"), st.integers(0, 3)),
)


def mutate(blob: bytes, mutation, other: bytes, same_key: bytes) -> bytes:
    """``other``: another file under its own data key (as every file version has);
    ``same_key``: another file ID under our data key (chunks moved between files)."""
    kind = mutation[0]
    stride = CHUNK + stream.TAG_BYTES
    chunks = [blob[hdr.HEADER_BYTES + i:hdr.HEADER_BYTES + i + stride]
              for i in range(0, len(blob) - hdr.HEADER_BYTES, stride)]
    if kind == "flip":
        pos = mutation[1] % len(blob)
        return blob[:pos] + bytes([blob[pos] ^ mutation[2]]) + blob[pos + 1:]
    if kind == "truncate":
        return blob[:mutation[1] % len(blob)]
    if kind == "extend":
        return blob + mutation[1]
    if kind == "splice":  # a span of another file's bytes over ours, at the same offset
        a, b = sorted((mutation[1] % len(blob), mutation[2] % len(blob)))
        return blob[:a] + other[a:b + 1] + blob[b + 1:]
    if kind == "swap_chunks":
        i, j = mutation[1] % len(chunks), mutation[2] % len(chunks)
        chunks[i], chunks[j] = chunks[j], chunks[i]
        return blob[:hdr.HEADER_BYTES] + b"".join(chunks)
    if kind == "drop_chunk":
        del chunks[mutation[1] % len(chunks)]
        return blob[:hdr.HEADER_BYTES] + b"".join(chunks)
    # a chunk of another file (same key, other file ID) put in place of one of ours
    theirs = [same_key[hdr.HEADER_BYTES + i:hdr.HEADER_BYTES + i + stride]
              for i in range(0, len(same_key) - hdr.HEADER_BYTES, stride)]
    i = mutation[1] % len(chunks)
    chunks[i] = theirs[i % len(theirs)]
    return blob[:hdr.HEADER_BYTES] + b"".join(chunks)


@given(plain=st.binary(max_size=3 * CHUNK + 50), mutation=_MUTATIONS,
       window=st.tuples(st.integers(min_value=0), st.integers(min_value=0)))
def test_mutated_ciphertext_never_yields_other_plaintext(plain, mutation, window):
    """Any mutation of a valid file: IntegrityError/FormatError, or the exact original
    bytes (a mutation that changes nothing, e.g. swapping a chunk with itself)."""
    blob = encrypt(plain)
    other = stream.encrypt_bytes(bytes(len(plain)), bytes(32), FILE_ID, SHIFT)
    same_key = stream.encrypt_bytes(bytes(len(plain)), DATA_KEY, bytes(16), SHIFT)
    bad = mutate(blob, mutation, other, same_key)
    # the whole file, as a GET reads it
    try:
        got = read_back(bad)
    except (IntegrityError, FormatError):
        pass
    else:
        assert got == plain
    # a Range read through the seekable file object (verifies the final chunk first)
    a, b = sorted((window[0] % (len(plain) + 1), window[1] % (len(plain) + 1)))
    try:
        r = stream.ChunkReader(lambda off, n: bad[off:off + n], len(bad), DATA_KEY)
        f = stream.PlaintextFile(r)
        f.seek(a)
        got = f.read(b - a)
    except (IntegrityError, FormatError):
        return
    assert got == plain[a:b]


@given(st.binary(max_size=2 * CHUNK), st.binary(min_size=32, max_size=32))
def test_wrong_key_never_decrypts(plain, key):
    assume(key != DATA_KEY)
    with pytest.raises(IntegrityError):
        read_back(encrypt(plain), key)


# --- key files --------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids,
                                                               max_size=4),
    max_leaves=12)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _key_docs(file_id_hex: str):
    """JSON documents near the real format (so the parser gets past its first checks)."""
    wrap = st.fixed_dictionaries({}, optional={
        "to": st.sampled_from(["master:abc", "user:alice"]) | _JSON,
        "suite": st.sampled_from([keywrap.SELF_SUITE, "x25519", "nope"]) | _JSON,
        "sealed": st.binary(max_size=120).map(_b64) | _JSON,
    })
    return st.fixed_dictionaries({}, optional={
        "format": st.just("davserver-key/1") | _JSON,
        "file_id": st.just(file_id_hex) | _JSON,
        "wraps": st.lists(wrap | _JSON, max_size=3) | _JSON,
    }) | _JSON


@pytest.fixture(scope="module")
def keystore(tmp_path_factory):
    ks = KeyStore(str(tmp_path_factory.mktemp("keys")), fsync=False, cache_size=0)
    priv, pub = keywrap.new_keypair("x25519")
    ident = Identity("master:abc", "x25519", priv, pub)
    return ks, ident


def _write_key_file(ks: KeyStore, file_id: bytes, raw: bytes) -> None:
    path = ks._path(file_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(raw)


@given(doc=_key_docs(FILE_ID.hex()), garbage=st.none() | st.binary(max_size=200))
def test_key_file_parser_raises_only_documented_errors(keystore, doc, garbage):
    ks, ident = keystore
    raw = garbage if garbage is not None else json.dumps(doc).encode()
    _write_key_file(ks, FILE_ID, raw)
    try:
        wraps = ks.load(FILE_ID)
    except (FormatError, KeyNotFound):
        return
    assert all(isinstance(w.sealed, bytes) for w in wraps)
    with pytest.raises((FormatError, IntegrityError, KeyNotFound)):
        ks.unwrap(FILE_ID, [ident])  # nothing in a forged file opens


@given(sealed=st.binary(max_size=200), suite=st.sampled_from([keywrap.SELF_SUITE, "x25519"]))
def test_forged_wraps_never_open(keystore, sealed, suite):
    ks, ident = keystore
    with pytest.raises((FormatError, IntegrityError)):
        keywrap.open_wrap(suite, ident.private, sealed, FILE_ID)


@given(flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_tampered_real_key_file_opens_to_the_key_or_fails(keystore, flip, bit):
    """A bit flipped anywhere in a genuine key file: the right data key or an error."""
    ks, ident = keystore
    fid = bytes(range(1, 17))
    ks.delete(fid)
    ks.wrap_new(fid, DATA_KEY, [Recipient(ident.recipient, ident.suite, ident.public,
                                          ident.private)])
    with open(ks._path(fid), "rb") as f:
        raw = bytearray(f.read())
    raw[flip % len(raw)] ^= 1 << bit
    _write_key_file(ks, fid, bytes(raw))
    try:
        key = ks.unwrap(fid, [ident])
    except (FormatError, IntegrityError, KeyNotFound):
        return
    assert key == DATA_KEY


@given(doc=st.fixed_dictionaries({}, optional={
    "format": st.just("davserver-master/1") | _JSON,
    "id": st.text(max_size=16) | _JSON,
    "suite": st.just("x25519") | _JSON,
    "public": st.binary(max_size=40).map(_b64) | _JSON,
    "private_sealed": st.binary(max_size=80).map(_b64) | _JSON}) | _JSON,
    garbage=st.none() | st.binary(max_size=100))
def test_master_key_file_parser_raises_only_documented_errors(tmp_path_factory, doc, garbage):
    ks = KeyStore(str(tmp_path_factory.mktemp("master")), fsync=False)
    raw = garbage if garbage is not None else json.dumps(doc).encode()
    with open(os.path.join(ks.root, "master-0123456789abcdef.json"), "wb") as f:
        f.write(raw)
    with pytest.raises(DavServerError) as e:
        ks.load_master(b"s" * 32)  # a forged master file never unlocks
    assert isinstance(e.value, (FormatError, IntegrityError, KeyNotFound))


# --- XML request bodies ------------------------------------------------------------------

_TAGS = st.sampled_from(["propfind", "prop", "allprop", "propname", "include",
                         "propertyupdate", "set", "remove", "lockinfo", "lockscope",
                         "exclusive", "locktype", "write", "owner", "getetag", "x"])
_NS = st.sampled_from(['xmlns="DAV:"', 'xmlns:d="DAV:"', 'xmlns="urn:x"', ""])


@st.composite
def _xml(draw, depth=0):
    tag = draw(_TAGS)
    kids = draw(st.lists(_xml(depth + 1), max_size=3)) if depth < 4 else []
    text = draw(st.text(max_size=8).map(lambda t: t.replace("<", "&lt;").replace("&", "&amp;")))
    ns = draw(_NS) if depth == 0 else ""
    return f"<{tag} {ns}>{text}{''.join(kids)}</{tag}>"


_ENTITIES = [  # entity tricks: never expanded, the body is refused
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<propfind xmlns="DAV:"><prop>&x;</prop></propfind>',
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY % x SYSTEM "http://127.0.0.1:1/x">%x;]>'
    b'<propfind xmlns="DAV:"/>',
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;'
    b'&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<propfind xmlns="DAV:"><prop>&c;</prop></propfind>',
]
_BIG = [  # parsed or refused, but in bounded time and memory, and never a crash
    b"<propfind xmlns='DAV:'>" + b"<prop>" * 5000 + b"</prop>" * 5000 + b"</propfind>",
    b'<propfind xmlns="DAV:"><prop x="' + b"a" * 100_000 + b'"/></propfind>',
    b"\xff\xfe<propfind/>",
]
_HOSTILE = _ENTITIES + _BIG

_BODIES = st.one_of(
    _xml().map(lambda s: s.encode()),
    _xml().map(lambda s: ('<?xml version="1.0" encoding="utf-8"?>' + s).encode()),
    st.binary(max_size=300),
    st.sampled_from(_HOSTILE),
)


def _environ(body: bytes, method: str = "PROPFIND") -> dict:
    return {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body)}


@given(_BODIES)
def test_fast_propfind_body_parses_or_falls_back(body):
    environ = _environ(body)
    try:
        names = FastPropfind._request(object.__new__(FastPropfind), environ)
    except _Fallback:
        assert environ["wsgi.input"].read() == body  # WsgiDAV gets the same bytes
        return
    assert names is None or all(isinstance(n, str) and n.startswith("{") for n in names)


@pytest.mark.parametrize("body", _ENTITIES, ids=["xxe", "parameter-entity", "billion-laughs"])
def test_entity_declarations_are_refused(body):
    with pytest.raises(_Fallback):
        FastPropfind._request(object.__new__(FastPropfind), _environ(body))
    with pytest.raises(DAVError) as e:
        wsgidav_util.parse_xml_body(_environ(body))
    assert 400 <= e.value.value < 500


@pytest.mark.parametrize("body", _BIG, ids=["deep-nesting", "huge-attribute", "bad-utf"])
def test_big_or_broken_xml_is_parsed_or_refused(body):
    try:
        names = FastPropfind._request(object.__new__(FastPropfind), _environ(body))
    except _Fallback:
        pass
    else:
        assert names is None or len(names) <= 1
    try:
        wsgidav_util.parse_xml_body(_environ(body))
    except DAVError as e:
        assert 400 <= e.value < 500


@given(_BODIES, st.sampled_from(["PROPPATCH", "LOCK", "PROPFIND"]))
def test_wsgidav_xml_body_parses_or_answers_4xx(body, method):
    """What WsgiDAV does with the body of a PROPPATCH/LOCK (defusedxml underneath)."""
    try:
        root = wsgidav_util.parse_xml_body(_environ(body, method))
    except DAVError as e:
        assert 400 <= e.value < 500, e
        return
    assert root is None or isinstance(root.tag, str)
    if b"<!ENTITY" in body:
        pytest.fail("a body declaring entities was accepted")


# --- Range header ------------------------------------------------------------------------

_NUM = st.one_of(st.integers(0, 300).map(str), st.integers(0, 10**30).map(str),
                 st.text("0123456789", min_size=1, max_size=6000))
_SPEC = st.one_of(st.tuples(_NUM, st.just("-"), _NUM | st.just("")).map("".join),
                  st.tuples(st.just("-"), _NUM).map("".join),
                  st.text("0123456789-, ", max_size=12))
_RANGE = st.one_of(
    st.lists(_SPEC, min_size=1, max_size=6).map(lambda xs: "bytes=" + ",".join(xs)),
    st.lists(_SPEC, min_size=17, max_size=40).map(lambda xs: "bytes=" + ",".join(xs)),
    st.text(max_size=40),
    st.integers(17, 20000).map(lambda n: "bytes=" + ",".join(f"{2 * i}-{2 * i}"
                                                             for i in range(n))),
)


@given(_RANGE, st.integers(0, 1 << 40))
@example("bytes=" + "9" * 5000 + "-", 100)
@example("bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(5000)), 10**6)
def test_range_header_is_parsed_safely_or_ignored(value, size):
    environ = {"HTTP_RANGE": value}
    range_guard.drop_unusable(environ, size)
    if "HTTP_RANGE" not in environ:
        return  # ignored: the whole file is served (RFC 9110 14.2)
    assert len(value) < 20 * 40
    try:
        found, _total = wsgidav_util.obtain_content_ranges(value, size)
    except DAVError as e:
        assert e.value == 416
        return
    for start, end, length in found:
        assert 0 <= start <= end < size and length == end - start + 1 > 0


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
@example(1, 0, 2)  # WsgiDAV alone reads "1-0" as the suffix "-0": an empty 206
def test_single_range_means_what_rfc_9110_says(a, b, size):
    value = f"bytes={a}-{b}"
    if a > b:  # invalid (RFC 9110 14.1.1): the header is ignored, the whole file is sent
        assert not range_guard.usable(value)
        return
    assert range_guard.usable(value)
    try:
        found, _ = wsgidav_util.obtain_content_ranges(value, size)
    except DAVError as e:
        assert e.value == 416 and a >= size
        return
    assert found == [(a, min(b, size - 1), min(b, size - 1) - a + 1)]


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_suffix_range_is_the_last_bytes(n, size):
    value = f"bytes=-{n}"
    if n == 0:
        assert not range_guard.usable(value)
        return
    found, _ = wsgidav_util.obtain_content_ranges(value, size)
    start = max(0, size - n)
    assert found == [(start, size - 1, size - start)]
