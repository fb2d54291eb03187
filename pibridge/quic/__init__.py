"""QUIC for Twisted: aioquic's sans-I/O connection driven by a Twisted reactor.

Entry points: :func:`listenQuic` / :class:`QuicServerService` for servers,
:func:`connectQuic` for clients. The layer above implements
:class:`IQuicConnectionHandler` and gets a :class:`QuicConnectionTransport` to
open streams on; each stream is a :class:`QuicStreamTransport` carrying an
ordinary Twisted protocol.
"""

from pibridge.quic.connection import ConnectionState, QuicConnectionTransport
from pibridge.quic.endpoint import QuicListeningPort, connectQuic, listenQuic
from pibridge.quic.errors import (
    CertificateRefused,
    ConnectionClosed,
    FingerprintMismatch,
    HandshakeFailed,
    HandshakeTimeout,
    IdleTimeout,
    QuicError,
    StreamAborted,
    StreamReset,
    StreamStopped,
)
from pibridge.quic.identity import Fingerprint, TlsIdentity, load_or_create_identity
from pibridge.quic.interfaces import (
    IQuicConnectionHandler,
    IQuicConnectionTransport,
    IQuicDatagramHandler,
    IQuicStreamProtocol,
    IQuicStreamTransport,
)
from pibridge.quic.service import QuicServerService
from pibridge.quic.settings import MOQ_ALPN, QuicSettings
from pibridge.quic.stream import QuicStreamTransport
from pibridge.quic.verification import (
    CertificateAuthorityVerification,
    KnownHosts,
    PeerVerification,
    PinnedFingerprintVerification,
    default_known_hosts_path,
)

__all__ = [
    "MOQ_ALPN",
    "CertificateAuthorityVerification",
    "CertificateRefused",
    "ConnectionClosed",
    "ConnectionState",
    "Fingerprint",
    "FingerprintMismatch",
    "HandshakeFailed",
    "HandshakeTimeout",
    "IQuicConnectionHandler",
    "IQuicConnectionTransport",
    "IQuicDatagramHandler",
    "IQuicStreamProtocol",
    "IQuicStreamTransport",
    "IdleTimeout",
    "KnownHosts",
    "PeerVerification",
    "PinnedFingerprintVerification",
    "QuicConnectionTransport",
    "QuicError",
    "QuicListeningPort",
    "QuicServerService",
    "QuicSettings",
    "QuicStreamTransport",
    "StreamAborted",
    "StreamReset",
    "StreamStopped",
    "TlsIdentity",
    "connectQuic",
    "default_known_hosts_path",
    "listenQuic",
    "load_or_create_identity",
]
