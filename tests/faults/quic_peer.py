"""QUIC echo peers for fault tests, usable in-process or as a program in a namespace.

The client writes a seeded payload on one stream (pausing when the adapter
says so), finishes it, and hashes what the server echoes back; intact means
the echo has the payload's length and SHA-256.

As a program (``python -m tests.faults.quic_peer serve|send ...``) each side
prints one JSON line: ``serve`` its port once listening, ``send`` its result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.quic import (
    IQuicConnectionHandler,
    PinnedFingerprintVerification,
    QuicConnectionTransport,
    QuicListeningPort,
    QuicSettings,
    QuicStreamTransport,
    connectQuic,
    listenQuic,
    load_or_create_identity,
)

CHUNK = 16 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    """``size`` seeded pseudo-random bytes: no two chunks alike, so a swap shows."""
    return random.Random(seed).randbytes(size)


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echoes a stream back and finishes when the peer finishes."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IQuicConnectionHandler)
@attrs.define(eq=False)
class EchoServerHandler:
    """One server connection: every stream the client opens is echoed."""

    connection: QuicConnectionTransport | None = None
    ended: Deferred[BaseException] = attrs.field(factory=Deferred)

    def connectionMade(self, connection: QuicConnectionTransport) -> None:
        self.connection = connection

    def streamOpened(self, stream: QuicStreamTransport) -> Echo:
        return Echo()

    def connectionLost(self, reason: Failure) -> None:
        assert reason.value is not None
        self.ended.callback(reason.value)


@attrs.define(eq=False)
class EchoServerFactory:
    """Makes and remembers one handler per connection, so tests can count them."""

    handlers: list[EchoServerHandler] = attrs.field(factory=list)

    def __call__(self) -> EchoServerHandler:
        handler = EchoServerHandler()
        self.handlers.append(handler)
        return handler


@implementer(IQuicConnectionHandler)
@attrs.define(eq=False)
class ClientHandler:
    """The client side of a connection; records how it ended."""

    lost: Deferred[BaseException] = attrs.field(factory=Deferred)

    def connectionMade(self, connection: QuicConnectionTransport) -> None:
        pass

    def streamOpened(self, stream: QuicStreamTransport) -> None:
        return None

    def connectionLost(self, reason: Failure) -> None:
        assert reason.value is not None
        self.lost.callback(reason.value)


@attrs.frozen
class TransferResult:
    """What came back: enough to tell whether the echo was intact."""

    sent: int
    sent_sha256: str
    received: int
    received_sha256: str
    seconds: float

    @property
    def intact(self) -> bool:
        return self.received == self.sent and self.received_sha256 == self.sent_sha256


@implementer(IPushProducer, IHalfCloseableProtocol)
@attrs.define(eq=False)
class EchoTransfer(Protocol):
    """Writes ``data`` on its stream with backpressure and hashes the echo.

    ``on_progress(echoed_bytes)`` runs after each arrival, so a test can act
    mid-transfer (cut the link, rebind) at a chosen point.
    """

    data: bytes
    clock: Any
    on_progress: Callable[[int], None] | None = None
    done: Deferred[TransferResult] = attrs.field(factory=Deferred)
    received: int = 0
    _digest: Any = attrs.field(factory=hashlib.sha256)
    _offset: int = 0
    _paused: bool = False
    _scheduled: bool = False
    _started: float = 0.0

    def connectionMade(self) -> None:
        assert isinstance(self.transport, QuicStreamTransport)
        self._started = time.monotonic()
        self.transport.registerProducer(self, True)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self._paused = True

    def _schedule(self) -> None:
        if not self._scheduled and self._offset < len(self.data):
            self._scheduled = True
            self.clock.callLater(0, self._produce)

    def _produce(self) -> None:
        self._scheduled = False
        transport = self.transport
        assert isinstance(transport, QuicStreamTransport)
        for _ in range(8):  # yield to the reactor now and then so data moves
            if self._paused or self._offset >= len(self.data):
                break
            chunk = self.data[self._offset : self._offset + CHUNK]
            self._offset += len(chunk)
            transport.write(chunk)
        if self._offset >= len(self.data):
            transport.unregisterProducer()
            transport.loseConnection()
        elif not self._paused:
            self._schedule()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self._digest.update(data)
        if self.on_progress is not None:
            self.on_progress(self.received)

    def readConnectionLost(self) -> None:
        self._finish()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            if self.received == len(self.data):
                self._finish()
            else:
                self.done.errback(reason)

    def _finish(self) -> None:
        if self.done.called:
            return
        self.done.callback(
            TransferResult(
                sent=len(self.data),
                sent_sha256=hashlib.sha256(self.data).hexdigest(),
                received=self.received,
                received_sha256=self._digest.hexdigest(),
                seconds=time.monotonic() - self._started,
            )
        )


def echo_transfer(
    connection: QuicConnectionTransport,
    data: bytes,
    clock: Any,
    on_progress: Callable[[int], None] | None = None,
) -> Deferred[TransferResult]:
    """Open a stream, send ``data``, and fire with the result once the echo ends."""
    transfer = EchoTransfer(data, clock, on_progress)
    connection.openStream(transfer)
    return transfer.done


def port_number(port: QuicListeningPort | Any) -> int:
    """The port number a listening port got (they are all ephemeral here)."""
    host = port.getHost()
    assert isinstance(host, IPv4Address | IPv6Address)
    return host.port


def fault_settings(idle_timeout: float = 30.0) -> QuicSettings:
    """Adapter settings for impaired paths: the defaults, with a chosen idle timeout."""
    return QuicSettings(idle_timeout=idle_timeout)


def _serve(reactor: Any, options: argparse.Namespace) -> Deferred[None]:
    identity = load_or_create_identity(Path(options.state))
    port = listenQuic(
        reactor,
        options.port,
        identity,
        EchoServerFactory(),
        interface=options.host,
        settings=fault_settings(options.idle_timeout),
    )
    print(json.dumps({"port": port_number(port)}), flush=True)
    return Deferred()  # serve until killed


async def _send(reactor: Any, options: argparse.Namespace) -> None:
    handler = ClientHandler()
    connection = await connectQuic(
        reactor,
        options.host,
        options.port,
        handler,
        verification=PinnedFingerprintVerification(
            known_hosts=Path("/nonexistent"), expected_fingerprint=options.fingerprint
        ),
        settings=fault_settings(options.idle_timeout),
        timeout=options.timeout,
    )
    print(json.dumps({"connected": True}), flush=True)
    every = options.progress_every
    reported = [0]

    def progress(echoed: int) -> None:
        if every and echoed >= reported[0] + every:
            reported[0] = echoed - echoed % every
            print(json.dumps({"progress": echoed}), flush=True)

    data = payload(options.size, options.seed)
    result = await echo_transfer(connection, data, reactor, progress)
    connection.close()
    print(json.dumps(attrs.asdict(result) | {"intact": result.intact}), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run one side of the echo as a program (inside a network namespace)."""
    from twisted.internet import reactor as installed
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    del installed
    parser = argparse.ArgumentParser(prog="quic_peer")
    parser.add_argument("role", choices=["serve", "send"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", help="server identity directory")
    parser.add_argument("--fingerprint", help="server certificate fingerprint to pin")
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--progress-every", type=int, default=0, help="report every N bytes")
    options = parser.parse_args(argv)

    def run(reactor: Any) -> Deferred[None]:
        if options.role == "serve":
            return _serve(reactor, options)
        return ensureDeferred(_send(reactor, options))

    react(run)


if __name__ == "__main__":
    main(sys.argv[1:])
