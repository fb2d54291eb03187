"""Server identity, certificate pinning, CA verification and handshake failures."""

from __future__ import annotations

import datetime
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.task import deferLater

from pibridge.quic import (
    CertificateAuthorityVerification,
    CertificateRefused,
    Fingerprint,
    FingerprintMismatch,
    HandshakeFailed,
    HandshakeTimeout,
    PinnedFingerprintVerification,
    QuicSettings,
    TlsIdentity,
    connectQuic,
    listenQuic,
    load_or_create_identity,
)
from tests.quic.conftest import StartServer
from tests.quic.support import RecordingHandler, timeboxed


def test_identity_is_created_once_with_private_key_and_names(tmp_path: Path) -> None:
    identity = load_or_create_identity(tmp_path, ["bot.example.org"])
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert identity.key_path.parent == tmp_path / "tls"
    names = identity.certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert names.get_values_for_type(x509.DNSName) == ["bot.example.org", "localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    again = load_or_create_identity(tmp_path, ["bot.example.org"])
    assert again.fingerprint == identity.fingerprint
    fingerprint = identity.fingerprint
    assert len(fingerprint.hex) == 64 and fingerprint.hex == fingerprint.hex.lower()
    assert fingerprint.display.startswith("SHA256:") and not fingerprint.display.endswith("=")
    assert Fingerprint.parse(fingerprint.display) == fingerprint
    assert Fingerprint.parse(fingerprint.hex.upper()) == fingerprint
    colons = ":".join(fingerprint.hex[i : i + 2] for i in range(0, 64, 2))
    assert Fingerprint.parse(colons) == fingerprint
    with pytest.raises(ValueError):
        Fingerprint.parse("SHA256:tooshort")


@pytest_twisted.ensureDeferred
async def test_trust_on_first_use_then_changed_certificate_is_refused(
    reactor: Any, tmp_path: Path, known_hosts: Path
) -> None:
    notices: list[str] = []
    verification = PinnedFingerprintVerification(known_hosts=known_hosts, notify=notices.append)
    first = load_or_create_identity(tmp_path / "first")
    port = listenQuic(reactor, 0, first, RecordingHandler, interface="127.0.0.1")
    number = port.getHost().port
    try:
        connection = await timeboxed(
            connectQuic(
                reactor, "127.0.0.1", number, RecordingHandler(), verification=verification
            ),
            reactor,
        )
        assert connection.peerCertificateFingerprint == first.fingerprint
        connection.close()
        assert len(notices) == 1
        assert first.fingerprint.display in notices[0] and str(known_hosts) in notices[0]
        assert known_hosts.read_text() == f"127.0.0.1:{number} {first.fingerprint.hex}\n"

        # Known now: accepted again without a notice.
        again = await timeboxed(
            connectQuic(
                reactor, "127.0.0.1", number, RecordingHandler(), verification=verification
            ),
            reactor,
        )
        again.close()
        assert len(notices) == 1
    finally:
        await port.stopListening()

    # Same address, new certificate: refused, naming the file and line to edit.
    known_hosts.write_text(f"# pins\nother:1 {'00' * 32}\n" + known_hosts.read_text())
    second = load_or_create_identity(tmp_path / "second")
    server_handlers: list[RecordingHandler] = []

    def handler_factory() -> RecordingHandler:
        server_handlers.append(RecordingHandler())
        return server_handlers[-1]

    port = listenQuic(reactor, number, second, handler_factory, interface="127.0.0.1")
    try:
        client = RecordingHandler()
        with pytest.raises(FingerprintMismatch) as refused:
            await timeboxed(
                connectQuic(reactor, "127.0.0.1", number, client, verification=verification),
                reactor,
            )
        message = str(refused.value)
        assert f"{known_hosts}:3" in message
        assert f"remove line 3 of {known_hosts}" in message
        assert second.fingerprint.display in message and first.fingerprint.display in message
        assert (refused.value.known_hosts, refused.value.line) == (str(known_hosts), 3)
        assert not client.made.called
        # The client closed before finishing its handshake: the server never saw a
        # connection it could use, and frees its state.
        for _ in range(100):
            if not port.protocol.connections:
                break
            await deferLater(reactor, 0.05)
        assert port.protocol.connections == []
        assert not server_handlers[0].made.called
        assert len(notices) == 1
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_explicit_fingerprint_pin(
    reactor: Any, start_server: StartServer, identity: TlsIdentity, known_hosts: Path
) -> None:
    port, _ = start_server()
    number = port.getHost().port
    good = PinnedFingerprintVerification(
        known_hosts=known_hosts, expected_fingerprint=identity.fingerprint.display
    )
    connection = await timeboxed(
        connectQuic(reactor, "127.0.0.1", number, RecordingHandler(), verification=good), reactor
    )
    connection.close()
    assert not known_hosts.exists()
    bad = PinnedFingerprintVerification(known_hosts=known_hosts, expected_fingerprint="ab" * 32)
    with pytest.raises(FingerprintMismatch, match=re.escape(identity.fingerprint.display)):
        await timeboxed(
            connectQuic(reactor, "127.0.0.1", number, RecordingHandler(), verification=bad),
            reactor,
        )


def _issue(tmp_path: Path) -> tuple[Path, TlsIdentity]:
    """A CA certificate file and a server identity for ``localhost`` that it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pibridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, TlsIdentity.load(cert_path, key_path)


@pytest_twisted.ensureDeferred
async def test_ca_file_and_hostname(
    reactor: Any, start_server: StartServer, tmp_path: Path, identity: TlsIdentity
) -> None:
    ca_file, signed = _issue(tmp_path)
    port, _ = start_server(server_identity=signed)
    number = port.getHost().port

    matching = CertificateAuthorityVerification(ca_file=ca_file, hostname="localhost")
    connection = await timeboxed(
        connectQuic(reactor, "127.0.0.1", number, RecordingHandler(), verification=matching),
        reactor,
    )
    connection.close()

    wrong_name = CertificateAuthorityVerification(ca_file=ca_file, hostname="wrong.example")
    with pytest.raises(CertificateRefused, match=r"wrong\.example"):
        await timeboxed(
            connectQuic(reactor, "127.0.0.1", number, RecordingHandler(), verification=wrong_name),
            reactor,
        )

    # A certificate the CA did not sign is refused even with the right name.
    other, _ = start_server(server_identity=identity)
    with pytest.raises(CertificateRefused, match="not trusted"):
        await timeboxed(
            connectQuic(
                reactor,
                "127.0.0.1",
                other.getHost().port,
                RecordingHandler(),
                verification=matching,
            ),
            reactor,
        )


@pytest_twisted.ensureDeferred
async def test_handshake_failures_are_clear(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    port, _ = start_server()
    verification = PinnedFingerprintVerification(known_hosts=known_hosts, notify=lambda m: None)
    with pytest.raises(HandshakeFailed) as failed:
        await timeboxed(
            connectQuic(
                reactor,
                "127.0.0.1",
                port.getHost().port,
                RecordingHandler(),
                verification=verification,
                settings=QuicSettings(alpn_protocols=("h3",)),
            ),
            reactor,
        )
    assert not isinstance(failed.value, HandshakeTimeout)
    assert "0x178" in str(failed.value)  # TLS no_application_protocol

    # Nobody answers on this port.
    silent = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
    try:
        with pytest.raises(HandshakeTimeout):
            await timeboxed(
                connectQuic(
                    reactor,
                    "127.0.0.1",
                    silent.getHost().port,
                    RecordingHandler(),
                    verification=verification,
                    timeout=0.3,
                ),
                reactor,
            )
    finally:
        await silent.stopListening()


class _Silent:
    """A UDP protocol that swallows everything."""

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass
