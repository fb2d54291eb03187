"""The QUIC adapter through the impairment relay: delay, loss, cuts and rebinding."""

# pytest_twisted has no type hints.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from pibridge.quic import (
    ConnectionState,
    PinnedFingerprintVerification,
    QuicConnectionTransport,
    QuicListeningPort,
    TlsIdentity,
    connectQuic,
)
from tests.faults.conftest import MakeRelay
from tests.faults.impair import ImpairmentRelay, LinkConditions
from tests.faults.quic_peer import (
    ClientHandler,
    EchoServerFactory,
    TransferResult,
    echo_transfer,
    fault_settings,
    payload,
    port_number,
)

KIB = 1024
MIB = 1024 * KIB

# The brief's bad link: 50-150 ms one way, 3 % loss, 1 % reordering, 1 % duplication.
BAD_LINK = LinkConditions(delay=0.1, jitter=0.05, loss=0.03, reorder=0.01, duplicate=0.01)
# A plain long-ish link for cut and rebinding tests, where loss is not the point.
LONG_LINK = LinkConditions(delay=0.01, jitter=0.005)


async def connect_through(
    reactor: Any, relay: ImpairmentRelay, identity: TlsIdentity, handler: ClientHandler
) -> QuicConnectionTransport:
    host, port = relay.address
    connection: QuicConnectionTransport = await connectQuic(
        reactor,
        host,
        port,
        handler,
        verification=PinnedFingerprintVerification(
            known_hosts=Path("/nonexistent"), expected_fingerprint=identity.fingerprint.hex
        ),
        settings=fault_settings(),
        timeout=15.0,
    )
    return connection


def once_past(threshold: int, action: Callable[[], None]) -> Callable[[int], None]:
    """A progress callback that runs ``action`` the first time ``threshold`` is passed."""
    fired = False

    def progress(echoed: int) -> None:
        nonlocal fired
        if not fired and echoed >= threshold:
            fired = True
            action()

    return progress


