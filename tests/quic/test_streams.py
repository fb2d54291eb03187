"""Streams over a real loopback QUIC connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pibridge.quic import (
    IQuicConnectionTransport,
    IQuicDatagramHandler,
    IQuicStreamTransport,
    PinnedFingerprintVerification,
    QuicConnectionTransport,
    QuicSettings,
    QuicStreamTransport,
    StreamReset,
    StreamStopped,
    connectQuic,
)
from tests.quic.conftest import StartServer
from tests.quic.support import (
    BulkProducer,
    Collector,
    Echo,
    HandlerFactory,
    RecordingHandler,
    timeboxed,
)

MIB = 1024 * 1024


def pinned(known_hosts: Path) -> PinnedFingerprintVerification:
    return PinnedFingerprintVerification(known_hosts=known_hosts, notify=lambda message: None)


async def connect(
    reactor: Any,
    port: Any,
    known_hosts: Path,
    handler: RecordingHandler | None = None,
    settings: QuicSettings | None = None,
) -> QuicConnectionTransport:
    connection: QuicConnectionTransport = await timeboxed(
        connectQuic(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            handler or RecordingHandler(),
            verification=pinned(known_hosts),
            settings=settings,
        ),
        reactor,
    )
    return connection


@pytest_twisted.ensureDeferred
async def test_echo_on_one_stream(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    port, factory = start_server(HandlerFactory(lambda stream: Echo()))
    client = RecordingHandler()
    connection = await connect(reactor, port, known_hosts, client)
    assert connection.alpn == "moq-00"
    collector = Collector()
    stream = connection.openStream(collector)
    for interface in (ITransport, IConsumer, IPushProducer, IQuicStreamTransport):
        assert verifyObject(interface, stream)
    assert verifyObject(IQuicConnectionTransport, connection)
    stream.write(b"hello, ")
    stream.write(b"quic")
    stream.loseConnection()
    reason = await timeboxed(collector.closed, reactor)
    assert isinstance(reason, ConnectionDone)
    assert collector.data == b"hello, quic"
    connection.close(error_code=3, reason="bye")
    client_reason = await timeboxed(client.lost, reactor)
    assert client_reason.by_peer is False
    server_reason = await timeboxed(factory.handlers[0].lost, reactor)
    assert server_reason.by_peer is True
    assert (server_reason.error_code, server_reason.reason) == (3, "bye")


class SmallMessages(Protocol):
    """Records, for each small message, how much of the bulk stream had arrived."""

    def __init__(self, bulk: Collector) -> None:
        self.bulk = bulk
        self.arrivals: list[tuple[bytes, int, bool]] = []

    def dataReceived(self, data: bytes) -> None:
        self.arrivals.append((data, self.bulk.received, self.bulk.ended.called))


@pytest_twisted.ensureDeferred
async def test_bulk_stream_intact_while_small_messages_stay_prompt(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    total = 64 * MIB
    bulk = Collector(hashOnly=True)
    small = SmallMessages(bulk)

    def choose(stream: QuicStreamTransport) -> Protocol:
        return bulk if stream.streamId == 0 else small

    port, _ = start_server(HandlerFactory(choose))
    connection = await connect(reactor, port, known_hosts)
    bulk_stream = connection.openStream(Protocol())
    small_stream = connection.openStream(Protocol())
    messages = [f"message {i:02d};".encode() for i in range(15)]

    def progress(sent: int) -> None:
        # One small message each time another 4 MiB of bulk has been written.
        while messages and sent >= (16 - len(messages)) * 4 * MIB:
            small_stream.write(messages.pop(0))

    producer = BulkProducer(reactor, bulk_stream, total, onProgress=progress)
    producer.start()
    await timeboxed(bulk.closed, reactor, 60)
    assert bulk.received == total
    assert bulk.digest.hexdigest() == producer.digest.hexdigest()
    received = b"".join(data for data, _, _ in small.arrivals)
    assert received == b"".join(f"message {i:02d};".encode() for i in range(15))
    # Every small message overtook the bulk data still queued behind it.
    assert all(not ended and got < total for _, got, ended in small.arrivals)
    assert max(got for _, got, _ in small.arrivals) < total - 1 * MIB


class PausedReader(Collector):
    """A reader that stops delivery as soon as it is connected."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_stalled_reader_bounds_sender_and_flow_resumes(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    settings = QuicSettings()
    reader = PausedReader(hashOnly=True)
    port, factory = start_server(HandlerFactory(lambda stream: reader), settings)
    connection = await connect(reactor, port, known_hosts, settings=settings)
    stream = connection.openStream(Protocol())
    total = 16 * MIB
    producer = BulkProducer(reactor, stream, total, chunk=64 * 1024)
    producer.start()
    while not producer.paused:
        await deferLater(reactor, 0.01)
    # Give the stalled transfer time to prove it stays stalled.
    await deferLater(reactor, 0.3)
    assert producer.paused
    assert reader.received == 0
    limit = settings.stream_high_water + producer.chunk
    stalled_at = producer.sent
    # The peer's credit plus our high-water mark is all that was ever written.
    assert stalled_at <= settings.receive_window + limit
    assert producer.maxUnsent <= limit
    assert stream.unsentBytes() <= limit
    server_stream = factory.handlers[0].opened[0]
    server_stream.resumeProducing()
    await timeboxed(reader.closed, reactor, 30)
    assert reader.received == total
    assert reader.digest.hexdigest() == producer.digest.hexdigest()
    assert producer.maxUnsent <= limit


