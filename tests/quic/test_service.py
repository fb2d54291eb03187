"""The server as a Twisted service, socket buffers, and cancelling a connect."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError

from pibridge.quic import (
    ConnectionClosed,
    PinnedFingerprintVerification,
    QuicServerService,
    TlsIdentity,
    connectQuic,
)
from tests.quic.conftest import StartServer
from tests.quic.support import HandlerFactory, RecordingHandler, timeboxed

MIB = 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_closes_connections_and_port(
    reactor: Any, identity: TlsIdentity, known_hosts: Path
) -> None:
    factory = HandlerFactory()
    service = QuicServerService(reactor, 0, identity, factory, interface="127.0.0.1")
    service.startService()
    assert service.listeningPort is not None
    number = service.listeningPort.getHost().port
    client = RecordingHandler()
    await timeboxed(
        connectQuic(
            reactor,
            "127.0.0.1",
            number,
            client,
            verification=PinnedFingerprintVerification(
                known_hosts=known_hosts, notify=lambda message: None
            ),
        ),
        reactor,
    )
    await timeboxed(factory.handlers[0].made, reactor)
    await service.stopService()
    server_reason = await timeboxed(factory.handlers[0].lost, reactor)
    assert isinstance(server_reason, ConnectionClosed) and not server_reason.by_peer
    client_reason = await timeboxed(client.lost, reactor)
    assert isinstance(client_reason, ConnectionClosed) and client_reason.by_peer
    assert "shutting down" in client_reason.reason
    # The port is really closed: it can be bound again.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", number))
    finally:
        probe.close()


def test_socket_buffers_are_raised(start_server: StartServer) -> None:
    port, _ = start_server()
    sock = port._udp.socket
    wanted = 4 * MIB
    if os.geteuid() != 0:  # without privileges the kernel's maximum applies
        wanted = min(wanted, int(Path("/proc/sys/net/core/rmem_max").read_text()))
    # Linux reports twice the size asked for (it counts its own bookkeeping).
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= wanted
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= min(
        wanted, int(Path("/proc/sys/net/core/wmem_max").read_text())
    )


@pytest_twisted.ensureDeferred
async def test_cancelling_a_connect_stops_it(reactor: Any, known_hosts: Path) -> None:
    silent = reactor.listenUDP(0, _Silent(), interface="127.0.0.1")
    try:
        attempt = connectQuic(
            reactor,
            "127.0.0.1",
            silent.getHost().port,
            RecordingHandler(),
            verification=PinnedFingerprintVerification(known_hosts=known_hosts),
        )
        attempt.cancel()
        with pytest.raises(CancelledError):
            await attempt
    finally:
        await silent.stopListening()


class _Silent:
    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        pass
