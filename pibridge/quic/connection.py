"""One QUIC connection: aioquic's sans-I/O state machine driven by a Twisted reactor.

Each input (a datagram, the timer, an API call) follows the same path:
feed aioquic -> drain ``next_event()`` and dispatch -> ``datagrams_to_send()``
-> write -> re-arm the single timer. Writes by the application only mark the
connection for transmission; one transmit per reactor turn sends them all.
The reactor's ``seconds()`` is the only clock aioquic ever sees.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress, stream_is_unidirectional
from cryptography import x509
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.quic.engine import CreditedQuicConnection, DatagramSizeProbed
from pibridge.quic.errors import (
    CertificateRefused,
    ConnectionClosed,
    HandshakeFailed,
    HandshakeTimeout,
    IdleTimeout,
    QuicError,
)
from pibridge.quic.identity import Fingerprint
from pibridge.quic.interfaces import (
    IQuicConnectionHandler,
    IQuicConnectionTransport,
    IQuicDatagramHandler,
)
from pibridge.quic.path_mtu import DatagramSizeSearch, candidate_sizes, route_payload_limit
from pibridge.quic.settings import QuicSettings
from pibridge.quic.stream import QuicStreamTransport

_log = Logger()

# TLS alert bad_certificate (42) as a QUIC CRYPTO_ERROR (RFC 9001 section 4.8).
BAD_CERTIFICATE_ERROR = 0x100 + 42
# Timers closer than this to the armed one are not worth moving the DelayedCall for.
_TIMER_SLACK = 0.0001
# A reactor sleeps in whole milliseconds (epoll rounds up, then the kernel adds its
# slack): a timer served up to this early counts as on time.
_REACTOR_RESOLUTION = 0.001
# Deadlines nearer than this are served on the next reactor turn instead of
# sleeping: pacing gaps are tens of microseconds and would otherwise cost 1-2 ms
# each. It stays below aioquic's 1 ms ACK delay, so that delay is really waited
# for and the ACK can ride in the next data packet instead of a packet of its own.
_NEXT_TURN = 0.0005


class QuicEndpoint(Protocol):
    """What a connection needs from the UDP endpoint that carries it."""

    def sendDatagram(self, data: bytes, address: NetworkAddress) -> None: ...

    def connectionIdIssued(self, connection: QuicConnectionTransport, cid: bytes) -> None: ...

    def connectionIdRetired(self, connection: QuicConnectionTransport, cid: bytes) -> None: ...

    def connectionEnded(self, connection: QuicConnectionTransport) -> None: ...

    def getHost(self) -> IAddress: ...


class ConnectionState(enum.Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


class _Input(enum.Enum):
    HANDSHAKE_DONE = "handshake done"
    TERMINATED = "terminated"


# The lifecycle as a table: (state, input) -> next state. Anything else is a bug.
_TRANSITIONS: dict[tuple[ConnectionState, _Input], ConnectionState] = {
    (ConnectionState.HANDSHAKING, _Input.HANDSHAKE_DONE): ConnectionState.ESTABLISHED,
    (ConnectionState.HANDSHAKING, _Input.TERMINATED): ConnectionState.CLOSED,
    (ConnectionState.ESTABLISHED, _Input.TERMINATED): ConnectionState.CLOSED,
}

CertificateCheck = Callable[[x509.Certificate, Sequence[x509.Certificate]], None]
HandshakeOutcome = Callable[["QuicConnectionTransport | Failure"], None]


@implementer(IQuicConnectionTransport)
class QuicConnectionTransport:
    """A QUIC connection as the layer above sees it (either role).

    Public API: :meth:`openStream`, :meth:`close`, :meth:`sendDatagram`,
    :meth:`getPeer`/:meth:`getHost`, and the attributes ``peerAddress``,
    ``alpn``, ``isClient``, ``peerCertificateFingerprint`` (the server's, on a
    client), ``state``, ``handler``. Created by ``listenQuic``/``connectQuic``.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        quic: CreditedQuicConnection,
        endpoint: QuicEndpoint,
        settings: QuicSettings,
        handler: IQuicConnectionHandler,
        *,
        certificate_check: CertificateCheck | None = None,
        handshake_outcome: HandshakeOutcome | None = None,
    ) -> None:
        self._reactor = reactor
        self._quic = quic
        self._endpoint = endpoint
        self._settings = settings
        self.handler = handler
        self._certificateCheck = certificate_check
        self._handshakeOutcome = handshake_outcome
        self.state = ConnectionState.HANDSHAKING
        self.isClient: bool = quic.configuration.is_client
        self.alpn: str | None = None
        self.peerCertificateFingerprint: Fingerprint | None = None
        self._peerAddress: NetworkAddress | None = None
        self._streams: dict[int, QuicStreamTransport] = {}
        # Highest peer-initiated stream id seen, per stream type (id & 3): a lower
        # unknown id is a stream we refused or already finished.
        self._highestPeerStream: dict[int, int] = {}
        self._earlyEvents: list[events.QuicEvent] = []
        self._timer: IDelayedCall | None = None
        self._timerDue = 0.0
        self._servedDue = 0.0
        self._clock = 0.0
        self._transmitCall: IDelayedCall | None = None
        self._dispatching = False
        self._handlerConnected = False
        self._refusal: CertificateRefused | None = None
        # Backpressure bookkeeping: streams that may hold unsent bytes, streams
        # with a producer, and an estimate of the connection's unsent total.
        self._sendingStreams: set[QuicStreamTransport] = set()
        self._producerStreams: set[QuicStreamTransport] = set()
        self._unsentTotal = 0
        self._connectionPaused = False
        self._sizeSearch: DatagramSizeSearch | None = None
        self._handlers: dict[type[events.QuicEvent], Callable[[Any], None]] = {
            events.StreamDataReceived: self._onStreamData,
            events.StreamReset: self._onStreamReset,
            events.StopSendingReceived: self._onStopSending,
            events.HandshakeCompleted: self._onHandshakeCompleted,
            events.ProtocolNegotiated: self._onProtocolNegotiated,
            events.ConnectionIdIssued: self._onConnectionIdIssued,
            events.ConnectionIdRetired: self._onConnectionIdRetired,
            events.DatagramFrameReceived: self._onDatagramFrame,
            events.ConnectionTerminated: self._onTerminated,
            DatagramSizeProbed: self._onDatagramSizeProbed,
        }

    def __repr__(self) -> str:
        role = "client" if self.isClient else "server"
        return f"<QuicConnectionTransport {role} {self.state.value} peer={self.peerAddress}>"

    # --- public API -------------------------------------------------------

    @property
    def peerAddress(self) -> NetworkAddress | None:
        """The peer's current UDP address (it follows validated migration)."""
        return self._quic.get_peer_address() or self._peerAddress

    def getPeer(self) -> IAddress:
        return _address(self.peerAddress)

    def getHost(self) -> IAddress:
        return self._endpoint.getHost()

    def openStream(
        self, protocol: IProtocol, *, unidirectional: bool = False
    ) -> QuicStreamTransport:
        """Open a stream of our own and attach ``protocol`` (``makeConnection`` is called).

        Opening never blocks: beyond the peer's stream limit the stream waits
        inside aioquic until the peer allows more.
        """
        if self.state is not ConnectionState.ESTABLISHED:
            raise QuicError(f"cannot open a stream on a {self.state.value} connection")
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        # Writing nothing makes aioquic allocate the id, so the next call gets a new one.
        self._quic.send_stream_data(stream_id, b"")
        stream = QuicStreamTransport(
            self, stream_id, is_local=True, is_unidirectional=unidirectional
        )
        self._streams[stream_id] = stream
        if not unidirectional:
            self._quic.consumed_offsets[stream_id] = 0
        stream._attach(protocol)
        return stream

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection with an application error code and reason phrase.

        The handler's ``connectionLost`` follows once the closing period ends.
        """
        if self.state is ConnectionState.CLOSED:
            return
        self._quic.close(error_code=error_code, reason_phrase=reason)
        self._scheduleTransmit()

    def sendDatagram(self, data: bytes) -> None:
        """Send an unreliable QUIC DATAGRAM frame (needs the extension negotiated)."""
        if self.state is not ConnectionState.ESTABLISHED:
            return
        try:
            self._quic.send_datagram_frame(data)
        except Exception as error:  # aioquic raises for oversize or unnegotiated
            _log.debug("Dropped a QUIC datagram: {error}", error=error)
            return
        self._scheduleTransmit()

    def unsentBytes(self) -> int:
        """Bytes written on all streams not yet handed to the network."""
        return sum(self._quic.unsent_bytes(s) for s in self._quicStreams(self._sendingStreams))

    # --- inputs -----------------------------------------------------------

    def datagramReceived(
        self, data: bytes, address: NetworkAddress, *, transmit: bool = True
    ) -> None:
        """Feed one UDP datagram and dispatch its events, then send what is due.

        An endpoint reading a burst of datagrams passes ``transmit=False`` and
        calls :meth:`transmit` once at the end of the burst.
        """
        if self.state is ConnectionState.CLOSED:
            return
        self._quic.receive_datagram(data, address, now=self._now())
        self._processEvents()
        if transmit:
            self._transmit()

    def transmit(self) -> None:
        """Send every datagram aioquic has ready and re-arm the timer."""
        self._transmit()

    def start(self, address: NetworkAddress) -> None:
        """Begin the client handshake towards ``address``."""
        self._peerAddress = address
        self._quic.connect(address, now=self._now())
        self._transmit()

    def abort(self, reason: ConnectionClosed | HandshakeFailed) -> None:
        """Send CONNECTION_CLOSE and end now, without waiting for the closing period.

        Used when the endpoint itself goes away (service stop, handshake timeout).
        """
        if self.state is ConnectionState.CLOSED:
            return
        error_code = reason.error_code if reason.error_code is not None else 0
        self._quic.close(error_code=error_code, reason_phrase=str(reason))
        self._transmit()
        self._ended(Failure(reason))

    def _timerFired(self) -> None:
        self._timer = None
        if self.state is ConnectionState.CLOSED:
            return
        # A deadline served early (within the reactor's resolution) counts as reached.
        due = min(self._timerDue, self._reactor.seconds() + _REACTOR_RESOLUTION)
        self._clock = max(self._clock, due)
        self._servedDue = self._timerDue
        self._quic.handle_timer(now=self._now())
        self._processEvents()
        self._transmit()

    # --- the pump ---------------------------------------------------------

    def _now(self) -> float:
        """The time given to aioquic: the reactor's clock, never going backwards.

        It runs ahead of ``reactor.seconds()`` only after a timer was served
        early, by less than the reactor's resolution.
        """
        now = self._reactor.seconds()
        if now > self._clock:
            self._clock = now
        return self._clock

    def _processEvents(self) -> None:
        quic = self._quic
        handlers = self._handlers
        self._dispatching = True
        try:
            while (event := quic.next_event()) is not None:
                handler = handlers.get(type(event))
                if handler is not None:
                    try:
                        handler(event)
                    except Exception:
                        # An application callback raised: log it like Twisted does for
                        # TCP, and keep the connection's own state consistent.
                        _log.failure(
                            "Error handling {event!r} on {connection!r}",
                            event=event,
                            connection=self,
                        )
        finally:
            self._dispatching = False

    def _scheduleTransmit(self) -> None:
        """Ask for one transmit soon; many writes in one turn share it."""
        if self._dispatching or self._transmitCall is not None:
            return
        if self.state is ConnectionState.CLOSED:
            return
        self._transmitCall = self._reactor.callLater(0, self._transmit)

    def _transmit(self) -> None:
        call = self._transmitCall
        if call is not None:
            self._transmitCall = None
            if call.active():
                call.cancel()
        if self.state is ConnectionState.CLOSED:
            return
        now = self._now()
        send = self._endpoint.sendDatagram
        for data, address in self._quic.datagrams_to_send(now=now):
            send(data, address)
        # Closing an established connection emits no event until its timer fires.
        self._processEvents()
        if self._sendingStreams or self._producerStreams:
            self._relieveBackpressure()
        self._armTimer()

    def _armTimer(self) -> None:
        """Keep exactly one DelayedCall, at aioquic's next deadline."""
        when = self._quic.get_timer()
        timer = self._timer
        if when is None:
            if timer is not None:
                self._timer = None
                timer.cancel()
            return
        if self.state is ConnectionState.CLOSED:
            return
        if timer is not None and abs(self._timerDue - when) <= _TIMER_SLACK:
            return
        self._timerDue = when
        delay = when - self._reactor.seconds()
        if delay < _NEXT_TURN:
            # Served on the next turn, unless this very deadline was just served and
            # aioquic still wants it: then wait a tick rather than spin.
            delay = _REACTOR_RESOLUTION if when <= self._servedDue else 0.0
        if timer is None:
            self._timer = self._reactor.callLater(delay, self._timerFired)
        else:
            timer.reset(delay)

    # --- event handlers ---------------------------------------------------

    def _onProtocolNegotiated(self, event: events.ProtocolNegotiated) -> None:
        self.alpn = event.alpn_protocol

    def _onHandshakeCompleted(self, event: events.HandshakeCompleted) -> None:
        self.alpn = event.alpn_protocol
        if self.isClient:
            certificate, chain = self._quic.peer_certificate()
            if certificate is not None:
                self.peerCertificateFingerprint = Fingerprint.of(certificate)
            if self._certificateCheck is not None:
                try:
                    if certificate is None:
                        raise CertificateRefused("The server sent no certificate.")
                    self._certificateCheck(certificate, chain)
                except CertificateRefused as refusal:
                    self._refuse(refusal)
                    return
        self._advance(_Input.HANDSHAKE_DONE)
        self._searchDatagramSize()
        self._handlerConnected = True
        outcome, self._handshakeOutcome = self._handshakeOutcome, None
        self.handler.connectionMade(self)
        if outcome is not None:
            outcome(self)
        early, self._earlyEvents = self._earlyEvents, []
        for queued in early:
            self._handlers[type(queued)](queued)

    @property
    def datagramSize(self) -> int:
        """The size of the datagrams this connection sends now."""
        return self._quic.datagram_size

    def _searchDatagramSize(self) -> None:
        address = self.peerAddress
        if not self._settings.probe_datagram_size or address is None:
            return
        ceiling = self._settings.largest_datagram_size
        if self._quic.peer_max_udp_payload is not None:
            ceiling = min(ceiling, self._quic.peer_max_udp_payload)
        route = route_payload_limit(str(address[0]), int(address[1]))
        current = self._quic.datagram_size
        self._sizeSearch = DatagramSizeSearch(
            current=current, candidates=candidate_sizes(current, route, ceiling)
        )
        self._probeNextSize()

    def _probeNextSize(self) -> None:
        if self._sizeSearch is not None and (size := self._sizeSearch.next_probe()) is not None:
            self._quic.probe_datagram_size(size)
            self._scheduleTransmit()

    def _onDatagramSizeProbed(self, event: DatagramSizeProbed) -> None:
        if self._sizeSearch is None:
            return
        self._sizeSearch.probed(event.size, event.acknowledged)
        _log.debug(
            "Datagram size {size} {outcome} towards {peer}; sending {current}",
            size=event.size,
            outcome="confirmed" if event.acknowledged else "lost",
            peer=self.peerAddress,
            current=self._quic.datagram_size,
        )
        self._probeNextSize()

    def _refuse(self, refusal: CertificateRefused) -> None:
        """Close before any application data flows and report the refusal."""
        self._refusal = refusal
        refusal.error_code = BAD_CERTIFICATE_ERROR
        self._earlyEvents.clear()
        self._quic.close(error_code=BAD_CERTIFICATE_ERROR, reason_phrase="certificate refused")
        outcome, self._handshakeOutcome = self._handshakeOutcome, None
        if outcome is not None:
            outcome(Failure(refusal))

    def _onStreamData(self, event: events.StreamDataReceived) -> None:
        if self.state is not ConnectionState.ESTABLISHED:
            if self._refusal is None:
                self._earlyEvents.append(event)
            return
        stream = self._streams.get(event.stream_id) or self._peerStream(event.stream_id)
        if stream is not None:
            stream._dataReceived(event.data, event.end_stream)

    def _onStreamReset(self, event: events.StreamReset) -> None:
        if self.state is not ConnectionState.ESTABLISHED:
            if self._refusal is None:
                self._earlyEvents.append(event)
            return
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._resetReceived(event.error_code)

    def _onStopSending(self, event: events.StopSendingReceived) -> None:
        if self.state is not ConnectionState.ESTABLISHED:
            if self._refusal is None:
                self._earlyEvents.append(event)
            return
        stream = self._streams.get(event.stream_id) or self._peerStream(event.stream_id)
        if stream is not None:
            stream._stopSendingReceived(event.error_code)

    def _onConnectionIdIssued(self, event: events.ConnectionIdIssued) -> None:
        self._endpoint.connectionIdIssued(self, event.connection_id)

    def _onConnectionIdRetired(self, event: events.ConnectionIdRetired) -> None:
        self._endpoint.connectionIdRetired(self, event.connection_id)

    def _onDatagramFrame(self, event: events.DatagramFrameReceived) -> None:
        if self.state is not ConnectionState.ESTABLISHED:
            return
        receiver = IQuicDatagramHandler(self.handler, None)
        if receiver is not None:
            receiver.datagramReceived(event.data)

    def _onTerminated(self, event: events.ConnectionTerminated) -> None:
        quic = self._quic
        error: ConnectionClosed
        if quic.idle_timed_out:
            error = IdleTimeout(event.error_code, event.reason_phrase, False, event.frame_type)
        else:
            error = ConnectionClosed(
                event.error_code, event.reason_phrase, quic.closed_by_peer, event.frame_type
            )
        self._ended(Failure(error))

    # --- peer streams -----------------------------------------------------

    def _peerStream(self, stream_id: int) -> QuicStreamTransport | None:
        """A peer-initiated stream seen for the first time: ask the handler for a protocol."""
        is_client_initiated = stream_id & 1 == 0
        if is_client_initiated == self.isClient:
            return None  # one of ours, already finished
        kind = stream_id & 3
        if stream_id <= self._highestPeerStream.get(kind, -1):
            return None  # refused or finished earlier
        self._highestPeerStream[kind] = stream_id
        unidirectional = stream_is_unidirectional(stream_id)
        stream = QuicStreamTransport(
            self, stream_id, is_local=False, is_unidirectional=unidirectional
        )
        protocol = self.handler.streamOpened(stream)
        if protocol is None:
            self._streamAbort(stream, 0, reset=not unidirectional, stop=True)
            return None
        self._streams[stream_id] = stream
        self._quic.consumed_offsets[stream_id] = 0
        stream._attach(protocol)
        return stream

    # --- calls from stream transports -------------------------------------

    def _streamWrite(self, stream: QuicStreamTransport, data: bytes) -> None:
        try:
            self._quic.send_stream_data(stream.streamId, data)
        except (ValueError, RuntimeError) as error:
            # Reset, stopped or finished underneath us: the write is dropped.
            _log.debug("Dropped a write on {stream}: {error}", stream=stream, error=error)
            return
        self._sendingStreams.add(stream)
        self._unsentTotal += len(data)
        settings = self._settings
        if self._unsentTotal > settings.connection_high_water:
            self._pauseAllProducers()
        elif (
            stream._producer is not None
            and not stream._producerPaused
            and stream.unsentBytes() > settings.stream_high_water
        ):
            stream._pauseProducer()
        self._scheduleTransmit()

    def _streamFinish(self, stream: QuicStreamTransport) -> None:
        try:
            self._quic.send_stream_data(stream.streamId, b"", end_stream=True)
        except (ValueError, RuntimeError) as error:
            _log.debug("Could not finish {stream}: {error}", stream=stream, error=error)
        self._scheduleTransmit()

    def _streamAbort(
        self, stream: QuicStreamTransport, error_code: int, *, reset: bool, stop: bool
    ) -> None:
        quic = self._quic
        try:
            if reset:
                quic.reset_stream(stream.streamId, error_code)
            if stop:
                quic.stop_stream(stream.streamId, error_code)
        except (ValueError, RuntimeError) as error:
            _log.debug("Could not abort {stream}: {error}", stream=stream, error=error)
        self._scheduleTransmit()

    def _streamConsumed(self, stream: QuicStreamTransport, offset: int) -> None:
        self._quic.consumed_offsets[stream.streamId] = offset

    def _streamUnsent(self, stream: QuicStreamTransport) -> int:
        quic_stream = self._quic._streams.get(stream.streamId)
        return 0 if quic_stream is None else self._quic.unsent_bytes(quic_stream)

    def _streamEnded(self, stream: QuicStreamTransport) -> None:
        self._streams.pop(stream.streamId, None)
        self._quic.consumed_offsets.pop(stream.streamId, None)
        self._sendingStreams.discard(stream)
        self._producerStreams.discard(stream)

    def _producerRegistered(self, stream: QuicStreamTransport) -> None:
        self._producerStreams.add(stream)
        settings = self._settings
        if (
            self._connectionPaused
            or stream.unsentBytes() > settings.stream_high_water
            or self._unsentTotal > settings.connection_high_water
        ):
            stream._pauseProducer()
        elif not stream._streaming:
            self._reactor.callLater(0, self._relieveBackpressure)

    def _producerUnregistered(self, stream: QuicStreamTransport) -> None:
        self._producerStreams.discard(stream)

    # --- backpressure -----------------------------------------------------

    def _quicStreams(self, streams: set[QuicStreamTransport]) -> list[Any]:
        found = []
        for stream in streams:
            quic_stream = self._quic._streams.get(stream.streamId)
            if quic_stream is not None:
                found.append(quic_stream)
        return found

    def _pauseAllProducers(self) -> None:
        self._connectionPaused = True
        for stream in list(self._producerStreams):
            stream._pauseProducer()

    def _relieveBackpressure(self) -> None:
        """After a transmit: recount unsent bytes and resume producers that may go on."""
        if self.state is ConnectionState.CLOSED:
            return
        quic = self._quic
        quic_streams = quic._streams
        settings = self._settings
        total = 0
        unsent: dict[QuicStreamTransport, int] = {}
        for stream in list(self._sendingStreams):
            quic_stream = quic_streams.get(stream.streamId)
            count = 0 if quic_stream is None else quic.unsent_bytes(quic_stream)
            if count == 0:
                self._sendingStreams.discard(stream)
            unsent[stream] = count
            total += count
        self._unsentTotal = total
        if self._connectionPaused and total >= settings.connection_low_water:
            return
        self._connectionPaused = False
        for stream in list(self._producerStreams):
            if stream._streaming and not stream._producerPaused:
                continue
            if unsent.get(stream, 0) < settings.stream_low_water:
                stream._resumeProducer()

    # --- ending -----------------------------------------------------------

    def _advance(self, event: _Input) -> None:
        self.state = _TRANSITIONS[(self.state, event)]

    def _ended(self, reason: Failure) -> None:
        if self.state is ConnectionState.CLOSED:
            return
        self._advance(_Input.TERMINATED)
        for call in (self._timer, self._transmitCall):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._transmitCall = None
        self._earlyEvents.clear()
        for stream in list(self._streams.values()):
            stream._connectionLost(reason)
        self._streams.clear()
        self._sendingStreams.clear()
        self._producerStreams.clear()
        self._endpoint.connectionEnded(self)
        outcome, self._handshakeOutcome = self._handshakeOutcome, None
        if outcome is not None:
            outcome(Failure(_handshakeFailure(reason)))
        if self._handlerConnected:
            self._handlerConnected = False
            self.handler.connectionLost(reason)


def _handshakeFailure(reason: Failure) -> HandshakeFailed:
    error = reason.value
    if isinstance(error, HandshakeFailed):
        return error
    if isinstance(error, IdleTimeout):
        return HandshakeTimeout("QUIC handshake timed out: the server did not answer")
    if isinstance(error, ConnectionClosed):
        who = "server" if error.by_peer else "client"
        detail = f": {error.reason}" if error.reason else ""
        return HandshakeFailed(
            f"QUIC handshake failed, closed by {who} with error code "
            f"0x{error.error_code:x}{detail}",
            error.error_code,
        )
    return HandshakeFailed(f"QUIC handshake failed: {error}")


def _address(address: NetworkAddress | None) -> IAddress:
    if address is None:
        return IPv4Address("UDP", "0.0.0.0", 0)
    host, port = address[0], address[1]
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)