class Aborter(Collector):
    """Aborts its stream (RESET_STREAM + STOP_SENDING) on the first data."""

    def __init__(self, error_code: int) -> None:
        super().__init__()
        self.error_code = error_code

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        assert self.transport is not None
        self.transport.abortConnection(self.error_code)  # type: ignore[attr-defined]


class StopReceiver(Collector):
    """Sends STOP_SENDING on the first data."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        assert self.transport is not None
        self.transport.stopReceiving(5)  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_peer_reset_and_stop_sending_arrive_as_events(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    server_protocols: list[Collector] = []

    def choose(stream: QuicStreamTransport) -> Collector:
        protocol: Collector = Aborter(7) if stream.streamId == 0 else StopReceiver()
        server_protocols.append(protocol)
        return protocol

    port, _ = start_server(HandlerFactory(choose))
    connection = await connect(reactor, port, known_hosts)

    reset_side = Collector()
    bidi = connection.openStream(reset_side)
    bidi.write(b"first")
    assert await timeboxed(reset_side.stopSending, reactor) == 7
    reason = await timeboxed(reset_side.closed, reactor)
    assert isinstance(reason, StreamReset)
    assert reason.error_code == 7
    bidi.write(b"after the reset")  # dropped, never raises
    bidi.loseConnection()

    stopped_side = Collector()
    uni = connection.openStream(stopped_side, unidirectional=True)
    uni.write(b"first")
    assert await timeboxed(stopped_side.stopSending, reactor) == 5
    reason = await timeboxed(stopped_side.closed, reactor)
    assert isinstance(reason, StreamStopped)
    for _ in range(3):
        uni.write(b"after STOP_SENDING")  # dropped, never raises
    uni.abortConnection(1)

    # The connection carries on.
    echo = Collector()
    connection.openStream(echo).write(b"still here")
    assert server_protocols[0].data == b"first"
    await timeboxed(deferLater(reactor, 0.05), reactor)
    assert connection.state.value == "established"


@pytest_twisted.ensureDeferred
async def test_server_opens_streams_and_refusal_stops_them(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    port, factory = start_server()
    received = Collector()
    client = RecordingHandler(lambda stream: received if stream.isUnidirectional else None)
    await connect(reactor, port, known_hosts, client)
    server_connection = await timeboxed(factory.handlers[0].made, reactor)
    opened = client.nextStream()
    push = server_connection.openStream(Protocol(), unidirectional=True)
    push.write(b"\x10pushed from the server")
    push.loseConnection()
    stream = await timeboxed(opened, reactor)
    assert stream.streamId == 3 and stream.isUnidirectional and not stream.isLocal
    await timeboxed(received.closed, reactor)
    assert received.data == b"\x10pushed from the server"

    refused = Collector()
    bidi = server_connection.openStream(refused)
    bidi.write(b"nobody wants this")
    reason = await timeboxed(refused.closed, reactor)
    assert isinstance(reason, StreamReset | StreamStopped)


@implementer(IQuicDatagramHandler)
class DatagramHandler(RecordingHandler):
    def __init__(self) -> None:
        super().__init__()
        self.datagrams: list[bytes] = []

    def datagramReceived(self, data: bytes) -> None:
        self.datagrams.append(data)


@pytest_twisted.ensureDeferred
async def test_datagrams_are_negotiated(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    server_handler = DatagramHandler()
    port, _ = start_server(lambda: server_handler)  # type: ignore[arg-type]
    connection = await connect(reactor, port, known_hosts)
    for _ in range(50):
        connection.sendDatagram(b"ping")
        await deferLater(reactor, 0.01)
        if server_handler.datagrams:
            break
    assert server_handler.datagrams[0] == b"ping"


@pytest_twisted.ensureDeferred
async def test_loopback_bulk_transfer_climbs_to_large_datagrams_while_it_runs(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    """The size probes get through even while a flood keeps the pacer busy."""
    from pibridge.quic.path_mtu import LARGEST_DATAGRAM_SIZE

    total = 48 * MIB
    bulk = Collector(hashOnly=True)
    port, _ = start_server(HandlerFactory(lambda stream: bulk))
    connection = await connect(reactor, port, known_hosts)
    producer = BulkProducer(reactor, connection.openStream(Protocol()), total)
    producer.start()
    await timeboxed(bulk.waitFor(total // 2), reactor, 60)
    assert connection.datagramSize == LARGEST_DATAGRAM_SIZE
    await timeboxed(bulk.closed, reactor, 60)
    assert bulk.received == total
    assert bulk.digest.hexdigest() == producer.digest.hexdigest()
