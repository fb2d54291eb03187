"""The connection pump in memory: one re-armed timer, a fake clock, no sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from pibridge.quic import IdleTimeout, QuicConnectionTransport, QuicSettings, TlsIdentity
from pibridge.quic.endpoint import QuicServerProtocol
from pibridge.quic.engine import CreditedQuicConnection
from tests.quic.support import Collector, HandlerFactory, RecordingHandler

CLIENT = ("10.0.0.1", 40000)
SERVER = ("10.0.0.2", 4443)


class Wire:
    """Datagrams one side sent, held until the test delivers (or drops) them."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def take(self) -> list[tuple[bytes, Any]]:
        sent, self.sent = self.sent, []
        return sent


class ClientEndpoint(Wire):
    def sendDatagram(self, data: bytes, address: Any) -> None:
        self.sent.append((data, address))

    def connectionIdIssued(self, connection: Any, cid: bytes) -> None:
        pass

    def connectionIdRetired(self, connection: Any, cid: bytes) -> None:
        pass

    def connectionEnded(self, connection: Any) -> None:
        pass

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *CLIENT)


class ServerSocket(Wire):
    """Stands in for the server's UDP port."""

    def write(self, data: bytes, address: Any) -> None:
        self.sent.append((data, address))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", *SERVER)


class Pair:
    def __init__(
        self,
        identity: TlsIdentity,
        settings: QuicSettings,
        factory: HandlerFactory | None = None,
    ) -> None:
        self.clientClock = MemoryReactorClock()
        self.serverClock = MemoryReactorClock()
        self.clientQuic = CreditedQuicConnection(
            configuration=settings.aioquic_configuration(is_client=True)
        )
        self.clientWire = ClientEndpoint()
        self.outcomes: list[QuicConnectionTransport | Failure] = []
        self.clientHandler = RecordingHandler()
        self.client = QuicConnectionTransport(
            self.clientClock,
            self.clientQuic,
            self.clientWire,
            settings,
            self.clientHandler,
            handshake_outcome=self.outcomes.append,
        )
        self.factory = factory or HandlerFactory()
        self.server = QuicServerProtocol(
            self.serverClock,
            settings.aioquic_configuration(is_client=False, identity=identity),
            settings,
            self.factory,
        )
        self.serverSocket = ServerSocket()
        self.clientAddress = CLIENT
        self.server.transport = self.serverSocket  # type: ignore[assignment]

    def deliver(self) -> int:
        """Run what is due now, then move every pending datagram across once."""
        self.clientClock.advance(0)
        self.serverClock.advance(0)
        moved = 0
        for data, _ in self.clientWire.take():
            if self.carries(data):
                self.server.datagramReceived(data, self.clientAddress)
                moved += 1
        for data, _ in self.serverSocket.take():
            if self.carries(data):
                self.client.datagramReceived(data, SERVER)
                moved += 1
        return moved

    def carries(self, data: bytes) -> bool:
        """Whether the path delivers this datagram (every one, here)."""
        return True


def timer_of(clock: MemoryReactorClock) -> float:
    (call,) = clock.getDelayedCalls()
    return call.getTime()


def test_one_timer_re_armed_not_stacked(identity: TlsIdentity) -> None:
    pair = Pair(identity, QuicSettings(idle_timeout=20.0))
    clock, quic = pair.clientClock, pair.clientQuic
    clock.advance(1000.0)  # aioquic must see the fake clock, not the wall clock
    pair.client.start(SERVER)
    assert len(pair.clientWire.sent) >= 1
    first = timer_of(clock)
    assert first == quic.get_timer()
    assert 1000.0 < first < 1000.0 + 20.0

    # The Initial is lost: each firing retransmits and re-arms the single timer.
    deadlines = [first]
    for _ in range(4):
        pair.clientWire.take()
        clock.advance(timer_of(clock) - clock.seconds())
        assert len(pair.clientWire.sent) >= 1  # probe sent
        deadlines.append(timer_of(clock))  # still exactly one DelayedCall
        assert deadlines[-1] == quic.get_timer()
    assert deadlines == sorted(deadlines) and len(set(deadlines)) == len(deadlines)

    # Now let datagrams through: many inputs, never more than one timer per side.
    while pair.deliver():
        assert len(pair.clientClock.getDelayedCalls()) <= 1
        assert len(pair.serverClock.getDelayedCalls()) <= 1
    assert pair.outcomes == [pair.client]
    assert pair.factory.handlers[0].made.called

    # Idle: both sides end with IdleTimeout, leaving no timers and no server state.
    pair.clientClock.advance(25.0)
    pair.serverClock.advance(25.0)
    assert isinstance(pair.clientHandler.lost.result, IdleTimeout)
    assert isinstance(pair.factory.handlers[0].lost.result, IdleTimeout)
    assert pair.clientClock.getDelayedCalls() == []
    assert pair.serverClock.getDelayedCalls() == []
    assert pair.server.connections == []


