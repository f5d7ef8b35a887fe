"""The key store: small JSON documents, in a directory readable without the database
(the default) or in the metadata database (``db:``, for nodes without a shared
filesystem); see vault.keydocs. The same names and bytes in both.

Layout under the key storage root::

    master-<key_id>.json          the master key pair, private half sealed under the
                                  instance secret (keywrap.master_kek)
    files/<id[0:2]>/<id>.json     wrapped data keys of one file, found by file ID (hex)

A key file lists one wrap per recipient ("master:<key_id>", later users and the recovery
key). Keys are addressed by the file ID that the encrypted file's header carries, never by
path, so a rename or move (through the server or behind its back) cannot orphan a key.
Wraps added to many files at once (sharing a folder) are appended to the key files, one
line each, instead of rewriting them: no temporary file, rename or folder fsync per file,
one flush per batch, and a crash can only leave a torn line, which readers skip, after a
document that is still whole. The next rewrite (``save``) folds the lines into the document.
JSON rather than a binary format so an operator can inspect and back it up with ordinary
tools; every secret in it is wrapped.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from davserver.crypto import keywrap
from davserver.errors import DavServerError, FormatError, IntegrityError, KeyNotFound
from davserver.vault.keydocs import DirKeyDocs, KeyDocs

KEY_FILE_FORMAT = "davserver-key/1"
MASTER_FILE_FORMAT = "davserver-master/1"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


@dataclass(frozen=True)
class Wrap:
    recipient: str
    suite: str
    sealed: bytes


@dataclass(frozen=True)
class Identity:
    """An unlocked private key able to open wraps addressed to ``recipient``."""

    recipient: str
    suite: str
    private: bytes = field(repr=False)
    public: bytes

    def as_recipient(self) -> Recipient:
        return Recipient(self.recipient, self.suite, self.public, self.private)


@dataclass(frozen=True)
class Recipient:
    """Whom a data key is wrapped to. ``private`` is set when the writer holds the private
    half (master key, the uploading user's own key): the wrap is then a self wrap."""

    recipient: str
    suite: str
    public: bytes
    private: bytes | None = field(default=None, repr=False)

    def wrap(self, data_key: bytes, file_id: bytes) -> Wrap:
        if self.private is not None:
            return Wrap(self.recipient, keywrap.SELF_SUITE,
                        keywrap.seal_to_self(self.private, data_key, file_id))
        return Wrap(self.recipient, self.suite,
                    keywrap.wrap_data_key(self.suite, self.public, data_key, file_id))


class KeyStore:
    def __init__(self, root: str | KeyDocs, *, fsync: bool = True,
                 cache_size: int = 4096) -> None:
        """``root``: the key documents, or a key storage directory."""
        self.docs: KeyDocs = DirKeyDocs(root, fsync=fsync) if isinstance(root, str) else root
        self.fsync = fsync
        # file ID -> (data key, recipients holding a wrap of it). Filled on read and on
        # write: a file just uploaded is the one most likely to be fetched next.
        self._cache: OrderedDict[bytes, tuple[bytes, frozenset[str]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def root(self) -> str:
        """Where the documents are: a directory, or ``db:``."""
        return self.docs.location

    def set_docs(self, docs: KeyDocs) -> None:
        """Follow a change-key-storage-root made by another process."""
        self.docs = docs
        with self._lock:
            self._cache.clear()

    # --- master key --------------------------------------------------------------------

    def master_files(self) -> list[str]:
        """Names of the master key documents (``master-<kid>.json``)."""
        return sorted(n for n in self.docs.names("master-")
                      if "/" not in n and n.endswith(".json"))

    def create_master(self, instance_secret: bytes, suite: str = "x25519") -> Identity:
        private, public = keywrap.new_keypair(suite)
        kid = keywrap.key_id(public)
        doc = {
            "format": MASTER_FILE_FORMAT,
            "id": kid,
            "suite": suite,
            "public": _b64(public),
            "private_sealed": _b64(
                keywrap.seal_private_key(keywrap.master_kek(instance_secret), private, kid)
            ),
        }
        self.docs.write(f"master-{kid}.json", json.dumps(doc, indent=1).encode())
        return Identity(f"master:{kid}", suite, private, public)

    def load_master(self, instance_secret: bytes, kid: str | None = None) -> Identity:
        """Unlock the master key; with several, ``kid`` picks one (else the only one)."""
        files = self.master_files()
        if kid is not None:
            files = [f for f in files if f == f"master-{kid}.json"]
        if not files:
            raise KeyNotFound("master key")
        if len(files) > 1:
            raise DavServerError("several master keys in the key store; name one")
        raw = self.docs.get(files[0])
        if raw is None:
            raise KeyNotFound("master key")
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != MASTER_FILE_FORMAT:
                raise FormatError(f"{files[0]}: not a master key file")
            kid, suite = doc["id"], doc["suite"]
            if not isinstance(kid, str) or not isinstance(suite, str):
                raise TypeError("id and suite must be strings")
            public, sealed = _unb64(doc["public"]), _unb64(doc["private_sealed"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise FormatError(f"{files[0]}: damaged master key file") from None
        try:
            private = keywrap.open_private_key(keywrap.master_kek(instance_secret), sealed, kid)
        except IntegrityError:
            raise IntegrityError(
                "the instance secret does not unlock the master key (wrong secret file?)"
            ) from None
        return Identity(f"master:{kid}", suite, private, public)

    # --- per-file wraps ----------------------------------------------------------------

    @staticmethod
    def name_of(file_id: bytes) -> str:
        h = file_id.hex()
        return f"files/{h[:2]}/{h}.json"

    def _path(self, file_id: bytes) -> str:
        """The key file's path (directory store only; tests look at the bytes)."""
        return self.docs.path(self.name_of(file_id))

    @staticmethod
    def _document(file_id: bytes, wraps: list[Wrap]) -> bytes:
        return json.dumps({
            "format": KEY_FILE_FORMAT,
            "file_id": file_id.hex(),
            "wraps": [{"to": w.recipient, "suite": w.suite, "sealed": _b64(w.sealed)}
                      for w in wraps],
        }).encode()

    def save(self, file_id: bytes, wraps: list[Wrap]) -> None:
        """Replace the wraps of an existing file ID (sharing, recovery, key rotation)."""
        self._forget(file_id)  # the recipients may have changed
        self.docs.write(self.name_of(file_id), self._document(file_id, wraps))

    @staticmethod
    def _wrap_line(w: Wrap) -> bytes:
        return json.dumps({"to": w.recipient, "suite": w.suite,
                           "sealed": _b64(w.sealed)}).encode()

    def append(self, batch: list[tuple[bytes, list[Wrap]]]) -> list[bytes]:
        """Add wraps to the key files of existing file IDs, durably as one batch; returns
        the IDs whose key file is gone (the file was deleted meanwhile)."""
        items = []
        for fid, wraps in batch:
            self._forget(fid)
            items.append((self.name_of(fid),
                          b"".join(b"\n" + self._wrap_line(w) for w in wraps) + b"\n"))
        gone = set(self.docs.append_many(items))
        return [fid for fid, _w in batch if self.name_of(fid) in gone]

    def load(self, file_id: bytes) -> list[Wrap]:
        raw = self.docs.get(self.name_of(file_id))
        if raw is None:
            raise KeyNotFound(file_id.hex())
        return parse_key_file(raw, file_id)

    def exists(self, file_id: bytes) -> bool:
        return self.docs.exists(self.name_of(file_id))

    def delete(self, file_id: bytes) -> None:
        self._forget(file_id)
        self.docs.delete(self.name_of(file_id))

    def cleanup(self) -> int:
        """Remove what a crash left half-written (temp files of the directory store)."""
        return self.docs.cleanup()

    def iter_file_ids(self) -> Iterator[bytes]:
        for name in self.docs.names("files/"):
            parts = name.split("/")
            if len(parts) != 3 or not parts[2].endswith(".json") \
                    or parts[2].startswith("."):
                continue
            try:
                yield bytes.fromhex(parts[2][:-5])
            except ValueError:
                continue

    # --- recipes -----------------------------------------------------------------------

    def wrap_new(self, file_id: bytes, data_key: bytes, recipients: list[Recipient], *,
                 flush: bool = True) -> None:
        """Store the key of a file ID just drawn: written in place, as no file names the
        ID before the commit renames it in (see durable.write_new). ``flush=False``: the
        caller syncs the key store's file system before that rename (a batch of files)."""
        wraps = [r.wrap(data_key, file_id) for r in recipients]
        self.docs.write_new(self.name_of(file_id), self._document(file_id, wraps), flush=flush)
        self._remember(file_id, data_key, frozenset(r.recipient for r in recipients))

    def unwrap(self, file_id: bytes, identities: list[Identity],
               wraps: list[Wrap] | None = None) -> bytes:
        """Return the data key of ``file_id`` using the first identity that has a wrap.
        ``wraps``: the key file's wraps when the caller has just loaded them.

        A cached key is handed out only to a caller holding an identity that has a wrap
        of it, so the cache never widens who can read a file."""
        with self._lock:
            cached = self._cache.get(file_id)
            if cached is not None and any(i.recipient in cached[1] for i in identities):
                self._cache.move_to_end(file_id)
                return cached[0]
        if wraps is None:
            wraps = self.load(file_id)
        by_recipient = {w.recipient: w for w in wraps}
        for ident in identities:
            w = by_recipient.get(ident.recipient)
            if w is not None:
                key = keywrap.open_wrap(w.suite, ident.private, w.sealed, file_id)
                self._remember(file_id, key, frozenset(by_recipient))
                return key
        raise KeyNotFound(f"{file_id.hex()} (no wrap for this principal)")

    def _remember(self, file_id: bytes, key: bytes, recipients: frozenset[str]) -> None:
        if not self._cache_size:
            return
        with self._lock:
            self._cache[file_id] = (key, recipients)
            self._cache.move_to_end(file_id)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _forget(self, file_id: bytes) -> None:
        with self._lock:
            self._cache.pop(file_id, None)


_DECODER = json.JSONDecoder()


def _wrap_of(w: object) -> Wrap:
    if not isinstance(w, dict):
        raise TypeError("a wrap must be an object")
    wrap = Wrap(w["to"], w["suite"], _unb64(w["sealed"]))
    if not isinstance(wrap.recipient, str) or not isinstance(wrap.suite, str):
        raise TypeError("recipient and suite must be strings")
    return wrap


def parse_key_file(raw: bytes, file_id: bytes) -> list[Wrap]:
    """The wraps in a per-file key file: its document, then the appended wrap lines.

    A line that is not JSON is the torn end of an append that a crash cut short: skipped
    (its wrap is still pending and made again). A line that is JSON but not a wrap is
    damage, as is a damaged document."""
    try:
        text = raw.decode()
        start = len(text) - len(text.lstrip())
        doc, end = _DECODER.raw_decode(text, start)
    except ValueError:
        raise FormatError(f"key file of {file_id.hex()} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT \
            or doc.get("file_id") != file_id.hex():
        raise FormatError(f"key file of {file_id.hex()} does not belong to it")
    try:
        wraps = [_wrap_of(w) for w in doc["wraps"]]
        for line in text[end:].split("\n"):
            if not line.strip():
                continue
            try:
                w = json.loads(line)
            except ValueError:
                continue
            wraps.append(_wrap_of(w))
        return wraps
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FormatError(f"key file of {file_id.hex()} is damaged") from None
