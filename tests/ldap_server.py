"""A throwaway OpenLDAP server for tests.

The LDAP backend is only worth trusting if it is exercised against a real ``slapd``: filter
escaping, bind semantics (unauthenticated binds, hashed passwords), ACLs and StartTLS are all
server behaviour that a mock would merely restate our assumptions about. This module starts a
private ``slapd`` in a temporary directory with a slapd.conf-style config, listening on
127.0.0.1 only, and tears it down again.

Layout of the directory it serves::

    dc=example,dc=org
        ou=people   inetOrgPerson (+ davUser for the quota attribute), uid=<login>
        ou=groups   groupOfNames, cn=<name>, member=<user DN>

ACLs mirror a typical production directory rather than slapd's permissive default: the
``userPassword`` attribute is only usable for authentication, and reads require a bind. That
way a test that "finds" a user anonymously, or reads a hash, fails here as it would in
production.

The server also speaks StartTLS on the plain port and implicit TLS on a second port, with a
throwaway CA generated per instance (``ca_file``), so the TLS code paths are tested too.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

BASE_DN = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE_DN}"
PEOPLE_DN = f"ou=people,{BASE_DN}"
GROUPS_DN = f"ou=groups,{BASE_DN}"

#: Attribute the test directory stores quotas in; not part of any standard schema.
QUOTA_ATTRIBUTE = "davQuota"

# OIDs under 2.25 are derived from a UUID, so they cannot collide with registered schema.
_OID_ARC = "2.25.238761049581170370926513815813390851311"
_DAV_SCHEMA = f"""\
attributetype ( {_OID_ARC}.1.1 NAME '{QUOTA_ATTRIBUTE}'
    DESC 'davserver storage quota, bytes or a size such as 10GB'
    EQUALITY caseIgnoreMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15
    SINGLE-VALUE )

objectclass ( {_OID_ARC}.2.1 NAME 'davUser'
    DESC 'davserver account attributes'
    SUP top AUXILIARY
    MAY ( {QUOTA_ATTRIBUTE} ) )
