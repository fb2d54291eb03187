"""One QUIC stream presented to a Twisted protocol as a transport.

The transport is an ``ITransport`` (write, loseConnection, abortConnection), an
``IConsumer`` (register a producer; it is paused when the stream's unsent bytes
pass the high-water mark and resumed below the low-water mark) and an
``IPushProducer`` (pause/resume delivery of received data; while paused the
peer gets no new flow-control credit, so memory stays bounded on both ends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IProducer,
    IProtocol,
    IPullProducer,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.quic.errors import StreamAborted, StreamReset, StreamStopped
from pibridge.quic.interfaces import IQuicStreamProtocol, IQuicStreamTransport

if TYPE_CHECKING:
    from pibridge.quic.connection import QuicConnectionTransport

_log = Logger()

# The error code a stream is reset with when its protocol raised.
APPLICATION_ERROR = 0x1


@implementer(ITransport, IConsumer, IPushProducer, IQuicStreamTransport)
class QuicStreamTransport:
    """The transport of one stream; created by :class:`QuicConnectionTransport`.

    Closing semantics: ``loseConnection()`` sends FIN after everything written;
    ``abortConnection(code)`` sends RESET_STREAM (and STOP_SENDING while still
    reading). The protocol's ``connectionLost`` comes once both directions are
    finished, with ``ConnectionDone`` for a clean end, ``StreamReset`` when the
    peer reset, ``StreamStopped`` after STOP_SENDING with nothing left to read,
    ``StreamAborted`` after a local abort, or the connection's failure. A FIN
    from the peer calls ``readConnectionLost()`` on an
    ``IHalfCloseableProtocol``; other protocols get their sending side closed
    too. Writes never raise: after the sending side is gone they are dropped.
    """

    def __init__(
        self,
        connection: QuicConnectionTransport,
        stream_id: int,
        *,
        is_local: bool,
        is_unidirectional: bool,
    ) -> None:
        self.connection = connection
        self.streamId = stream_id
        self.isLocal = is_local
        self.isUnidirectional = is_unidirectional
        self.protocol: IProtocol | None = None
        # A unidirectional stream only has the initiator's sending side.
        self._readable = not (is_unidirectional and is_local)
        self._writable = not (is_unidirectional and not is_local)
        self._lost = False
        self._endReason: Failure | None = None
        self._readPaused = False
        self._pendingData: list[bytes] = []
        self._pendingFin = False
        self._consumed = 0
        self._producer: IProducer | None = None
        self._streaming = True
        self._producerPaused = False

    def __repr__(self) -> str:
        return f"<QuicStreamTransport {self.streamId} of {self.connection!r}>"

    # --- ITransport -------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending; dropped (never raised) once sending has ended."""
        if not self._writable or not data:
            return
        self.connection._streamWrite(self, data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Finish our sending side: FIN goes out after everything written."""
        if self._writable:
            self._writable = False
            self.connection._streamFinish(self)
        self._maybeLost()

    def abortConnection(self, error_code: int = 0) -> None:
        """Abandon the stream now with ``error_code``, dropping unsent and unread data."""
        if self._lost:
            return
        self.connection._streamAbort(self, error_code, reset=self._writable, stop=self._readable)
        self._writable = False
        self._readable = False
        self._pendingData.clear()
        self._pendingFin = False
        self._setEndReason(StreamAborted(error_code))
        self._maybeLost()

    def stopReceiving(self, error_code: int = 0) -> None:
        """Tell the peer to stop sending (STOP_SENDING); data not yet delivered is dropped."""
        if not self._readable:
            return
        self._readable = False
        self._pendingData.clear()
        self._pendingFin = False
        self.connection._streamAbort(self, error_code, reset=False, stop=True)
        self._maybeLost()

    def getPeer(self) -> IAddress:
        return self.connection.getPeer()

    def getHost(self) -> IAddress:
        return self.connection.getHost()

    # --- IConsumer --------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"{self!r} already has a producer")
        self._producer = producer
        self._streaming = streaming
        self._producerPaused = False
        self.connection._producerRegistered(self)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producerPaused = False
        self.connection._producerUnregistered(self)

    # --- IPushProducer: delivery of received data --------------------------

    def pauseProducing(self) -> None:
        """Stop delivering received data; the peer soon runs out of credit."""
        self._readPaused = True

    def resumeProducing(self) -> None:
        """Deliver what arrived while paused and grant the peer credit again."""
        self._readPaused = False
        self._deliverPending()
        self.connection._scheduleTransmit()

    def stopProducing(self) -> None:
        self.abortConnection()

    # --- flow control -----------------------------------------------------

    def unsentBytes(self) -> int:
        """Bytes written but not yet handed to the network by aioquic."""
        return self.connection._streamUnsent(self)

    @property
    def producerPaused(self) -> bool:
        """Whether the registered producer is currently paused for backpressure."""
        return self._producerPaused

    def _pauseProducer(self) -> None:
        producer = self._producer
        if producer is not None and self._streaming and not self._producerPaused:
            self._producerPaused = True
            cast(IPushProducer, producer).pauseProducing()

    def _resumeProducer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if not self._streaming:
            cast(IPullProducer, producer).resumeProducing()
        elif self._producerPaused:
            self._producerPaused = False
            cast(IPushProducer, producer).resumeProducing()

    # --- events from the connection ---------------------------------------

    def _attach(self, protocol: IProtocol) -> None:
        self.protocol = protocol
        protocol.makeConnection(self)

    def _dataReceived(self, data: bytes, fin: bool) -> None:
        if not self._readable:
            return
        if self._readPaused or self._pendingData:
            if data:
                self._pendingData.append(data)
            self._pendingFin = self._pendingFin or fin
            return
        if data:
            self._consume(data)
        if fin:
            self._readFinished()

    def _deliverPending(self) -> None:
        pending = self._pendingData
        while pending and not self._readPaused and self._readable:
            self._consume(pending.pop(0))
        if self._pendingFin and not pending and not self._readPaused and self._readable:
            self._pendingFin = False
            self._readFinished()

    def _consume(self, data: bytes) -> None:
        self._consumed += len(data)
        self.connection._streamConsumed(self, self._consumed)
        protocol = self.protocol
        assert protocol is not None
        try:
            protocol.dataReceived(data)
        except Exception:
            _log.failure(
                "Stream protocol {protocol!r} failed; aborting {stream!r}",
                protocol=protocol,
                stream=self,
            )
            self.abortConnection(APPLICATION_ERROR)

    def _readFinished(self) -> None:
        self._readable = False
        if self._writable:
            protocol = self.protocol
            half_closeable = IHalfCloseableProtocol(protocol, None)
            if half_closeable is not None:
                half_closeable.readConnectionLost()
            else:
                self.loseConnection()
        self._maybeLost()

    def _resetReceived(self, error_code: int) -> None:
        """The peer sent RESET_STREAM: reading ends, and we stop our side too."""
        if not self._readable:
            return
        self._readable = False
        self._pendingData.clear()
        self._pendingFin = False
        if self._writable:
            self._writable = False
            self.connection._streamAbort(self, error_code, reset=True, stop=False)
        if self._endReason is not None and self._endReason.check(StreamStopped):
            self._endReason = None  # the reset is what ended the stream
        self._setEndReason(StreamReset(error_code))
        self._maybeLost()

    def _stopSendingReceived(self, error_code: int) -> None:
        """The peer sent STOP_SENDING: aioquic already reset our sending side."""
        if self._lost:
            return
        self._writable = False
        self._stopProducer()
        stop_receiver = IQuicStreamProtocol(self.protocol, None)
        if stop_receiver is not None:
            stop_receiver.stopSendingReceived(error_code)
        self._setEndReason(StreamStopped(error_code))
        self._maybeLost()

    def _connectionLost(self, reason: Failure) -> None:
        """The whole connection ended: this stream ends with the connection's reason."""
        self._readable = False
        self._writable = False
        self._pendingData.clear()
        self._endReason = reason
        self._maybeLost()

    def _setEndReason(self, error: Exception) -> None:
        if self._endReason is None:
            self._endReason = Failure(error)

    def _stopProducer(self) -> None:
        producer = self._producer
        if producer is not None:
            self._producer = None
            self.connection._producerUnregistered(self)
            producer.stopProducing()

    def _maybeLost(self) -> None:
        if self._lost or self._readable or self._writable:
            return
        self._lost = True
        reason = self._endReason or Failure(ConnectionDone("QUIC stream finished"))
        if not reason.check(ConnectionDone):
            self._stopProducer()
        elif self._producer is not None:
            self._producer = None
            self.connection._producerUnregistered(self)
        self.connection._streamEnded(self)
        protocol = self.protocol
        if protocol is not None:
            protocol.connectionLost(reason)
