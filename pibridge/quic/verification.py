"""How a QUIC client decides to trust the server's certificate.

Two ways: a CA file plus hostname check (``CertificateAuthorityVerification``),
or a SHA-256 pin kept in a known-hosts file, trusted on first use like OpenSSH
(``PinnedFingerprintVerification``). Both run right after the handshake on the
certificate aioquic received, before any application data is exchanged.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import service_identity
from aioquic import tls
from cryptography import x509
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.logger import Logger

from pibridge.quic.errors import CertificateRefused, FingerprintMismatch
from pibridge.quic.identity import Fingerprint

_log = Logger()


def default_known_hosts_path() -> Path:
    """``$XDG_CONFIG_HOME/pibridge/known_hosts``, by default ``~/.config/pibridge/known_hosts``."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "pibridge" / "known_hosts"


def host_port_key(host: str, port: int) -> str:
    """The ``host:port`` key of a known-hosts line (IPv6 literals in brackets)."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class PeerVerification(Protocol):
    """Decides whether the server certificate received for ``host:port`` is trusted."""

    def verify(
        self,
        host: str,
        port: int,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
    ) -> None:
        """Return if trusted; raise :class:`CertificateRefused` (with a clear message) if not."""


@attrs.frozen
class KnownHostEntry:
    line: int
    key: str
    fingerprint: Fingerprint


@attrs.frozen
class KnownHosts:
    """A known-hosts file: one ``host:port fingerprint`` per line, ``#`` comments."""

    path: Path

    def entries(self) -> list[KnownHostEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        found: list[KnownHostEntry] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            fields = raw.split("#", 1)[0].split()
            if len(fields) != 2:
                continue
            try:
                fingerprint = Fingerprint.parse(fields[1])
            except ValueError:
                _log.warn(
                    "Ignoring malformed line {line} of {path}", line=number, path=str(self.path)
                )
                continue
            found.append(KnownHostEntry(number, fields[0], fingerprint))
        return found

    def lookup(self, key: str) -> KnownHostEntry | None:
        """The first entry for ``key`` (as OpenSSH, the first match decides)."""
        for entry in self.entries():
            if entry.key == key:
                return entry
        return None

    def add(self, key: str, fingerprint: Fingerprint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.read_bytes() if self.path.exists() else b""
        separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
        with self.path.open("ab") as file:
            file.write(separator + f"{key} {fingerprint.hex}\n".encode())


def _log_notice(message: str) -> None:
    _log.warn("{message}", message=message)


@attrs.frozen
class PinnedFingerprintVerification:
    """Trust a server by the SHA-256 fingerprint of its certificate.

    With ``expected_fingerprint`` (a pin given on the command line, hex or
    ``SHA256:`` form) only that certificate is accepted. Otherwise the
    known-hosts file decides: an unknown ``host:port`` is added and announced
    through ``notify`` (trust on first use, unless ``trust_on_first_use`` is
    false), a known one must match or is refused with a message naming the file
    and line to edit.
    """

    known_hosts: Path = attrs.field(factory=default_known_hosts_path)
    expected_fingerprint: str | None = None
    notify: Callable[[str], None] = _log_notice
    trust_on_first_use: bool = True

    def verify(
        self,
        host: str,
        port: int,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
    ) -> None:
        presented = Fingerprint.of(certificate)
        key = host_port_key(host, port)
        if self.expected_fingerprint is not None:
            expected = Fingerprint.parse(self.expected_fingerprint)
            if presented != expected:
                raise FingerprintMismatch(
                    f"Certificate of {key} has fingerprint {presented.display}, "
                    f"but {expected.display} was expected. Connection refused."
                )
            return
        known = KnownHosts(self.known_hosts)
        entry = known.lookup(key)
        if entry is None:
            if not self.trust_on_first_use:
                raise CertificateRefused(
                    f"{key} is not in {self.known_hosts} and trust on first use is off; "
                    f"its certificate fingerprint is {presented.display}."
                )
            known.add(key, presented)
            self.notify(
                f"Warning: permanently added '{key}' with certificate fingerprint "
                f"{presented.display} to the list of known hosts ({self.known_hosts}). "
                "Check that it is the fingerprint the server shows."
            )
            return
        if entry.fingerprint != presented:
            location = f"{self.known_hosts}:{entry.line}"
            raise FingerprintMismatch(
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
                "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
                f"The certificate fingerprint sent by {key} is {presented.display}.\n"
                f"The known-hosts file expects {entry.fingerprint.display}.\n"
                f"Offending entry in {location}\n"
                f"If the server's identity changed on purpose, remove line {entry.line} "
                f"of {self.known_hosts} and connect again.\n"
                "Certificate verification failed: connection refused.",
                known_hosts=str(self.known_hosts),
                line=entry.line,
            )


@attrs.frozen
class CertificateAuthorityVerification:
    """Trust a server whose certificate chains to ``ca_file`` and names the host.

    ``hostname`` overrides the name checked (by default the host connected to);
    the name check uses ``service_identity``. Without ``ca_file`` the system
    trust store of aioquic (certifi) is used.
    """

    ca_file: Path | None = None
    hostname: str | None = None

    def verify(
        self,
        host: str,
        port: int,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
    ) -> None:
        name = self.hostname or host
        try:
            try:
                address = ipaddress.ip_address(name)
            except ValueError:
                verify_certificate_hostname(certificate, name)
            else:
                verify_certificate_ip_address(certificate, str(address))
        except (service_identity.VerificationError, service_identity.CertificateError) as error:
            raise CertificateRefused(
                f"Certificate of {host_port_key(host, port)} is not valid for {name!r}: {error}"
            ) from error
        try:
            tls.verify_certificate(
                certificate=certificate,
                chain=list(chain),
                cafile=str(self.ca_file) if self.ca_file is not None else None,
            )
        except tls.Alert as error:
            raise CertificateRefused(
                f"Certificate of {host_port_key(host, port)} is not trusted"
                f"{' by ' + str(self.ca_file) if self.ca_file else ''}: {error}"
            ) from error
