"""QUIC between two network namespaces, with kernel loss, link down/up and a rate limit."""

# pytest_twisted has no type hints.
# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from pibridge.quic import TlsIdentity
from tests.faults.conftest import SpawnIn
from tests.faults.netns import (
    NamespacePair,
    NamespaceProcess,
    namespace_pair,
    run,
)

KIB = 1024
MIB = 1024 * KIB
PEER = "tests.faults.quic_peer"
WAIT = 20.0


def namespace_names() -> set[str]:
    return {line.split()[0] for line in run(["ip", "netns", "list"]).splitlines() if line}


def test_namespaces_are_joined_and_always_removed() -> None:
    with pytest.raises(RuntimeError, match="boom"), namespace_pair() as pair:
        names = {pair.a.name, pair.b.name}
        assert names <= namespace_names()
        assert pair.a.address in pair.run_in(pair.a, ["ip", "-br", "addr"])
        assert " UP " in pair.run_in(pair.b, ["ip", "-br", "link", "show", "dev", pair.b.device])
        # The /30 exists only inside the namespaces, not here.
        assert pair.a.address not in run(["ip", "-br", "addr"])
        raise RuntimeError("boom")
    assert not names & namespace_names()


def test_link_down_and_up_switch_both_ends(namespaces: NamespacePair) -> None:
    def states() -> list[str]:
        return [
            namespaces.run_in(side, ["ip", "-br", "link", "show", "dev", side.device]).split()[1]
            for side in namespaces.sides
        ]

    namespaces.link_down()
    assert states() == ["DOWN", "DOWN"]
    namespaces.link_up()
    assert states() == ["UP", "UP"]


def test_loss_rule_refuses_nonsense(namespaces: NamespacePair) -> None:
    with pytest.raises(ValueError, match="percent"):
        namespaces.set_loss(namespaces.a, 101)
    namespaces.set_loss(namespaces.a, 0)
    assert namespaces.dropped_by_loss(namespaces.a) == 0


async def start_server(
    spawn: SpawnIn, namespaces: NamespacePair, identity: TlsIdentity, reactor: Any
) -> int:
    state = identity.certificate_path.parent.parent  # load_or_create_identity's state_dir
    server = spawn(
        namespaces.a,
        [PEER, "serve", "--host", namespaces.a.address, "--state", str(state)],
        python_module=True,
    )
    ready = await server.next_line().addTimeout(WAIT, reactor)
    return int(ready["port"])


def start_client(
    spawn: SpawnIn,
    namespaces: NamespacePair,
    identity: TlsIdentity,
    port: int,
    size: int,
    *extra: str,
) -> NamespaceProcess:
    return spawn(
        namespaces.b,
        [
            PEER, "send", "--host", namespaces.a.address, "--port", str(port),
            "--fingerprint", identity.fingerprint.hex, "--size", str(size), *extra,
        ],
        python_module=True,
    )  # fmt: skip


async def final_result(client: NamespaceProcess, reactor: Any, deadline: float) -> Any:
    """The client's last line (its result) once it has exited cleanly."""
    code = await client.ended.addTimeout(deadline, reactor)
    assert code == 0, client.stderr.decode()
    result = client.lines[-1]
    assert result["intact"], result
    return result


@pytest_twisted.ensureDeferred
async def test_quic_echo_between_namespaces(
    reactor: Any, namespaces: NamespacePair, spawn_in_namespace: SpawnIn, identity: TlsIdentity
) -> None:
    port = await start_server(spawn_in_namespace, namespaces, identity, reactor)
    client = start_client(spawn_in_namespace, namespaces, identity, port, 1 * MIB)
    result = await final_result(client, reactor, WAIT)
    assert result["received"] == 1 * MIB


async def lossy_echo(
    reactor: Any,
    namespaces: NamespacePair,
    spawn: SpawnIn,
    identity: TlsIdentity,
    size: int,
    percent: int,
    deadline: float,
) -> None:
    namespaces.set_loss_both(percent)
    port = await start_server(spawn, namespaces, identity, reactor)
    client = start_client(spawn, namespaces, identity, port, size)
    result = await final_result(client, reactor, deadline)
    dropped = [namespaces.dropped_by_loss(side) for side in namespaces.sides]
    assert all(count > 0 for count in dropped), dropped
    print(f"\n{size} bytes echoed in {result['seconds']:.2f} s, {percent} % loss: {dropped}")


@pytest_twisted.ensureDeferred
async def test_quic_echo_survives_five_percent_ingress_loss(
    reactor: Any, namespaces: NamespacePair, spawn_in_namespace: SpawnIn, identity: TlsIdentity
) -> None:
    await lossy_echo(reactor, namespaces, spawn_in_namespace, identity, 1 * MIB, 5, 40.0)


@pytest.mark.faults_long
@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_quic_echo_of_megabytes_survives_heavy_ingress_loss(
    reactor: Any, namespaces: NamespacePair, spawn_in_namespace: SpawnIn, identity: TlsIdentity
) -> None:
    await lossy_echo(reactor, namespaces, spawn_in_namespace, identity, 16 * MIB, 10, 240.0)


async def echo_across_outage(
    reactor: Any,
    namespaces: NamespacePair,
    spawn: SpawnIn,
    identity: TlsIdentity,
    size: int,
    outage: float,
) -> None:
    # A rate limit stretches the transfer so the outage falls inside it.
    for side in namespaces.sides:
        namespaces.set_rate(side, "4mbit")
    port = await start_server(spawn, namespaces, identity, reactor)
    client = start_client(
        spawn, namespaces, identity, port, size, "--progress-every", str(size // 4)
    )
    assert (await client.next_line().addTimeout(WAIT, reactor)) == {"connected": True}
    progress = await client.next_line().addTimeout(WAIT, reactor)
    assert 0 < progress["progress"] < size
    namespaces.link_down()
    came_back: Deferred[None] = Deferred()

    def up() -> None:
        namespaces.link_up()
        came_back.callback(None)

    reactor.callLater(outage, up)
    await came_back.addTimeout(outage + WAIT, reactor)
    assert not client.ended.called  # the transfer was still going when the link returned
    result = await final_result(client, reactor, WAIT + outage)
    assert result["received"] == size


@pytest_twisted.ensureDeferred
async def test_quic_echo_completes_across_a_one_second_link_down(
    reactor: Any, namespaces: NamespacePair, spawn_in_namespace: SpawnIn, identity: TlsIdentity
) -> None:
    await echo_across_outage(reactor, namespaces, spawn_in_namespace, identity, 1 * MIB, 1.0)


@pytest.mark.faults_long
@pytest.mark.timeout(300)
@pytest_twisted.ensureDeferred
async def test_quic_echo_completes_across_a_long_link_down(
    reactor: Any, namespaces: NamespacePair, spawn_in_namespace: SpawnIn, identity: TlsIdentity
) -> None:
    await echo_across_outage(reactor, namespaces, spawn_in_namespace, identity, 4 * MIB, 15.0)