"""


def ssha(password: str) -> str:
    """Hash the way ``slappasswd`` does, so the directory never holds test passwords in clear.

    Plain text would work too, but a hashed value proves that authentication really goes
    through a server-side bind rather than any comparison of stored values.
    """
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Have the kernel SIGTERM slapd if the test process dies without cleaning up."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _write_tls_material(directory: Path, names: tuple[str, ...]) -> tuple[Path, Path, Path]:
    """Create a throwaway CA and a server certificate for ``names`` (host names or IPs).

    EC keys keep generation fast enough to do for every test session.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "davserver test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_file = directory / "ca.pem"
    cert_file = directory / "server.pem"
    key_file = directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class SlapdServer:
    """One private slapd process plus admin helpers to shape its directory.

    Admin helpers open a fresh connection per call so tests may use them from any thread.
    ``tls_names`` are the names the server certificate is issued for; pass others to test
    host name verification.
    """

    def __init__(
        self,
        *,
        admin_password: str | None = None,
        start_timeout: float = 15.0,
        tls_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ):
        if not tls_names:
            raise ValueError("tls_names must not be empty")
        self._tls_names = tuple(tls_names)
        if not os.path.exists(SLAPD):
            raise RuntimeError(f"{SLAPD} not found; install the slapd package")
        self._admin_password = admin_password or f"admin-{uuid.uuid4().hex}"
        self._start_timeout = start_timeout
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._tls_port = 0
        self._ca_file: Path | None = None

    # -- properties -----------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self._port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self._tls_port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def bind_dn(self) -> str:
        return ADMIN_DN

    @property
    def bind_password(self) -> str:
        return self._admin_password

    @property
    def base_dn(self) -> str:
        return BASE_DN

    @property
    def people_dn(self) -> str:
        return PEOPLE_DN

    @property
    def groups_dn(self) -> str:
        return GROUPS_DN

    @property
    def quota_attribute(self) -> str:
        return QUOTA_ATTRIBUTE

    @property
    def ca_file(self) -> str:
        if self._ca_file is None:
            raise RuntimeError("server not started")
        return str(self._ca_file)

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("server not started")
        return self._tmp / "slapd.log"

    def user_dn(self, uid: str) -> str:
        return f"uid={escape_rdn(uid)},{PEOPLE_DN}"

    def group_dn(self, cn: str) -> str:
        return f"cn={escape_rdn(cn)},{GROUPS_DN}"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SlapdServer:
        if self._proc is not None:
            raise RuntimeError("already started")
        self._tmp = Path(tempfile.mkdtemp(prefix="davserver-slapd-"))
        (self._tmp / "data").mkdir()
        self._ca_file, cert_file, key_file = _write_tls_material(self._tmp, self._tls_names)
        (self._tmp / "davserver.schema").write_text(_DAV_SCHEMA)
        self._write_config(cert_file, key_file)

        # A port picked by free_port() can be taken by someone else before slapd binds it.
        last_error = ""
        for _ in range(3):
            self._port, self._tls_port = free_port(), free_port()
            try:
                self._spawn()
                self._wait_ready()
                break
            except _StartFailed as exc:
                last_error = str(exc)
                self._kill()
        else:
            self.stop()
            raise RuntimeError(f"slapd did not start: {last_error}")

        self._populate()
        return self

    def stop(self) -> None:
        self._kill()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> SlapdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self, cert_file: Path, key_file: Path) -> None:
        assert self._tmp is not None and self._ca_file is not None
        tmp = self._tmp
        includes = "\n".join(
            f"include {SCHEMA_DIR / name}.schema"
            for name in ("core", "cosine", "inetorgperson", "nis")
        )
        config = f"""\
{includes}
include {tmp / "davserver.schema"}

pidfile {tmp / "slapd.pid"}
argsfile {tmp / "slapd.args"}
modulepath {MODULE_DIR}
moduleload back_mdb

TLSCACertificateFile {self._ca_file}
TLSCertificateFile {cert_file}
TLSCertificateKeyFile {key_file}

database mdb
maxsize 67108864
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {ssha(self._admin_password)}
directory {tmp / "data"}
index objectClass eq
index uid eq
index member eq

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by users read
    by * none
"""
        conf = tmp / "slapd.conf"
        conf.write_text(config)
        conf.chmod(0o600)

    def _spawn(self) -> None:
        assert self._tmp is not None
        log = open(self._tmp / "slapd.log", "ab")  # the child keeps its own descriptor
        try:
            self._proc = subprocess.Popen(
                [
                    SLAPD,
                    "-f",
                    str(self._tmp / "slapd.conf"),
                    "-h",
                    f"{self.uri}/ {self.ldaps_uri}/",
                    # Any -d keeps slapd in the foreground, so it stays our child process.
                    "-d",
                    "0",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise _StartFailed(f"exited with {self._proc.returncode}: {self._log_tail()}")
            try:
                conn = self._admin()
                conn.unbind()
                return
            except LDAPException as exc:
                if time.monotonic() > deadline:
                    raise _StartFailed(f"no bind within {self._start_timeout}s: {exc}") from exc
            time.sleep(0.05)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    # -- directory administration ---------------------------------------------------------

    def _admin(self) -> ldap3.Connection:
        server = ldap3.Server(self.uri, connect_timeout=2, get_info=ldap3.NONE)
        return ldap3.Connection(
            server,
            user=ADMIN_DN,
            password=self._admin_password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS,
            receive_timeout=5,
            raise_exceptions=True,
        )

    def _populate(self) -> None:
        conn = self._admin()
        try:
            conn.add(BASE_DN, ["dcObject", "organization"], {"dc": "example", "o": "Example"})
            conn.add(PEOPLE_DN, ["organizationalUnit"], {"ou": "people"})
            conn.add(GROUPS_DN, ["organizationalUnit"], {"ou": "groups"})
        finally:
            conn.unbind()

    def add_user(
        self,
        uid: str,
        password: str | None,
        cn: str | None = None,
        mail: str | None = None,
        quota: str | int | None = None,
        extra: dict[str, str | list[str]] | None = None,
    ) -> str:
        """Create ``uid=<uid>,ou=people``; ``password=None`` creates an account that cannot bind.

        ``extra`` sets further inetOrgPerson attributes, overriding the above (for example
        ``{"uid": [uid, "other"]}`` to give the entry a second login).
        Returns the new entry's DN.
        """
        dn = self.user_dn(uid)
        attributes: dict[str, str | list[str]] = {
            "uid": uid,
            "cn": cn or uid,
            "sn": cn.split()[-1] if cn and cn.split() else uid,
        }
        if password is not None:
            attributes["userPassword"] = ssha(password)
        if mail is not None:
            attributes["mail"] = mail
        object_classes = ["inetOrgPerson"]
        if quota is not None:
            object_classes.append("davUser")
            attributes[QUOTA_ATTRIBUTE] = str(quota)
        attributes.update(extra or {})
        conn = self._admin()
        try:
            conn.add(dn, object_classes, attributes)
        finally:
            conn.unbind()
        return dn

    def set_password(self, uid: str, new_password: str) -> None:
        """Replace the password as the directory admin would, outside davserver's control."""
        self.modify_user(uid, userPassword=ssha(new_password))

    def modify_user(self, uid: str, **replace: str | list[str]) -> None:
        """Replace attributes of a user entry (an empty list deletes the attribute)."""
        changes = {name: [(ldap3.MODIFY_REPLACE, value)] for name, value in replace.items()}
        conn = self._admin()
        try:
            conn.modify(self.user_dn(uid), changes)
        finally:
            conn.unbind()

    def delete_user(self, uid: str) -> None:
        conn = self._admin()
        try:
            conn.delete(self.user_dn(uid))
        finally:
            conn.unbind()

    def add_group(self, cn: str, member_uids: list[str] | tuple[str, ...]) -> str:
        """Create ``cn=<cn>,ou=groups``; returns its DN.

        groupOfNames requires at least one member, so an empty group is refused here rather
        than by a schema error from the server.
        """
        if not member_uids:
            raise ValueError("groupOfNames needs at least one member")
        dn = self.group_dn(cn)
        conn = self._admin()
        try:
            conn.add(
                dn,
                ["groupOfNames"],
                {"cn": cn, "member": [self.user_dn(uid) for uid in member_uids]},
            )
        finally:
            conn.unbind()
        return dn


class _StartFailed(Exception):
    pass
