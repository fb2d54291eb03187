"""The impairment relay on its own: decisions in memory, forwarding over loopback UDP."""

# pytest_twisted has no type hints.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from tests.faults.impair import (
    ImpairedLink,
    ImpairmentRelay,
    Jitter,
    LinkConditions,
)

WAIT = 5.0


def link(conditions: LinkConditions, seed: int = 7) -> tuple[Clock, ImpairedLink, list[Any]]:
    """A link on a fake clock that records (time, datagram) on delivery."""
    clock = Clock()
    arrivals: list[tuple[float, bytes]] = []
    impaired = ImpairedLink(
        clock, random.Random(seed), lambda data: arrivals.append((clock.seconds(), data))
    )
    impaired.conditions = conditions
    return clock, impaired, arrivals


def drain(clock: Clock, seconds: float, step: float = 0.0001) -> None:
    """Advance in small steps, so each delivery is seen at (about) its own time."""
    clock.pump([step] * round(seconds / step))


def run_sequence(conditions: LinkConditions, seed: int, count: int = 500) -> list[Any]:
    """Submit ``count`` numbered datagrams 1 ms apart and return what arrived, when."""
    clock, impaired, arrivals = link(conditions, seed)
    for number in range(count):
        impaired.submit(number.to_bytes(4, "big"))
        clock.advance(0.001)
    clock.advance(10)
    return arrivals


MIXED = LinkConditions(delay=0.1, jitter=0.05, loss=0.03, reorder=0.01, duplicate=0.01)


def test_same_seed_same_decisions() -> None:
    first = run_sequence(MIXED, seed=42)
    again = run_sequence(MIXED, seed=42)
    other = run_sequence(MIXED, seed=43)
    assert first == again
    assert first != other


def test_loss_drops_about_the_asked_share_and_counts_it() -> None:
    clock, impaired, arrivals = link(LinkConditions(loss=0.05), seed=1)
    for number in range(4000):
        impaired.submit(number.to_bytes(4, "big"))
        clock.advance(0.001)
    counters = impaired.counters
    assert 140 <= counters.lost <= 260
    assert counters.forwarded == len(arrivals) == 4000 - counters.lost
    assert counters.dropped == counters.lost


@pytest.mark.parametrize("distribution", list(Jitter))
def test_delay_and_jitter_stay_in_range(distribution: Jitter) -> None:
    conditions = LinkConditions(
        delay=0.1, jitter=0.05, jitter_distribution=distribution, keep_order=False
    )
    clock, impaired, arrivals = link(conditions)
    for number in range(1000):
        impaired.submit(number.to_bytes(4, "big"))
    drain(clock, 0.4)
    delays = [at for at, _ in arrivals]  # all were sent at 0
    assert len(delays) == 1000
    assert min(delays) >= 0.0
    mean = sum(delays) / len(delays)
    assert 0.09 <= mean <= 0.11
    if distribution is Jitter.UNIFORM:
        assert 0.05 <= min(delays) < 0.06
        assert 0.14 < max(delays) <= 0.1502
    else:
        spread = (sum((d - mean) ** 2 for d in delays) / len(delays)) ** 0.5
        assert 0.04 <= spread <= 0.06


def test_jitter_alone_keeps_order_unless_told_otherwise() -> None:
    jittery = LinkConditions(delay=0.1, jitter=0.05)
    ordered = [data for _, data in run_sequence(jittery, seed=3)]
    assert ordered == sorted(ordered)
    shuffled = [data for _, data in run_sequence(jittery.replace(keep_order=False), seed=3)]
    assert shuffled != sorted(shuffled)


def test_reordering_lets_later_datagrams_overtake() -> None:
    conditions = LinkConditions(delay=0.01, reorder=0.05, reorder_delay=0.02)
    clock, impaired, arrivals = link(conditions)
    for number in range(1000):
        impaired.submit(number.to_bytes(4, "big"))
        clock.advance(0.001)
    clock.advance(1)
    order = [int.from_bytes(data, "big") for _, data in arrivals]
    overtaken = sum(1 for a, b in itertools.pairwise(order) if a > b)
    assert impaired.counters.reordered > 20
    assert overtaken >= impaired.counters.reordered // 2
    assert sorted(order) == list(range(1000))


def test_duplication_sends_a_second_copy() -> None:
    clock, impaired, arrivals = link(LinkConditions(duplicate=0.1))
    for number in range(1000):
        impaired.submit(number.to_bytes(4, "big"))
        clock.advance(0.001)
    duplicated = impaired.counters.duplicated
    assert 60 <= duplicated <= 140
    assert len(arrivals) == 1000 + duplicated
    assert len({data for _, data in arrivals}) == 1000


def test_cut_drops_new_and_in_flight_datagrams_until_restored() -> None:
    clock, impaired, arrivals = link(LinkConditions(delay=0.05))
    impaired.submit(b"before")
    clock.advance(0.01)
    impaired.cut()
    impaired.submit(b"during")
    clock.advance(1)
    assert arrivals == []
    assert impaired.counters.cut == 2
    impaired.restore()
    impaired.submit(b"after")
    clock.advance(1)
    assert [data for _, data in arrivals] == [b"after"]
    assert impaired.conditions.delay == 0.05


def test_rate_limit_paces_and_tail_drops_beyond_the_queue() -> None:
    conditions = LinkConditions(rate=100_000, queue_bytes=10_500)
    clock, impaired, arrivals = link(conditions)
    for _ in range(20):
        impaired.submit(b"x" * 1000)
    drain(clock, 0.2)
    counters = impaired.counters
    assert counters.queue_dropped == 10
    times = [at for at, _ in arrivals]
    assert len(times) == 10
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap == pytest.approx(0.01, abs=0.0002) for gap in gaps)


def test_conditions_change_mid_run_without_shifting_later_decisions() -> None:
    """A test may cut the link mid-run; every other datagram meets the same luck."""
    clock, impaired, changed = link(LinkConditions(loss=0.5), seed=9)
    plain_clock, plain, unchanged = link(LinkConditions(loss=0.5), seed=9)
    for number in range(100):
        data = number.to_bytes(4, "big")
        if number == 50:
            impaired.cut()
        if number == 60:
            impaired.restore()
        impaired.submit(data)
        plain.submit(data)
    clock.advance(1)
    plain_clock.advance(1)
    during_cut = {n.to_bytes(4, "big") for n in range(50, 60)}
    assert impaired.counters.cut == 10
    assert [d for _, d in changed] == [d for _, d in unchanged if d not in during_cut]
    assert 20 <= len(changed) <= 80


def test_invalid_conditions_are_refused() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkConditions(loss=1.5)
    with pytest.raises(ValueError, match="negative"):
        LinkConditions(delay=-1)
    with pytest.raises(ValueError, match="rate"):
        LinkConditions(rate=0)


