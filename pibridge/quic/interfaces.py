"""Interfaces between the QUIC adapter and the layer above it (MoQ)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IProtocol
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from pibridge.quic.connection import QuicConnectionTransport
    from pibridge.quic.stream import QuicStreamTransport


class IQuicConnectionHandler(Interface):
    """The application side of one QUIC connection (one handler per connection).

    Handlers may also provide :class:`IQuicDatagramHandler` to receive QUIC
    DATAGRAM frames.
    """

    def connectionMade(connection: QuicConnectionTransport) -> None:
        """The handshake completed (and, on a client, the peer was verified).

        Nothing else is called before this; streams can be opened from here on.
        """

    def streamOpened(stream: QuicStreamTransport) -> IProtocol | None:
        """The peer opened ``stream``; return the protocol to attach to it.

        ``stream.streamId`` and ``stream.isUnidirectional`` tell what it is; a
        protocol that must read a type prefix first (MoQ) can be a small
        dispatcher. Returning ``None`` refuses the stream (STOP_SENDING, and
        RESET_STREAM for a bidirectional one). The returned protocol gets
        ``makeConnection(stream)`` before any data.
        """

    def connectionLost(reason: Failure) -> None:
        """The connection ended, only ever called after ``connectionMade``.

        ``reason.value`` is a :class:`~pibridge.quic.errors.ConnectionClosed`
        (``IdleTimeout`` for an idle timeout). Every stream protocol has already
        been told through its own ``connectionLost``.
        """


class IQuicConnectionTransport(Interface):
    """One QUIC connection, as handed to ``IQuicConnectionHandler.connectionMade``."""

    isClient = Attribute("True on the side that connected.")
    alpn = Attribute("The negotiated ALPN protocol (str), e.g. 'moq-00'.")
    peerAddress = Attribute("The peer's current (host, port); follows validated migration.")
    peerCertificateFingerprint = Attribute(
        "On a client, the server certificate's Fingerprint; None on a server."
    )

    def openStream(protocol: IProtocol, *, unidirectional: bool = False) -> QuicStreamTransport:
        """Open a stream of our own, attach ``protocol`` and return its transport."""

    def close(error_code: int = 0, reason: str = "") -> None:
        """Close the connection; ``connectionLost`` follows after the closing period."""

    def sendDatagram(data: bytes) -> None:
        """Send one unreliable DATAGRAM frame (dropped if it cannot be sent)."""

    def unsentBytes() -> int:
        """Bytes written on all streams and not yet handed to the network."""


class IQuicDatagramHandler(Interface):
    """Optional: a connection handler that wants QUIC DATAGRAM frames."""

    def datagramReceived(data: bytes) -> None:
        """One DATAGRAM frame arrived from the peer."""


class IQuicStreamProtocol(IProtocol):
    """Optional extras a stream protocol may provide beyond ``IProtocol``."""

    def stopSendingReceived(error_code: int) -> None:
        """The peer sent STOP_SENDING: our sending side is gone.

        Writes after this are silently dropped; reading may go on.
        """


class IQuicStreamTransport(Interface):
    """What a QUIC stream adds to ``ITransport``."""

    streamId = Attribute("The QUIC stream id (int).")
    isUnidirectional = Attribute("True for a unidirectional stream.")
    isLocal = Attribute("True when this end opened the stream.")
    connection = Attribute("The QuicConnectionTransport the stream belongs to.")

    def abortConnection(error_code: int = 0) -> None:
        """Abandon the stream: RESET_STREAM (and STOP_SENDING if still reading)."""

    def stopReceiving(error_code: int = 0) -> None:
        """Ask the peer to stop sending (STOP_SENDING); undelivered data is dropped."""

    def unsentBytes() -> int:
        """Bytes written but not yet handed to the network."""
