"""A server keeps serving through garbage, truncated Initials and vanished clients."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from pibridge.quic import IdleTimeout, QuicSettings
from tests.quic.conftest import StartServer
from tests.quic.support import Collector, Echo, HandlerFactory, timeboxed
from tests.quic.test_streams import connect

REPO = Path(__file__).resolve().parents[2]


def long_header(version: int, size: int, *, first_byte: int = 0xC0) -> bytes:
    """An Initial-looking datagram of ``size`` bytes whose payload is junk."""
    buf = Buffer(capacity=64)
    buf.push_uint8(first_byte)
    buf.push_uint32(version)
    buf.push_uint8(8)
    buf.push_bytes(os.urandom(8))
    buf.push_uint8(8)
    buf.push_bytes(os.urandom(8))
    buf.push_uint_var(0)  # token length
    header = buf.data
    remaining = size - len(header) - 2
    return header + (0x4000 | remaining).to_bytes(2, "big") + os.urandom(remaining)


class Prober(DatagramProtocol):
    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.reply: Deferred[bytes] = Deferred()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.replies.append(data)
        if not self.reply.called:
            self.reply.callback(data)


async def echo_works(reactor: Any, port: Any, known_hosts: Path) -> None:
    connection = await connect(reactor, port, known_hosts)
    collector = Collector()
    stream = connection.openStream(collector)
    stream.write(b"ping")
    stream.loseConnection()
    await timeboxed(collector.closed, reactor)
    assert collector.data == b"ping"
    connection.close()


@pytest_twisted.ensureDeferred
async def test_garbage_and_bad_initials_are_dropped_quietly(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    port, factory = start_server(
        HandlerFactory(lambda stream: Echo()), QuicSettings(idle_timeout=0.5)
    )
    server = port.protocol
    bystander = await connect(reactor, port, known_hosts)
    bystander_echo = Collector()
    bystander_stream = bystander.openStream(bystander_echo)
    # The bystander keeps talking, so only the junk connection goes idle.
    keepalive = LoopingCall(bystander_stream.write, b".")
    keepalive.clock = reactor
    keepalive.start(0.1)

    prober = Prober()
    udp = reactor.listenUDP(0, prober, interface="127.0.0.1")
    try:
        target = ("127.0.0.1", port.getHost().port)
        junk = [
            b"",
            b"\x00",
            os.urandom(40),
            b"\x40" + os.urandom(1300),  # short header, unknown connection id
            long_header(1, 600),  # truncated Initial
            long_header(1, 1200)[:1199],  # one byte short
            long_header(1, 4000),  # oversized Initial
            b"\xc0\x00\x00\x00\x01\xff" + os.urandom(1300),  # impossible cid length
            long_header(0x1A2A3A4A, 300),  # unknown version, too small to deserve a reply
            long_header(0, 1200),  # a Version Negotiation packet is never answered
        ]
        for datagram in junk:
            udp.write(datagram, target)
        await deferLater(reactor, 0.1)
        assert server.connections == [bystander_connection(server)]
        assert prober.replies == []

        # An unknown version gets a Version Negotiation packet listing ours.
        udp.write(long_header(0x1A2A3A4A, 1200), target)
        reply = await timeboxed(prober.reply, reactor)
        assert reply[1:5] == b"\x00\x00\x00\x00"
        assert b"\x00\x00\x00\x01" in reply[5:]

        # A well-formed Initial full of junk creates state that the idle timeout frees.
        udp.write(long_header(1, 1200), target)
        await deferLater(reactor, 0.05)
        assert len(server.connections) == 2
        while len(server.connections) > 1:
            await deferLater(reactor, 0.1)
    finally:
        await udp.stopListening()
        keepalive.stop()

    sent = bystander_echo.received
    bystander_stream.write(b"still served")
    await timeboxed(bystander_echo.waitFor(sent + len(b"still served")), reactor)
    assert bystander_echo.data.endswith(b"still served")
    assert set(bystander_echo.data[:sent]) == {ord(".")}
    await echo_works(reactor, port, known_hosts)
    assert len(factory.handlers) >= 2


def bystander_connection(server: Any) -> Any:
    (connection,) = [c for c in server.connections if c.state.value == "established"]
    return connection


class ClientProcess(ProcessProtocol):
    def __init__(self) -> None:
        self.streaming: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"streaming" in self.output and not self.streaming.called:
            self.streaming.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        if not self.streaming.called:
            self.streaming.errback(RuntimeError(self.output.decode(errors="replace")))
        reason.trap(ProcessTerminated)
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_vanished_client_is_freed_after_idle_timeout(
    reactor: Any, start_server: StartServer, known_hosts: Path
) -> None:
    received = Collector(hashOnly=True)
    port, factory = start_server(
        HandlerFactory(lambda stream: received if not received.received else Echo()),
        QuicSettings(idle_timeout=0.5),
    )
    process = ClientProcess()
    transport = reactor.spawnProcess(
        process,
        sys.executable,
        [
            sys.executable,
            "-m",
            "tests.quic.vanishing_client",
            str(port.getHost().port),
            str(known_hosts),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        path=str(REPO),
    )
    await timeboxed(process.streaming, reactor, 30)
    await timeboxed(received.waitFor(64 * 1024), reactor)
    transport.signalProcess(signal.SIGKILL)
    await timeboxed(process.ended, reactor)

    handler = factory.handlers[0]
    reason = await timeboxed(handler.lost, reactor)
    assert isinstance(reason, IdleTimeout)
    stream_reason = await timeboxed(received.closed, reactor)
    assert isinstance(stream_reason, IdleTimeout)
    assert port.protocol.connections == []
    await echo_works(reactor, port, known_hosts)