class Peer(DatagramProtocol):
    """A UDP peer that records datagrams and can echo them."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.waiters: list[tuple[int, Deferred[None]]] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.received.append((datagram, (addr[0], addr[1])))
        if self.echo:
            assert self.transport is not None
            self.transport.write(datagram, addr)
        ready = [w for w in self.waiters if len(self.received) >= w[0]]
        self.waiters = [w for w in self.waiters if len(self.received) < w[0]]
        for _, waiter in ready:
            waiter.callback(None)

    def count(self, n: int, reactor: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.received) >= n:
            d.callback(None)
        else:
            self.waiters.append((n, d))
        return d.addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_relay_forwards_both_ways_and_follows_the_client(
    reactor: Any, make_relay: Any
) -> None:
    server = Peer(echo=True)
    server_port = reactor.listenUDP(0, server, interface="127.0.0.1")
    first, second = Peer(), Peer()
    first_port = reactor.listenUDP(0, first, interface="127.0.0.1")
    second_port = reactor.listenUDP(0, second, interface="127.0.0.1")
    try:
        relay: ImpairmentRelay = make_relay(server_port.getHost().port)
        first_port.write(b"one", relay.address)
        await first.count(1, reactor)
        assert first.received == [(b"one", relay.address)]
        assert server.received[0][1] == relay.server_side_address
        # The client moves (a new local port): replies follow it, as a NAT's would.
        second_port.write(b"two", relay.address)
        await second.count(1, reactor)
        assert second.received == [(b"two", relay.address)]
        assert relay.client_addresses == [
            ("127.0.0.1", first_port.getHost().port),
            ("127.0.0.1", second_port.getHost().port),
        ]
        assert relay.upstream.counters.forwarded == 2
        assert relay.downstream.counters.forwarded == 2
    finally:
        for port in (server_port, first_port, second_port):
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_rebind_shows_the_server_a_new_client_address(reactor: Any, make_relay: Any) -> None:
    server = Peer(echo=True)
    server_port = reactor.listenUDP(0, server, interface="127.0.0.1")
    client = Peer()
    client_port = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        relay: ImpairmentRelay = make_relay(server_port.getHost().port)
        client_port.write(b"a", relay.address)
        await client.count(1, reactor)
        old = relay.server_side_address
        new = relay.rebind()
        assert new != old
        assert relay.rebinds == 1
        client_port.write(b"b", relay.address)
        await client.count(2, reactor)
        assert [addr for _, addr in server.received] == [old, new]
        # The old mapping is gone: the server's replies to it reach nobody.
        server_port.write(b"stale", old)
        server_port.write(b"fresh", new)
        await client.count(3, reactor)
        assert [data for data, _ in client.received] == [b"a", b"b", b"fresh"]
    finally:
        for port in (server_port, client_port):
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_relay_cut_and_restore_with_counters(reactor: Any, make_relay: Any) -> None:
    server = Peer(echo=True)
    server_port = reactor.listenUDP(0, server, interface="127.0.0.1")
    client = Peer()
    client_port = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        relay: ImpairmentRelay = make_relay(server_port.getHost().port)
        relay.cut()
        for _ in range(5):
            client_port.write(b"lost", relay.address)
        await relay.upstream.received_at_least(5).addTimeout(WAIT, reactor)
        relay.restore()
        relay.set(both=LinkConditions(delay=0.02))
        client_port.write(b"kept", relay.address)
        await client.count(1, reactor)
        assert [data for data, _ in client.received] == [b"kept"]
        assert [data for data, _ in server.received] == [b"kept"]
        assert relay.upstream.counters.cut == 5
        assert relay.upstream.counters.forwarded == 1
    finally:
        for port in (server_port, client_port):
            await port.stopListening()


async def arrivals_through_relay(reactor: Any, make_relay: Any, seed: int) -> list[bytes]:
    """200 numbered datagrams through a fresh relay with ``seed``: what reached the server."""
    server = Peer()
    server_port = reactor.listenUDP(0, server, interface="127.0.0.1")
    client_port = reactor.listenUDP(0, Peer(), interface="127.0.0.1")
    try:
        relay: ImpairmentRelay = make_relay(server_port.getHost().port, seed=seed)
        relay.set(upstream=LinkConditions(loss=0.3, duplicate=0.1))
        for number in range(200):
            client_port.write(number.to_bytes(4, "big"), relay.address)
        await relay.upstream.received_at_least(200).addTimeout(WAIT, reactor)
        counters = relay.upstream.counters
        await server.count(counters.forwarded + relay.upstream.in_flight, reactor)
        assert counters.lost > 0 and counters.duplicated > 0
        return [data for data, _ in server.received]
    finally:
        for port in (server_port, client_port):
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_relay_decisions_repeat_with_the_seed(reactor: Any, make_relay: Any) -> None:
    first = await arrivals_through_relay(reactor, make_relay, seed=11)
    again = await arrivals_through_relay(reactor, make_relay, seed=11)
    other = await arrivals_through_relay(reactor, make_relay, seed=12)
    assert first == again
    assert first != other
