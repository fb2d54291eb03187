"""Handlers and protocols shared by the QUIC adapter tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.quic import (
    IQuicConnectionHandler,
    IQuicStreamProtocol,
    QuicConnectionTransport,
    QuicStreamTransport,
)

WAIT = 10.0  # seconds any single awaited event may take


def timeboxed(d: Deferred[Any], reactor: Any, seconds: float = WAIT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


@implementer(IQuicConnectionHandler)
class RecordingHandler:
    """A connection handler that records what happens and attaches protocols by factory."""

    def __init__(self, streamProtocol: Callable[[QuicStreamTransport], Any] | None = None) -> None:
        self.streamProtocol = streamProtocol
        self.connection: QuicConnectionTransport | None = None
        self.made: Deferred[QuicConnectionTransport] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()
        self.opened: list[QuicStreamTransport] = []
        self.streamWaiters: list[Deferred[QuicStreamTransport]] = []

    def connectionMade(self, connection: QuicConnectionTransport) -> None:
        self.connection = connection
        self.made.callback(connection)

    def streamOpened(self, stream: QuicStreamTransport) -> Any:
        self.opened.append(stream)
        protocol = self.streamProtocol(stream) if self.streamProtocol else None
        waiters, self.streamWaiters = self.streamWaiters, []
        for waiter in waiters:
            waiter.callback(stream)
        return protocol

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(reason.value)

    def nextStream(self) -> Deferred[QuicStreamTransport]:
        d: Deferred[QuicStreamTransport] = Deferred()
        self.streamWaiters.append(d)
        return d


class HandlerFactory:
    """Builds one RecordingHandler per server connection and remembers them."""

    def __init__(self, streamProtocol: Callable[[QuicStreamTransport], Any] | None = None) -> None:
        self.streamProtocol = streamProtocol
        self.handlers: list[RecordingHandler] = []
        self.waiters: list[Deferred[RecordingHandler]] = []

    def __call__(self) -> RecordingHandler:
        handler = RecordingHandler(self.streamProtocol)
        self.handlers.append(handler)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(handler)
        return handler

    def nextHandler(self) -> Deferred[RecordingHandler]:
        d: Deferred[RecordingHandler] = Deferred()
        self.waiters.append(d)
        return d


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echoes everything; finishes its side when the peer finishes."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IQuicStreamProtocol, IHalfCloseableProtocol)
class Collector(Protocol):
    """Collects bytes; fires ``ended`` on FIN and ``closed`` on connectionLost."""

    def __init__(self, *, hashOnly: bool = False) -> None:
        self.hashOnly = hashOnly
        self.chunks: list[bytes] = []
        self.digest = hashlib.sha256()
        self.received = 0
        self.ended: Deferred[None] = Deferred()
        self.closed: Deferred[BaseException] = Deferred()
        self.stopSending: Deferred[int] = Deferred()
        self.waiters: list[tuple[int, Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.hashOnly:
            self.digest.update(data)
        else:
            self.chunks.append(data)
        ready = [w for w in self.waiters if self.received >= w[0]]
        self.waiters = [w for w in self.waiters if self.received < w[0]]
        for _, waiter in ready:
            waiter.callback(None)

    def waitFor(self, size: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.received >= size:
            d.callback(None)
        else:
            self.waiters.append((size, d))
        return d

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def readConnectionLost(self) -> None:
        self.ended.callback(None)
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def stopSendingReceived(self, error_code: int) -> None:
        self.stopSending.callback(error_code)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.ended.called:
            self.ended.callback(None)
        self.closed.callback(reason.value)


@implementer(IPushProducer)
class BulkProducer:
    """Writes ``total`` bytes of deterministic data in chunks, as fast as allowed."""

    def __init__(
        self,
        reactor: Any,
        stream: QuicStreamTransport,
        total: int,
        chunk: int = 64 * 1024,
        onProgress: Callable[[int], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.stream = stream
        self.total = total
        self.chunk = chunk
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.maxUnsent = 0
        self.onProgress = onProgress
        self.digest = hashlib.sha256()
        self.done: Deferred[None] = Deferred()
        self._block = bytes(range(256)) * (chunk // 256)
        self._scheduled = False

    def start(self) -> None:
        self.stream.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.reactor.callLater(0, self._produce)

    def _produce(self) -> None:
        self._scheduled = False
        # Write until paused, but yield to the reactor now and then so data moves.
        for _ in range(16):
            if self.paused or self.sent >= self.total:
                break
            size = min(self.chunk, self.total - self.sent)
            block = self._block[:size]
            self.digest.update(block)
            self.sent += size
            self.stream.write(block)
            self.maxUnsent = max(self.maxUnsent, self.stream.unsentBytes())
            if self.onProgress is not None:
                self.onProgress(self.sent)
        if self.sent >= self.total:
            self.stream.unregisterProducer()
            self.stream.loseConnection()
            if not self.done.called:
                self.done.callback(None)
        elif not self.paused:
            self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.paused = True