async def transfer_through(
    reactor: Any,
    relay: ImpairmentRelay,
    identity: TlsIdentity,
    size: int,
    *,
    deadline: float,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[QuicConnectionTransport, ClientHandler, TransferResult]:
    handler = ClientHandler()
    connection = await connect_through(reactor, relay, identity, handler)
    done = echo_transfer(connection, payload(size, seed=size), reactor, on_progress)
    result: TransferResult = await done.addTimeout(deadline, reactor)
    return connection, handler, result


def assert_one_connection_survived(
    factory: EchoServerFactory, connection: QuicConnectionTransport, handler: ClientHandler
) -> None:
    """No reconnect happened: one server connection, the client's still open."""
    assert len(factory.handlers) == 1
    assert connection.state is ConnectionState.ESTABLISHED
    assert not handler.lost.called
    assert not factory.handlers[0].ended.called


async def bad_link_transfer(
    reactor: Any,
    echo_server: tuple[QuicListeningPort, EchoServerFactory],
    make_relay: MakeRelay,
    identity: TlsIdentity,
    size: int,
    deadline: float,
) -> None:
    port, factory = echo_server
    relay = make_relay(port_number(port), seed=2026)
    relay.set(both=BAD_LINK)
    connection, handler, result = await transfer_through(
        reactor, relay, identity, size, deadline=deadline
    )
    assert result.intact, result
    assert_one_connection_survived(factory, connection, handler)
    for direction in (relay.upstream, relay.downstream):
        counters = direction.counters
        assert counters.lost > 0, counters
        assert counters.forwarded > 0, counters
    both = [relay.upstream.counters, relay.downstream.counters]
    assert sum(c.duplicated for c in both) > 0, both
    assert sum(c.reordered for c in both) > 0, both
    print(f"\n{size} bytes echoed in {result.seconds:.1f} s over {BAD_LINK}: {both}")


@pytest_twisted.ensureDeferred
async def test_transfer_over_a_bad_link_arrives_intact(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await bad_link_transfer(reactor, echo_server, make_relay, identity, 256 * KIB, 40.0)


@pytest.mark.faults_long
@pytest.mark.timeout(600)
@pytest_twisted.ensureDeferred
async def test_transfer_of_megabytes_over_a_bad_link_arrives_intact(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await bad_link_transfer(reactor, echo_server, make_relay, identity, 3 * MIB, 500.0)


@pytest_twisted.ensureDeferred
async def test_transfer_through_a_rate_limited_link_with_a_short_queue(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    """A slow link with a shallow buffer: QUIC loses to tail drop and still delivers."""
    port, factory = echo_server
    relay = make_relay(port_number(port), seed=4)
    relay.set(both=LinkConditions(delay=0.01, rate=256 * KIB, queue_bytes=24 * KIB))
    size = 512 * KIB
    connection, handler, result = await transfer_through(
        reactor, relay, identity, size, deadline=30.0
    )
    assert result.intact, result
    assert relay.upstream.counters.queue_dropped + relay.downstream.counters.queue_dropped > 0
    assert_one_connection_survived(factory, connection, handler)
    print(f"\n{size} bytes echoed at 256 KiB/s each way in {result.seconds:.1f} s")


async def cut_mid_transfer(
    reactor: Any,
    echo_server: tuple[QuicListeningPort, EchoServerFactory],
    make_relay: MakeRelay,
    identity: TlsIdentity,
    size: int,
    outage: float,
) -> None:
    port, factory = echo_server
    relay = make_relay(port_number(port), seed=1)
    relay.set(both=LONG_LINK)
    restored: Deferred[int] = Deferred()
    echoed_at_restore: list[int] = []
    progress: list[int] = [0]
    restored_at: list[float] = []
    resumed_after: list[float] = []

    def restore() -> None:
        echoed_at_restore.append(progress[0])
        relay.restore()
        restored_at.append(reactor.seconds())
        restored.callback(progress[0])

    def cut() -> None:
        relay.cut()
        reactor.callLater(outage, restore)

    watch = once_past(size // 4, cut)

    def on_progress(echoed: int) -> None:
        progress[0] = echoed
        if restored_at and not resumed_after:
            resumed_after.append(reactor.seconds() - restored_at[0])
        watch(echoed)

    connection, handler, result = await transfer_through(
        reactor, relay, identity, size, deadline=outage + 30.0, on_progress=on_progress
    )
    assert restored.called
    assert result.intact, result
    assert echoed_at_restore[0] < size  # the cut really fell inside the transfer
    assert relay.upstream.counters.cut > 0
    assert relay.downstream.counters.cut > 0
    assert_one_connection_survived(factory, connection, handler)
    print(
        f"\n{outage} s cut: data flowed again {resumed_after[0]:.2f} s after the link returned; "
        f"{size} bytes in {result.seconds:.1f} s"
    )


@pytest_twisted.ensureDeferred
async def test_cut_and_restore_mid_transfer_completes_intact(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await cut_mid_transfer(reactor, echo_server, make_relay, identity, 1 * MIB, outage=2.0)


@pytest.mark.faults_long
@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_long_cut_below_the_idle_timeout_completes_intact(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await cut_mid_transfer(reactor, echo_server, make_relay, identity, 4 * MIB, outage=20.0)


async def rebind_mid_transfer(
    reactor: Any,
    echo_server: tuple[QuicListeningPort, EchoServerFactory],
    make_relay: MakeRelay,
    identity: TlsIdentity,
    size: int,
    rebinds: int,
    conditions: LinkConditions = LONG_LINK,
    deadline: float = 30.0,
) -> None:
    port, factory = echo_server
    relay = make_relay(port_number(port), seed=3)
    relay.set(both=conditions)
    old_address: list[tuple[str, int]] = []
    thresholds = [size * (i + 1) // (rebinds + 2) for i in range(rebinds)]
    seen: list[int] = []

    def on_progress(echoed: int) -> None:
        while thresholds and echoed >= thresholds[0]:
            thresholds.pop(0)
            old_address.append(relay.server_side_address)
            relay.rebind()
            seen.append(echoed)

    connection, handler, result = await transfer_through(
        reactor, relay, identity, size, deadline=deadline, on_progress=on_progress
    )
    assert result.intact, result
    assert relay.rebinds == rebinds
    assert seen[-1] < size
    server_connection = factory.handlers[0].connection
    assert server_connection is not None
    # The server follows the client to its newest address (a migrated path).
    assert server_connection.peerAddress == relay.server_side_address
    assert relay.server_side_address not in old_address
    assert_one_connection_survived(factory, connection, handler)


@pytest_twisted.ensureDeferred
async def test_rebinding_mid_transfer_migrates_the_same_connection(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await rebind_mid_transfer(reactor, echo_server, make_relay, identity, 1 * MIB, rebinds=1)


@pytest.mark.faults_long
@pytest_twisted.ensureDeferred
async def test_repeated_rebinding_mid_transfer(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    await rebind_mid_transfer(reactor, echo_server, make_relay, identity, 4 * MIB, rebinds=5)


@pytest.mark.faults_long
@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_rebinding_on_a_bad_link(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    """Path validation must survive lost PATH_CHALLENGE/RESPONSE frames."""
    await rebind_mid_transfer(
        reactor,
        echo_server,
        make_relay,
        identity,
        512 * KIB,
        rebinds=4,
        conditions=BAD_LINK,
        deadline=200.0,
    )


@pytest_twisted.ensureDeferred
async def test_a_1500_byte_link_caps_the_datagram_size_without_losing_data(
    reactor: Any, echo_server: Any, make_relay: MakeRelay, identity: TlsIdentity
) -> None:
    """Loopback says 64 KiB, the link in between carries 1500: the probes find the link."""
    port, factory = echo_server
    relay = make_relay(port_number(port), seed=7)
    relay.set(both=LinkConditions(delay=0.005, mtu=1500))
    connection, handler, result = await transfer_through(
        reactor, relay, identity, 512 * KIB, deadline=30.0
    )
    assert result.intact, result
    assert_one_connection_survived(factory, connection, handler)
    (server,) = factory.handlers
    assert connection.datagramSize == 1472
    assert server.connection is not None and server.connection.datagramSize == 1472
    # The 16 KiB probes died on the link, both ways, and cost no data.
    assert relay.upstream.counters.too_big >= 1
    assert relay.downstream.counters.too_big >= 1