def test_writes_in_one_turn_share_one_transmit(identity: TlsIdentity) -> None:
    pair = Pair(identity, QuicSettings())
    pair.client.start(SERVER)
    while pair.deliver():
        pass
    stream = pair.client.openStream(Protocol())
    for _ in range(50):
        stream.write(b"x" * 100)
    assert pair.clientWire.sent == []  # nothing sent per write
    calls = pair.clientClock.getDelayedCalls()
    assert len(calls) == 2  # the connection timer and one pending transmit
    pair.clientClock.advance(0)
    sent = pair.clientWire.take()
    # 5000 bytes go out in a handful of full datagrams, not one per write.
    assert 1 <= len(sent) <= 8
    assert sum(len(data) for data, _ in sent) < 50 * 100 + 8 * 100
    assert len(pair.clientClock.getDelayedCalls()) == 1


def established(identity: TlsIdentity, settings: QuicSettings) -> Pair:
    pair = Pair(identity, settings)
    pair.client.start(SERVER)
    while pair.deliver():
        pass
    assert pair.outcomes == [pair.client]
    return pair


def test_new_connection_id_and_new_address_reach_the_same_connection(
    identity: TlsIdentity,
) -> None:
    received = Collector()
    pair = established(identity, QuicSettings())
    pair.factory.handlers[0].streamProtocol = lambda stream: received
    server_cids = len(pair.server._byCid)
    assert server_cids > 2  # issued connection ids are routed too

    stream = pair.client.openStream(Protocol())
    stream.write(b"before")
    pair.clientClock.advance(0)
    pair.deliver()
    pair.clientQuic.change_connection_id()
    stream.write(b" after a new connection id")
    pair.clientClock.advance(0)
    # ...and from a new source address, as after a NAT rebinding.
    pair.clientAddress = ("10.0.0.9", 50000)
    while pair.deliver():
        pass
    assert received.data == b"before after a new connection id"
    assert pair.server.connections[0].peerAddress == ("10.0.0.9", 50000)
    assert len(pair.server.connections) == 1


class CountingProducer:
    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1

    def stopProducing(self) -> None:
        pass


def test_connection_wide_high_water_pauses_every_producer(identity: TlsIdentity) -> None:
    settings = QuicSettings(
        stream_high_water=64 * 1024,
        stream_low_water=16 * 1024,
        connection_high_water=96 * 1024,
        connection_low_water=8 * 1024,
    )
    pair = established(identity, settings)
    pair.factory.handlers[0].streamProtocol = lambda stream: Collector()
    streams = [pair.client.openStream(Protocol()) for _ in range(2)]
    producers = [CountingProducer() for _ in streams]
    for stream, producer in zip(streams, producers, strict=True):
        stream.registerProducer(producer, True)
    # Each stream stays under its own mark, together they pass the connection's.
    for stream in streams:
        stream.write(b"y" * 50 * 1024)
    assert [p.pauses for p in producers] == [1, 1]
    assert pair.client.unsentBytes() == 100 * 1024
    # As the data drains to the peer, both resume.
    for _ in range(200):
        pair.clientClock.advance(0.001)
        pair.serverClock.advance(0.001)
        pair.deliver()
        if all(p.resumes for p in producers):
            break
    assert [p.resumes for p in producers] == [1, 1]
    assert pair.client.unsentBytes() < settings.connection_low_water
