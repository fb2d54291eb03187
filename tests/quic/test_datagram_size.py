"""Datagram size search and ACKs riding in data: fewer, larger datagrams for the same bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.protocol import Protocol

from pibridge.quic import QuicSettings, TlsIdentity
from pibridge.quic import connection as connection_module
from pibridge.quic.path_mtu import (
    BASE_DATAGRAM_SIZE,
    LARGEST_DATAGRAM_SIZE,
    MAX_ATTEMPTS,
    DatagramSizeSearch,
    candidate_sizes,
    route_payload_limit,
)
from tests.quic.support import Collector, Echo, HandlerFactory
from tests.quic.test_memory import SERVER, Pair

LOOPBACK_LIMIT = 65536 - 28
ETHERNET_IPV4 = 1500 - 28


# --- the pure search ----------------------------------------------------------------


def test_candidates_follow_the_route_and_the_ceiling() -> None:
    assert candidate_sizes(1200, LOOPBACK_LIMIT, LARGEST_DATAGRAM_SIZE) == [1452, 1472, 16384]
    assert candidate_sizes(1200, ETHERNET_IPV4, LARGEST_DATAGRAM_SIZE) == [1452, 1472]
    assert candidate_sizes(1200, 1500 - 48, LARGEST_DATAGRAM_SIZE) == [1452]
    assert candidate_sizes(1200, LOOPBACK_LIMIT, 4000) == [1452, 1472, 4000]
    # A route the OS says nothing about is treated as Ethernet, never more.
    assert candidate_sizes(1200, None, LARGEST_DATAGRAM_SIZE) == [1452, 1472]
    # A tunnel below 1200 bytes, or a start already at the top: nothing to try.
    assert candidate_sizes(1200, 1180, LARGEST_DATAGRAM_SIZE) == []
    assert candidate_sizes(16384, LOOPBACK_LIMIT, LARGEST_DATAGRAM_SIZE) == []


def test_search_climbs_on_acknowledgements_and_stops_after_losses() -> None:
    search = DatagramSizeSearch(current=1200, candidates=[1452, 1472, 16384])
    assert search.next_probe() == 1452
    assert search.next_probe() is None  # one probe at a time
    search.probed(1452, acknowledged=True)
    assert search.current == 1452
    assert search.next_probe() == 1472
    search.probed(1472, acknowledged=True)
    for _ in range(MAX_ATTEMPTS):
        assert search.next_probe() == 16384
        search.probed(16384, acknowledged=False)
    assert search.finished
    assert search.current == 1472
    assert search.next_probe() is None


def test_search_ignores_outcomes_it_did_not_ask_for() -> None:
    search = DatagramSizeSearch(current=1200, candidates=[1452])
    search.probed(1452, acknowledged=True)  # nothing in flight: a stale report
    assert search.current == 1200
    assert search.next_probe() == 1452


def test_loopback_route_reports_its_mtu() -> None:
    # An IPv4 packet is at most 65535 bytes, whatever the device's MTU.
    mtu = min(int(Path("/sys/class/net/lo/mtu").read_text()), 65535)
    assert route_payload_limit("127.0.0.1", 4443) == mtu - 28
    assert route_payload_limit("not an address", 4443) is None


def test_settings_refuse_a_ceiling_the_stack_cannot_frame() -> None:
    with pytest.raises(ValueError, match="largest_datagram_size"):
        QuicSettings(largest_datagram_size=LARGEST_DATAGRAM_SIZE + 1)
    with pytest.raises(ValueError, match="largest_datagram_size"):
        QuicSettings(largest_datagram_size=BASE_DATAGRAM_SIZE - 1)


# --- connections in memory ------------------------------------------------------------


@pytest.fixture
def route_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int | None]]:
    """The route MTU the connections see (the memory pair's addresses are not real)."""
    limit: list[int | None] = [LOOPBACK_LIMIT]
    monkeypatch.setattr(connection_module, "route_payload_limit", lambda host, port: limit[0])
    yield limit


class LossyPair(Pair):
    """A memory pair whose path drops datagrams over ``path_limit`` bytes, both ways."""

    path_limit = 1 << 20
    dropped = 0

    def carries(self, data: bytes) -> bool:
        if len(data) > self.path_limit:
            self.dropped += 1
            return False
        return True

    def run(self, seconds: float, step: float = 0.005) -> None:
        """Let time pass in steps, moving datagrams as they come."""
        for _ in range(int(seconds / step)):
            while self.deliver():
                pass
            self.clientClock.advance(step)
            self.serverClock.advance(step)


def lossy_pair(
    identity: TlsIdentity,
    path_limit: int,
    streamProtocol: Any = None,
    settings: QuicSettings | None = None,
) -> LossyPair:
    pair = LossyPair(identity, settings or QuicSettings(), HandlerFactory(streamProtocol))
    pair.path_limit = path_limit
    pair.clientClock.advance(1000.0)
    pair.serverClock.advance(1000.0)
    pair.client.start(SERVER)
    pair.run(0.05)
    assert pair.outcomes == [pair.client]
    return pair


def server_connection(pair: Pair) -> Any:
    (connection,) = pair.server.connections
    return connection


def test_both_ends_climb_to_the_largest_size_a_clear_path_carries(
    identity: TlsIdentity, route_limit: list[int | None]
) -> None:
    pair = lossy_pair(identity, path_limit=1 << 20, streamProtocol=lambda stream: Collector())
    pair.run(0.2)
    assert pair.client.datagramSize == LARGEST_DATAGRAM_SIZE
    assert server_connection(pair).datagramSize == LARGEST_DATAGRAM_SIZE

    stream = pair.client.openStream(Protocol())
    stream.write(b"b" * 200_000)
    pair.clientClock.advance(0)
    sizes = [len(data) for data, _ in pair.clientWire.sent]
    assert max(sizes) == LARGEST_DATAGRAM_SIZE
    pair.run(0.5)
    (handler,) = pair.factory.handlers
    (collected,) = handler.opened
    assert collected.protocol.data == b"b" * 200_000


def test_a_path_that_drops_large_datagrams_keeps_the_base_size(
    identity: TlsIdentity, route_limit: list[int | None]
) -> None:
    pair = lossy_pair(identity, path_limit=1400, streamProtocol=lambda stream: Collector())
    pair.run(3.0)  # long enough for each probe to be declared lost, twice
    assert pair.dropped >= 2 * MAX_ATTEMPTS  # each side's probes died on the path
    assert pair.client.datagramSize == BASE_DATAGRAM_SIZE
    assert server_connection(pair).datagramSize == BASE_DATAGRAM_SIZE
    assert pair.client._sizeSearch is not None and pair.client._sizeSearch.finished

    stream = pair.client.openStream(Protocol())
    stream.write(b"c" * 100_000)
    pair.run(1.0)
    (handler,) = pair.factory.handlers
    (collected,) = handler.opened
    assert collected.protocol.data == b"c" * 100_000


def test_an_ethernet_route_stops_at_ethernet_sizes(
    identity: TlsIdentity, route_limit: list[int | None]
) -> None:
    route_limit[0] = ETHERNET_IPV4
    pair = lossy_pair(identity, path_limit=1 << 20)
    pair.run(0.2)
    assert pair.client.datagramSize == ETHERNET_IPV4
    assert server_connection(pair).datagramSize == ETHERNET_IPV4


def test_probing_can_be_turned_off(identity: TlsIdentity, route_limit: list[int | None]) -> None:
    pair = lossy_pair(identity, 1 << 20, settings=QuicSettings(probe_datagram_size=False))
    pair.run(0.2)
    assert pair.client.datagramSize == BASE_DATAGRAM_SIZE
    assert server_connection(pair).datagramSize == BASE_DATAGRAM_SIZE


def test_an_echo_costs_one_datagram_each_way(
    identity: TlsIdentity, route_limit: list[int | None]
) -> None:
    """The ACK of a keystroke rides in its echo, and the ACK of the echo in the next keystroke."""
    pair = lossy_pair(identity, path_limit=1 << 20, streamProtocol=lambda stream: Echo())
    pair.run(0.3)  # the size search is over; nothing is left to acknowledge
    received = Collector()
    stream = pair.client.openStream(received)
    sent = 0
    rounds = 50
    for index in range(rounds):
        stream.write(bytes([65 + index % 26]))
        pair.clientClock.advance(0)
        up = pair.clientWire.take()
        for data, _ in up:
            pair.server.datagramReceived(data, pair.clientAddress)
        pair.serverClock.advance(0)
        down = pair.serverSocket.take()
        for data, _ in down:
            pair.client.datagramReceived(data, SERVER)
        sent += len(up) + len(down)
        # A person types a key every few hundred microseconds at the fastest.
        pair.clientClock.advance(0.0002)
        pair.serverClock.advance(0.0002)
    assert received.data == bytes(65 + index % 26 for index in range(rounds))
    assert sent == 2 * rounds
