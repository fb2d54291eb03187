"""UDP endpoints: a server port demultiplexing many connections, and a client port.

``listenQuic`` and ``connectQuic`` are the entry points the layers above use.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from cryptography import x509
from twisted.internet import udp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.quic.connection import QuicConnectionTransport
from pibridge.quic.engine import CreditedQuicConnection
from pibridge.quic.errors import ConnectionClosed, HandshakeFailed, HandshakeTimeout
from pibridge.quic.identity import TlsIdentity
from pibridge.quic.interfaces import IQuicConnectionHandler
from pibridge.quic.settings import QuicSettings
from pibridge.quic.verification import PeerVerification

_log = Logger()

# RFC 9000 section 14.1: a client's Initial datagram is at least 1200 bytes.
MIN_INITIAL_DATAGRAM = 1200
# No real client sends an Initial larger than an Ethernet frame allows (unless this
# endpoint is itself configured for larger datagrams, as on loopback benchmarks).
MAX_INITIAL_DATAGRAM = 1500
# The largest UDP payload, so Twisted never truncates a datagram.
MAX_UDP_PAYLOAD = 65535
# QUIC application error code for a server shutting down (NO_ERROR).
SHUTDOWN_ERROR_CODE = 0


def raise_socket_buffers(udp: Any, size: int) -> None:
    """Ask for ``size``-byte kernel socket buffers; QUIC bursts overflow the defaults.

    Root may exceed ``net.core.rmem_max`` with the ``*BUFFORCE`` options; others get
    what the kernel allows.
    """
    sock = udp.getHandle() if hasattr(udp, "getHandle") else None
    if not isinstance(sock, socket.socket):
        return
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError as error:
                _log.debug("Could not raise a socket buffer: {error}", error=error)


# Bytes read in one burst before the connections transmit (ACKs included).
READ_BURST_BYTES = 64 * 1024


class BurstReadingUDPPort(udp.Port):
    """A UDP port that tells its protocol when a burst of reads is over.

    The protocol then transmits once per connection for the whole burst
    instead of once per datagram, which halves aioquic's work on a busy
    receiver.
    """

    maxThroughput = READ_BURST_BYTES

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """Send straight to the socket: QUIC already knows its addresses are valid.

        ``udp.Port.write`` re-validates the address on every datagram, which is
        a noticeable share of the per-packet cost here. Errors are left to the
        caller, as with ``udp.Port.write``.
        """
        while True:
            try:
                self.socket.sendto(datagram, addr)
                return
            except InterruptedError:
                continue

    def doRead(self) -> None:
        try:
            super().doRead()
        finally:
            self.protocol.readBurstEnded()


def listenBursts(reactor: Any, port: int, protocol: _BurstProtocol, interface: str) -> Any:
    """Listen on UDP, with burst reading where the reactor allows it."""
    if isinstance(reactor, PosixReactorBase):
        udp_port = BurstReadingUDPPort(port, protocol, interface, MAX_UDP_PAYLOAD, reactor)
        protocol.inBursts = True
        udp_port.startListening()
        return udp_port
    return IReactorUDP(reactor).listenUDP(
        port, protocol, interface=interface, maxPacketSize=MAX_UDP_PAYLOAD
    )


class _BurstProtocol(DatagramProtocol):
    """Collects the connections that received datagrams during a read burst."""

    inBursts = False

    def __init__(self) -> None:
        self._received: dict[QuicConnectionTransport, None] = {}

    def feed(self, connection: QuicConnectionTransport, data: bytes, addr: Any) -> None:
        if self.inBursts:
            connection.datagramReceived(data, addr, transmit=False)
            self._received[connection] = None
        else:
            connection.datagramReceived(data, addr)

    def readBurstEnded(self) -> None:
        received, self._received = self._received, {}
        for connection in received:
            connection.transmit()


def _sendto(transport: IUDPTransport | None, data: bytes, address: NetworkAddress) -> None:
    """Send one datagram; a full socket buffer is a lost packet, which QUIC repairs."""
    if transport is None:
        return
    try:
        transport.write(data, address)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.ECONNREFUSED):
            _log.debug("UDP send to {address} failed: {error}", address=address, error=error)


def _udpHost(transport: IUDPTransport | None) -> IAddress:
    if transport is None:
        return IPv4Address("UDP", "0.0.0.0", 0)
    host = transport.getHost()
    assert isinstance(host, IPv4Address | IPv6Address)
    return host


class QuicServerProtocol(_BurstProtocol):
    """One UDP port serving many QUIC connections, found by destination connection id."""

    def __init__(
        self,
        reactor: IReactorTime,
        configuration: QuicConfiguration,
        settings: QuicSettings,
        handlerFactory: Callable[[], IQuicConnectionHandler],
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._configuration = configuration
        self._settings = settings
        self._handlerFactory = handlerFactory
        self._cidLength = configuration.connection_id_length
        self._maxInitial = max(MAX_INITIAL_DATAGRAM, configuration.max_datagram_size)
        self._supportedVersions = list(configuration.supported_versions)
        self._byCid: dict[bytes, QuicConnectionTransport] = {}
        self._cidsOf: dict[QuicConnectionTransport, set[bytes]] = {}

    @property
    def connections(self) -> list[QuicConnectionTransport]:
        """The connections currently holding state on this port."""
        return list(self._cidsOf)

    def startProtocol(self) -> None:
        raise_socket_buffers(self.transport, self._settings.socket_buffer_size)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=self._cidLength)
        except ValueError:
            _log.debug("Dropped an unparseable datagram from {addr}", addr=addr)
            return
        connection = self._byCid.get(header.destination_cid)
        if connection is None:
            connection = self._newConnection(data, addr, header)
            if connection is None:
                return
        self.feed(connection, data, addr)

    def _newConnection(self, data: bytes, addr: Any, header: Any) -> QuicConnectionTransport | None:
        if header.version is None:
            _log.debug("Dropped a packet for an unknown connection from {addr}", addr=addr)
            return None
        if header.version not in self._supportedVersions:
            self._negotiateVersion(data, addr, header)
            return None
        if header.packet_type is not QuicPacketType.INITIAL:
            _log.debug("Dropped a packet for an unknown connection from {addr}", addr=addr)
            return None
        if not MIN_INITIAL_DATAGRAM <= len(data) <= self._maxInitial:
            _log.debug("Dropped an Initial of {size} bytes from {addr}", size=len(data), addr=addr)
            return None
        quic = CreditedQuicConnection(
            configuration=self._configuration,
            original_destination_connection_id=header.destination_cid,
        )
        connection = QuicConnectionTransport(
            self._reactor, quic, self, self._settings, self._handlerFactory()
        )
        cids = {header.destination_cid, quic.host_cid}
        self._cidsOf[connection] = cids
        for cid in cids:
            self._byCid[cid] = connection
        return connection

    def _negotiateVersion(self, data: bytes, addr: Any, header: Any) -> None:
        """Answer an unknown version with the versions we speak (RFC 9000 section 6)."""
        if header.version == 0:  # a Version Negotiation packet itself: never answer
            return
        if len(data) < MIN_INITIAL_DATAGRAM:  # too small to be a first flight: no reply
            _log.debug("Dropped a small packet of unknown version from {addr}", addr=addr)
            return
        packet = encode_quic_version_negotiation(
            source_cid=header.destination_cid,
            destination_cid=header.source_cid,
            supported_versions=self._supportedVersions,
        )
        _sendto(self.transport, packet, addr)

    # --- QuicEndpoint -----------------------------------------------------

    def sendDatagram(self, data: bytes, address: NetworkAddress) -> None:
        _sendto(self.transport, data, address)

    def connectionIdIssued(self, connection: QuicConnectionTransport, cid: bytes) -> None:
        cids = self._cidsOf.get(connection)
        if cids is not None:
            cids.add(cid)
            self._byCid[cid] = connection

    def connectionIdRetired(self, connection: QuicConnectionTransport, cid: bytes) -> None:
        cids = self._cidsOf.get(connection)
        if cids is not None:
            cids.discard(cid)
        if self._byCid.get(cid) is connection:
            del self._byCid[cid]

    def connectionEnded(self, connection: QuicConnectionTransport) -> None:
        for cid in self._cidsOf.pop(connection, ()):
            if self._byCid.get(cid) is connection:
                del self._byCid[cid]

    def getHost(self) -> IAddress:
        return _udpHost(self.transport)

    def closeAll(self, reason: str = "server shutting down") -> None:
        """Close every connection now (CONNECTION_CLOSE sent, state freed at once)."""
        for connection in list(self._cidsOf):
            connection.abort(ConnectionClosed(SHUTDOWN_ERROR_CODE, reason, by_peer=False))


@implementer(IListeningPort)
class QuicListeningPort:
    """The listening port ``listenQuic`` returns; stopping it closes every connection."""

    def __init__(self, udp: Any, protocol: QuicServerProtocol) -> None:
        self._udp = udp
        self.protocol = protocol

    def startListening(self) -> None:
        self._udp.startListening()

    def stopListening(self) -> Deferred[None]:
        self.protocol.closeAll()
        result = self._udp.stopListening()
        return result if isinstance(result, Deferred) else succeed(None)

    def getHost(self) -> IAddress:
        return _udpHost(self._udp)


def listenQuic(
    reactor: Any,
    port: int,
    identity: TlsIdentity,
    handlerFactory: Callable[[], IQuicConnectionHandler],
    *,
    interface: str = "",
    settings: QuicSettings | None = None,
) -> QuicListeningPort:
    """Serve QUIC on ``interface:port``, one ``handlerFactory()`` per connection.

    ``reactor`` must provide ``IReactorUDP`` and ``IReactorTime``.
    """
    settings = settings or QuicSettings()
    configuration = settings.aioquic_configuration(is_client=False, identity=identity)
    protocol = QuicServerProtocol(reactor, configuration, settings, handlerFactory)
    return QuicListeningPort(listenBursts(reactor, port, protocol, interface), protocol)


class QuicClientProtocol(_BurstProtocol):
    """The UDP port of one client connection; it closes when the connection ends."""

    def __init__(self, settings: QuicSettings) -> None:
        super().__init__()
        self._settings = settings
        self.connection: QuicConnectionTransport | None = None
        self._port: Any = None

    def startProtocol(self) -> None:
        raise_socket_buffers(self.transport, self._settings.socket_buffer_size)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.connection is not None:
            self.feed(self.connection, data, addr)

    def sendDatagram(self, data: bytes, address: NetworkAddress) -> None:
        _sendto(self.transport, data, address)

    def connectionIdIssued(self, connection: QuicConnectionTransport, cid: bytes) -> None:
        pass

    def connectionIdRetired(self, connection: QuicConnectionTransport, cid: bytes) -> None:
        pass

    def connectionEnded(self, connection: QuicConnectionTransport) -> None:
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()

    def getHost(self) -> IAddress:
        return _udpHost(self.transport)


def connectQuic(
    reactor: Any,
    host: str,
    port: int,
    handler: IQuicConnectionHandler,
    *,
    verification: PeerVerification,
    settings: QuicSettings | None = None,
    timeout: float = 10.0,
) -> Deferred[QuicConnectionTransport]:
    """Connect to ``host:port``; the Deferred fires once the handshake is done and verified.

    It fails with :class:`HandshakeTimeout` after ``timeout`` seconds,
    :class:`CertificateRefused` (or :class:`FingerprintMismatch`) when
    ``verification`` refuses the certificate, and :class:`HandshakeFailed`
    otherwise (for one, no common ALPN). ``handler.connectionMade`` is called
    just before it fires; ``handler.connectionLost`` only after that.
    """
    settings = settings or QuicSettings()
    started: list[QuicConnectionTransport] = []

    cancelled: list[bool] = []

    def cancel(_: Deferred[QuicConnectionTransport]) -> None:
        cancelled.append(True)  # the Deferred fails with CancelledError
        for connection in started:
            connection.abort(HandshakeFailed(f"connection to {host}:{port} cancelled"))

    result: Deferred[QuicConnectionTransport] = Deferred(cancel)

    def start(address: str) -> None:
        if result.called:  # cancelled while resolving
            return
        server_name = None if _isAddress(host) else host
        configuration = settings.aioquic_configuration(is_client=True, server_name=server_name)
        protocol = QuicClientProtocol(settings)
        interface = "::" if ":" in address else "0.0.0.0"
        protocol._port = listenBursts(reactor, 0, protocol, interface)

        def check(certificate: x509.Certificate, chain: Sequence[x509.Certificate]) -> None:
            verification.verify(host, port, certificate, chain)

        def outcome(value: QuicConnectionTransport | Failure) -> None:
            if timer.active():
                timer.cancel()
            if result.called or cancelled:
                return
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)

        connection = QuicConnectionTransport(
            reactor,
            CreditedQuicConnection(configuration=configuration),
            protocol,
            settings,
            handler,
            certificate_check=check,
            handshake_outcome=outcome,
        )
        protocol.connection = connection
        started.append(connection)

        def timedOut() -> None:
            connection.abort(HandshakeTimeout(f"QUIC handshake with {host}:{port} timed out"))

        timer = reactor.callLater(timeout, timedOut)
        connection.start((address, port))

    def resolved(address: str) -> None:
        try:
            start(address)
        except Exception:
            if not result.called:
                result.errback()

    def notResolved(failure: Failure) -> None:
        if not result.called:
            result.errback(HandshakeFailed(f"cannot resolve {host!r}: {failure.getErrorMessage()}"))

    if _isAddress(host):
        resolved(host)
    else:
        reactor.resolve(host).addCallbacks(resolved, notResolved)
    return result


def _isAddress(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
