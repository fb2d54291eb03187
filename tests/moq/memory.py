"""An in-memory stand-in for a QUIC connection pair, for testing sessions without sockets.

Events (stream opens, data, FIN, resets, closes) queue on a link and are
delivered by ``link.flush()``, so both ends run as if over a network: nothing
re-enters the sender.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, IPushProducer
from twisted.python.failure import Failure

from pibridge.quic.errors import ConnectionClosed, StreamAborted, StreamReset, StreamStopped

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class MemoryStream:
    """One end of an in-memory stream."""

    def __init__(
        self, connection: MemoryConnection, stream_id: int, unidirectional: bool, local: bool
    ) -> None:
        self.connection = connection
        self.streamId = stream_id
        self.isUnidirectional = unidirectional
        self.isLocal = local
        self.peer: MemoryStream | None = None
        self.protocol: IProtocol | None = None
        self.readable = not (unidirectional and local)
        self.writable = not (unidirectional and not local)
        self.read_paused = False
        self.inbox: deque[tuple[str, Any]] = deque()
        self.inbox_bytes = 0
        self.producer: Any = None
        self.producer_paused = False
        self.lost = False
        self.end_reason: Failure | None = None
        self.written = 0

    # ITransport
    def write(self, data: bytes) -> None:
        if not self.writable or not data:
            return
        self.written += len(data)
        assert self.peer is not None
        self.connection.link.post(self.peer._receive, ("data", bytes(data)))
        self.peer.inbox_bytes += len(data)
        self._checkWater()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.writable:
            self.writable = False
            assert self.peer is not None
            self.connection.link.post(self.peer._receive, ("fin", None))
        self._maybeLost()

    def abortConnection(self, error_code: int = 0) -> None:
        if self.lost:
            return
        assert self.peer is not None
        if self.writable:
            self.connection.link.post(self.peer._receive, ("reset", error_code))
        if self.readable:
            self.connection.link.post(self.peer._receive, ("stop", error_code))
        self.writable = self.readable = False
        self.end_reason = self.end_reason or Failure(StreamAborted(error_code))
        self._maybeLost()

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None

    # IConsumer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        assert self.producer is None, "already has a producer"
        self.producer = producer
        self.producer_paused = False
        self._checkWater()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.producer_paused = False

    # IPushProducer (reading)
    def pauseProducing(self) -> None:
        self.read_paused = True

    def resumeProducing(self) -> None:
        self.read_paused = False
        self.connection.link.post(self._drain, None)

    def stopProducing(self) -> None:
        self.abortConnection()

    def unsentBytes(self) -> int:
        return self.peer.inbox_bytes if self.peer is not None else 0

    def _checkWater(self) -> None:
        if self.producer is None:
            return
        unsent = self.unsentBytes()
        if unsent > HIGH_WATER and not self.producer_paused:
            self.producer_paused = True
            IPushProducer(self.producer).pauseProducing()
        elif unsent < LOW_WATER and self.producer_paused:
            self.producer_paused = False
            IPushProducer(self.producer).resumeProducing()

    def _receive(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "stop":
            if self.writable:
                self.writable = False
                stop = getattr(self.protocol, "stopSendingReceived", None)
                if stop is not None:
                    stop(value)
                self.end_reason = self.end_reason or Failure(StreamStopped(value))
                self._maybeLost()
            return
        if not self.readable:
            return
        self.inbox.append(event)
        self._drain(None)

    def _drain(self, _: Any) -> None:
        while self.inbox and not self.read_paused and self.readable:
            kind, value = self.inbox.popleft()
            if kind == "data":
                self.inbox_bytes -= len(value)
                assert self.protocol is not None
                self.protocol.dataReceived(value)
                if self.peer is not None:
                    self.peer._checkWater()
            elif kind == "fin":
                self.readable = False
                half = IHalfCloseableProtocol(self.protocol, None)
                if self.writable and half is not None:
                    half.readConnectionLost()
                elif self.writable:
                    self.loseConnection()
                self._maybeLost()
            elif kind == "reset":
                self.readable = False
                self.inbox.clear()
                self.end_reason = self.end_reason or Failure(StreamReset(value))
                self._maybeLost()

    def _connectionLost(self, reason: Failure) -> None:
        self.readable = self.writable = False
        self.end_reason = reason
        self._maybeLost()

    def _maybeLost(self) -> None:
        if self.lost or self.readable or self.writable:
            return
        self.lost = True
        self.producer = None
        self.connection.streams.discard(self)
        if self.protocol is not None:
            self.protocol.connectionLost(
                self.end_reason or Failure(ConnectionDone("stream finished"))
            )


class MemoryConnection:
    """One end of an in-memory QUIC connection; give its handler with ``attach``."""

    def __init__(self, link: MemoryLink, is_client: bool) -> None:
        self.link = link
        self.is_client = is_client
        self.peer: MemoryConnection | None = None
        self.handler: Any = None
        self.streams: set[MemoryStream] = set()
        self.closed = False
        self.close_code: int | None = None
        self._next_bidi = 0 if is_client else 1
        self._next_uni = 2 if is_client else 3

    def openStream(self, protocol: IProtocol, *, unidirectional: bool = False) -> MemoryStream:
        if unidirectional:
            stream_id, self._next_uni = self._next_uni, self._next_uni + 4
        else:
            stream_id, self._next_bidi = self._next_bidi, self._next_bidi + 4
        local = MemoryStream(self, stream_id, unidirectional, True)
        assert self.peer is not None
        remote = MemoryStream(self.peer, stream_id, unidirectional, False)
        local.peer, remote.peer = remote, local
        self.streams.add(local)
        local.protocol = protocol
        protocol.makeConnection(local)  # type: ignore[arg-type]
        self.link.post(self.peer._peerOpened, remote)
        return local

    def _peerOpened(self, stream: MemoryStream) -> None:
        if self.closed:
            return
        protocol = self.handler.streamOpened(stream)
        if protocol is None:
            stream.abortConnection(0)
            return
        self.streams.add(stream)
        stream.protocol = protocol
        protocol.makeConnection(stream)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        if self.closed:
            return
        self.close_code = error_code
        self._end(ConnectionClosed(error_code, reason, by_peer=False))
        assert self.peer is not None
        self.link.post(
            lambda _: self.peer._end(ConnectionClosed(error_code, reason, by_peer=True)), None
        )

    def _end(self, error: ConnectionClosed) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = error.error_code
        failure = Failure(error)
        for stream in list(self.streams):
            stream._connectionLost(failure)
        self.handler.connectionLost(failure)


class MemoryLink:
    """A client and a server connection joined in memory."""

    def __init__(self) -> None:
        self.events: deque[tuple[Callable[[Any], None], Any]] = deque()
        self.client = MemoryConnection(self, True)
        self.server = MemoryConnection(self, False)
        self.client.peer, self.server.peer = self.server, self.client

    def post(self, call: Callable[[Any], None], value: Any) -> None:
        self.events.append((call, value))

    def connect(self, client_handler: Any, server_handler: Any) -> None:
        self.client.handler = client_handler
        self.server.handler = server_handler
        server_handler.connectionMade(self.server)
        client_handler.connectionMade(self.client)
        self.flush()

    def flush(self, limit: int = 1_000_000) -> None:
        for _ in range(limit):
            if not self.events:
                return
            call, value = self.events.popleft()
            call(value)
        raise AssertionError("the link never went quiet")
