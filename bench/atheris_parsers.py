#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers tests/test_fuzz_parsers.py
checks with hypothesis: the same targets and the same properties, driven by coverage
instead of by strategies, for long unattended runs.

    pip install atheris            # a wheel exists for CPython 3.11 on x86-64 Linux
    bench/atheris_parsers.py --target stream -atheris_runs=200000
    bench/atheris_parsers.py --target all -max_total_time=600 corpus/

Targets: header, stream (mutated ciphertext: an integrity error or the exact original
plaintext, never other bytes), keyfile, masterfile, propfind (FastPropfind's body parser),
xmlbody (WsgiDAV's parse_xml_body, used for PROPPATCH/LOCK), range (dav/range_guard.py in front
of WsgiDAV's Range parser), all (the input's first byte picks one). Arguments after the
target go to libFuzzer (-atheris_runs=N, -max_total_time=S, -timeout=S for hangs, a corpus
directory). A property violation or an undocumented exception stops the run with the
input that caused it (libFuzzer writes it to crash-<sha1>); exit status non-zero.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from wsgidav import util as wsgidav_util
    from wsgidav.dav_error import DAVError

    from davserver.crypto import header as hdr
    from davserver.crypto import keywrap, stream
    from davserver.dav import range_guard
    from davserver.dav.propfind import FastPropfind, _Fallback
    from davserver.errors import FormatError, IntegrityError, KeyNotFound
    from davserver.vault.keystore import Identity, KeyStore

SHIFT = hdr.MIN_CHUNK_SHIFT
DATA_KEY = bytes(range(32))
FILE_ID = bytes(range(100, 116))
_PLAIN = bytes(range(256)) * 40  # 10 KiB: three 4 KiB chunks
_BLOB = stream.encrypt_bytes(_PLAIN, DATA_KEY, FILE_ID, SHIFT)
_KEYS = tempfile.mkdtemp(prefix="atheris-keys-")
_STORE = KeyStore(_KEYS, fsync=False, cache_size=0)
_PRIV, _PUB = keywrap.new_keypair("x25519")
_IDENT = Identity("master:abc", "x25519", _PRIV, _PUB)
_MASTER_ROOT = tempfile.mkdtemp(prefix="atheris-master-")


def _header(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 128))
    try:
        hdr.parse(raw)
    except FormatError:
        return
    try:
        hdr.verify(raw, DATA_KEY)
    except (FormatError, IntegrityError):
        return
    raise AssertionError("a header nobody sealed verified")


def _stream(fdp: atheris.FuzzedDataProvider) -> None:
    """Edit the valid ciphertext (overwrite, cut, insert) as the input says."""
    blob = bytearray(_BLOB)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 2)
        pos = fdp.ConsumeIntInRange(0, len(blob))
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        if op == 0:
            blob[pos:pos + len(data)] = data
        elif op == 1:
            del blob[pos:pos + fdp.ConsumeIntInRange(1, 5000)]
        else:
            blob[pos:pos] = data
    bad = bytes(blob)
    a = fdp.ConsumeIntInRange(0, len(_PLAIN))
    b = fdp.ConsumeIntInRange(a, len(_PLAIN))
    try:
        r = stream.ChunkReader(lambda off, n: bad[off:off + n], len(bad), DATA_KEY)
        f = stream.PlaintextFile(r)
        f.seek(a)
        got = f.read(b - a)
    except (IntegrityError, FormatError):
        return
    if got != _PLAIN[a:b]:
        raise AssertionError(f"mutated ciphertext decrypted to other bytes at {a}..{b}")


def _keyfile(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    if fdp.ConsumeBool():  # steer towards the real format
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = raw.decode("latin-1")
        raw = json.dumps({"format": "davserver-key/1", "file_id": FILE_ID.hex(),
                          "wraps": doc if isinstance(doc, list) else [doc]}).encode()
    path = _STORE._path(FILE_ID)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(raw)
    try:
        _STORE.unwrap(FILE_ID, [_IDENT])
    except (FormatError, IntegrityError, KeyNotFound):
        return
    raise AssertionError("a forged key file opened")


def _masterfile(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 400))
    with open(os.path.join(_MASTER_ROOT, "master-0123456789abcdef.json"), "wb") as f:
        f.write(raw)
    try:
        KeyStore(_MASTER_ROOT, fsync=False).load_master(b"s" * 32)
    except (FormatError, IntegrityError, KeyNotFound):
        return
    raise AssertionError("a forged master key file unlocked")


def _environ(body: bytes) -> dict:
    return {"REQUEST_METHOD": "PROPFIND", "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body)}


def _propfind(fdp: atheris.FuzzedDataProvider) -> None:
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    try:
        names = FastPropfind._request(object.__new__(FastPropfind), _environ(body))
    except _Fallback:
        return
    if names is not None and not all(isinstance(n, str) for n in names):
        raise AssertionError("property names that are not strings")
    if b"<!ENTITY" in body:
        raise AssertionError("a body declaring entities was parsed")


def _xmlbody(fdp: atheris.FuzzedDataProvider) -> None:
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2000))
    try:
        wsgidav_util.parse_xml_body(_environ(body))
    except DAVError as e:
        if not 400 <= e.value < 500:
            raise
        return
    if b"<!ENTITY" in body:
        raise AssertionError("a body declaring entities was parsed")


def _range(fdp: atheris.FuzzedDataProvider) -> None:
    value = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    size = fdp.ConsumeIntInRange(0, 1 << 40)
    environ = {"HTTP_RANGE": value}
    range_guard.drop_unusable(environ, size)
    if "HTTP_RANGE" not in environ:
        return
    try:
        found, _ = wsgidav_util.obtain_content_ranges(value, size)
    except DAVError as e:
        if e.value != 416:
            raise
        return
    for start, end, length in found:
        if not (0 <= start <= end < size and length == end - start + 1):
            raise AssertionError(f"range {start}-{end} ({length}) for size {size}")


TARGETS = {"header": _header, "stream": _stream, "keyfile": _keyfile,
           "masterfile": _masterfile, "propfind": _propfind, "xmlbody": _xmlbody,
           "range": _range}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    args, rest = p.parse_known_args()
    order = list(TARGETS.values())

    def one_input(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if args.target == "all":
            order[fdp.ConsumeIntInRange(0, len(order) - 1)](fdp)
        else:
            TARGETS[args.target](fdp)

    atheris.Setup([sys.argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
