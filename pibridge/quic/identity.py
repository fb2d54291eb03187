"""The server's TLS identity: a P-256 key and self-signed certificate kept in the state dir.

Clients pin the certificate by its SHA-256 fingerprint, so the identity is made
once and reused; regenerating it would make every pinned client refuse us.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from pibridge.secret_files import write_private

_log = Logger()

CERTIFICATE_FILE = "cert.pem"
KEY_FILE = "key.pem"
DEFAULT_NAMES = ("localhost", "127.0.0.1")
_VALIDITY = datetime.timedelta(days=3650)


@attrs.frozen
class Fingerprint:
    """The SHA-256 digest of a certificate's DER encoding."""

    digest: bytes

    @classmethod
    def of(cls, certificate: x509.Certificate) -> Fingerprint:
        der = certificate.public_bytes(serialization.Encoding.DER)
        return cls(hashlib.sha256(der).digest())

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """Read ``SHA256:<base64>`` or hex (any case, colons allowed)."""
        text = text.strip()
        if text.upper().startswith("SHA256:"):
            encoded = text[len("SHA256:") :]
            padded = encoded + "=" * (-len(encoded) % 4)
            try:
                digest = base64.b64decode(padded, validate=True)
            except ValueError as error:
                raise ValueError(f"not a SHA256 fingerprint: {text!r}") from error
        else:
            try:
                digest = bytes.fromhex(text.replace(":", ""))
            except ValueError as error:
                raise ValueError(f"not a SHA256 fingerprint: {text!r}") from error
        if len(digest) != 32:
            raise ValueError(f"a SHA256 fingerprint has 32 bytes, got {len(digest)}: {text!r}")
        return cls(digest)

    @property
    def hex(self) -> str:
        """Lower-case hex without colons, the form stored in known-hosts files."""
        return self.digest.hex()

    @property
    def display(self) -> str:
        """OpenSSH style ``SHA256:<base64 without padding>`` for people to compare."""
        return "SHA256:" + base64.b64encode(self.digest).decode("ascii").rstrip("=")

    def __str__(self) -> str:
        return self.display


@attrs.frozen
class TlsIdentity:
    """Paths of the PEM files aioquic loads, and the certificate they hold."""

    certificate_path: Path
    key_path: Path
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.certificate)

    @classmethod
    def load(cls, certificate_path: Path, key_path: Path) -> TlsIdentity:
        certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
        return cls(certificate_path, key_path, certificate)


def load_or_create_identity(state_dir: Path, host_names: Iterable[str] = ()) -> TlsIdentity:
    """Return the identity in ``<state_dir>/tls/``, creating it on first start.

    The certificate names ``host_names`` plus localhost and 127.0.0.1. An
    existing identity is reused as is (its fingerprint is what clients pinned);
    a missing name is only logged.
    """
    directory = state_dir / "tls"
    certificate_path = directory / CERTIFICATE_FILE
    key_path = directory / KEY_FILE
    names = _unique([*host_names, *DEFAULT_NAMES])
    if certificate_path.exists() and key_path.exists():
        identity = TlsIdentity.load(certificate_path, key_path)
        missing = set(names) - set(_subject_names(identity.certificate))
        if missing:
            _log.warn(
                "TLS certificate {path} does not name {missing}; delete {directory} to "
                "issue a new one (pinned clients will then need the new fingerprint)",
                path=str(certificate_path),
                missing=", ".join(sorted(missing)),
                directory=str(directory),
            )
        return identity
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed_certificate(key, names)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_pem)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    identity = TlsIdentity(certificate_path, key_path, certificate)
    _log.info(
        "Created TLS identity {path} with fingerprint {fingerprint}",
        path=str(certificate_path),
        fingerprint=identity.fingerprint.display,
    )
    return identity


def _self_signed_certificate(key: ec.EllipticCurvePrivateKey, names: list[str]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternative_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _subject_names(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(extension.value.get_values_for_type(x509.DNSName))
    names.extend(str(address) for address in extension.value.get_values_for_type(x509.IPAddress))
    return names


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(name for name in names if name))
