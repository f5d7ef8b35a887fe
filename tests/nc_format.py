"""A test-only writer of Nextcloud server-side-encryption data, from the format description.

The real sample (tests use ../shared/nextcloud-testdata) is one Nextcloud version; this makes
the other variants the importer must read: legacy CFB ciphers, base64 blocks, unsigned
blocks, files without a header, RSA-OAEP or RC4 share keys, key files with or without the
instance-secret wrapping, private keys under each key format, and any version number.
Built on davserver's primitives module (the only place allowed to touch hazmat) and the
decoder's key derivations (``privatekeys.derive_key``, ``keyfiles.keys_for``), which the
real 25.0.0 sample checks; the layout, block and wrapping code here is written separately.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from davserver.crypto import legacy_nextcloud as nc
from davserver.nextcloud import content
from davserver.nextcloud.keyfiles import keys_for
from davserver.nextcloud.phpconfig import NextcloudConfig
from davserver.nextcloud.privatekeys import derive_key

PLAIN_PER_BLOCK = {(True, "binary"): 8096, (True, "base64"): 6072,
                   (False, "binary"): 8168, (False, "base64"): 6126}


@dataclass(frozen=True)
class Variant:
    """How one file is written."""

    cipher: str = "AES-256-CTR"
    encoding: str = "binary"
    signed: bool = True
    header: bool = True
    share: str = "rc4"  # rc4 (openssl_seal, NC < 27) | oaep (NC >= 27)
    wrapped: bool = True  # instance-secret wrapping of key files (NC >= 20)
    version: int = 1


#: ownCloud <= 6: no header, AES-128-CFB, base64, unsigned.
LEGACY = Variant(cipher="AES-128-CFB", encoding="base64", signed=False, header=False)


def header_bytes(v: Variant) -> bytes:
    fields = [("oc_encryption_module", "OC_DEFAULT_MODULE"), ("cipher", v.cipher),
              ("signed", "true" if v.signed else "false")]
    if v.share == "oaep":
        fields.append(("useLegacyFileKey", "false"))
    fields.append(("encoding", v.encoding))
    text = "HBEGIN:" + "".join(f"{k}:{val}:" for k, val in fields) + "HEND"
    return text.encode().ljust(8192, b"-")


def encrypt_block(plain: bytes, key: bytes, v: Variant, position: str, *,
                  version: int | None = None, iv: bytes | None = None) -> bytes:
    iv = os.urandom(16) if iv is None else iv
    ct = nc.stream_encrypt(v.cipher, key, iv, plain)
    stored = ct if v.encoding == "binary" else base64.b64encode(ct)
    if not v.signed:
        return stored + b"00iv00" + iv + b"xx"
    ver = v.version if version is None else version
    mac_key = nc.sha512(key + f"_{ver}_{position}a".encode())
    mac = nc.hmac_sha256(mac_key, stored).hex().encode()
    return stored + b"00iv00" + iv + b"00sig00" + mac + b"xxx"


def encrypt_content(plain: bytes, key: bytes, v: Variant) -> bytes:
    if not v.header:
        assert (v.cipher, v.encoding, v.signed) == ("AES-128-CFB", "base64", False), \
            "a file without header is read with ownCloud's defaults"
    per = PLAIN_PER_BLOCK[(v.signed, v.encoding)]
    chunks = [plain[i:i + per] for i in range(0, len(plain), per)]
    out = [header_bytes(v)] if v.header else []
    for i, chunk in enumerate(chunks):
        end = "end" if i == len(chunks) - 1 and len(chunk) < per else ""
        out.append(encrypt_block(chunk, key, v, f"{i}{end}"))
    return b"".join(out)


def wrap(key: bytes, secret: str, iv: bytes, *, uid: str = "", version: str = "3") -> bytes:
    """A key file as NC >= 20 stores it: JSON {"key": base64} under the instance secret."""
    doc = json.dumps({"key": base64.b64encode(key).decode(), "uid": uid}).encode()
    enc_pw, mac_pw = keys_for(secret, version)
    ct_hex = nc.cbc_encrypt(nc.pbkdf2_sha1(enc_pw, b"phpseclib", 1000, 16), iv, doc).hex()
    iv_text = iv.hex() if int(version) >= 2 else iv.decode()
    mac = nc.hmac_sha512(nc.sha512(mac_pw + b"a").hex().encode(), (ct_hex + iv_text).encode())
    return f"{ct_hex}|{iv_text}|{mac.hex()}|{version}".encode()


def encrypt_private_key(pem: bytes, password: str, uid: str, cfg: NextcloudConfig, *,
                        cipher: str, key_format: str, encoding: str, signed: bool,
                        iv: bytes) -> bytes:
    """A private key file: unpadded header, then one block (version 0, position 0)."""
    fields = f"cipher:{cipher}"
    if key_format != "password":
        fields += f":keyFormat:{key_format}"
    fields += f":encoding:{encoding}"
    header = content.Header(cipher=cipher, encoding=encoding, signed=signed,
                            key_format=key_format, present=True)
    key = derive_key(password, header, uid, cfg)
    v = Variant(cipher=cipher, encoding=encoding, signed=signed, version=0)
    block = encrypt_block(pem, key, v, "0", iv=iv)
    return f"HBEGIN:{fields}:HEND".encode() + block


class NcData:
    """A Nextcloud data directory plus config.php under ``root``, written key by key."""

    def __init__(self, root: Path, *, secret: str = "s3cr3t/instance+secret",
                 instanceid: str = "oc1234abcd", key_format: str = "hash",
                 rsa_bits: int = 2048) -> None:
        self.root = root
        self.datadir = root / "data"
        self.config_path = root / "config.php"
        self.cfg = NextcloudConfig(secret, instanceid, str(self.datadir), "26.0.0.1")
        self.key_format = key_format
        self.rsa_bits = rsa_bits
        self.publics: dict[str, object] = {}  # key name -> RSA public key
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "<?php\n$CONFIG = array (\n"
            f"  'instanceid' => '{instanceid}',\n"
            f"  'secret' => '{secret}',\n"
            f"  'datadirectory' => '{self.datadir}',\n"
            "  'version' => '26.0.0.1',\n  'installed' => true,\n);\n")

    # --- keys ---------------------------------------------------------------------------

    def _write_key(self, path: Path, data: bytes, wrapped: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wrap(data, self.cfg.secret, os.urandom(16)) if wrapped else data)

    def add_keypair(self, name: str, password: str, *, uid: str | None = None,
                    user: str | None = None, wrapped: bool = True,
                    key_format: str | None = None, cipher: str = "AES-256-CTR",
                    encoding: str = "binary", signed: bool = True) -> None:
        """A key pair named ``name`` (a user name, or master_/recoveryKey_/pubShare_<id>)."""
        pem, public = nc.rsa_generate(self.rsa_bits)
        blob = encrypt_private_key(pem, password, name if uid is None else uid, self.cfg,
                                   cipher=cipher, key_format=key_format or self.key_format,
                                   encoding=encoding, signed=signed, iv=os.urandom(16))
        if user is not None:
            d = self.datadir / user / "files_encryption" / "OC_DEFAULT_MODULE"
        else:
            d = self.datadir / "files_encryption" / "OC_DEFAULT_MODULE"
        self._write_key(d / f"{name}.privateKey", blob, wrapped)
        self._write_key(d / f"{name}.publicKey", nc.public_pem(public), wrapped)
        self.publics[name] = public

    def add_master(self, key_id: str = "master_1a2b3c4d", **kw) -> str:
        self.add_keypair(key_id, self.cfg.secret, **kw)
        return key_id

    def add_user_key(self, user: str, password: str, **kw) -> str:
        self.add_keypair(user, password, user=user, **kw)
        return user

    def add_recovery(self, password: str, key_id: str = "recoveryKey_5e6f7a8b", **kw) -> str:
        self.add_keypair(key_id, password, uid="", **kw)
        return key_id

    def add_pubshare(self, key_id: str = "pubShare_5e6f7a8b", **kw) -> str:
        self.add_keypair(key_id, "", uid="", **kw)
        return key_id

    # --- files --------------------------------------------------------------------------

    def key_dir(self, user: str, rel: str) -> Path:
        return (self.datadir / user / "files_encryption" / "keys" / "files" / rel
                / "OC_DEFAULT_MODULE")

    def file_path(self, user: str, rel: str) -> Path:
        return self.datadir / user / "files" / rel

    def add_file(self, user: str, rel: str, plain: bytes, recipients: list[str],
                 v: Variant = Variant(), *, mtime: float = 1_600_000_000.0) -> Path:
        """An encrypted file readable with any of ``recipients``' key pairs."""
        file_key = os.urandom(32)
        path = self.file_path(user, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encrypt_content(plain, file_key, v))
        os.utime(path, (mtime, mtime))
        kd = self.key_dir(user, rel)
        if v.share == "rc4":
            seal_key = os.urandom(16)
            self._write_key(kd / "fileKey", nc.rc4(seal_key, file_key), v.wrapped)
            for name in recipients:
                share = nc.rsa_encrypt_pkcs1v15(self.publics[name], seal_key)
                self._write_key(kd / f"{name}.shareKey", share, v.wrapped)
        else:
            for name in recipients:
                share = nc.rsa_encrypt_oaep(self.publics[name], file_key)
                self._write_key(kd / f"{name}.shareKey", share, v.wrapped)
        return path

    def add_plain_file(self, user: str, rel: str, data: bytes,
                       mtime: float = 1_600_000_000.0) -> Path:
        path = self.file_path(user, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        return path


def with_version(v: Variant, version: int) -> Variant:
    return replace(v, version=version)
