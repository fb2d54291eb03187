"""Fixtures and switches for the fault-injection tests.

Every test here carries the ``faults`` marker. Longer variants carry
``faults_long`` and only run with ``--faults-long`` (pass it together with the
path: ``pytest tests/faults --faults-long``, since this file is not loaded
before the command line is parsed otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pibridge.quic import QuicListeningPort, TlsIdentity, listenQuic, load_or_create_identity
from tests.faults.impair import ImpairmentRelay
from tests.faults.netns import (
    Namespace,
    NamespacePair,
    NamespaceProcess,
    NamespacesUnavailable,
    namespace_pair,
    spawn_in,
)
from tests.faults.quic_peer import EchoServerFactory, fault_settings

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults-long",
        action="store_true",
        default=False,
        help="also run the long fault-injection variants (marked faults_long)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection tests (impaired paths)")
    config.addinivalue_line(
        "markers", "faults_long: long fault-injection variants, run with --faults-long"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    long_enabled = bool(config.getoption("--faults-long", default=False))
    skip_long = pytest.mark.skip(reason="long fault variant: run with --faults-long")
    for item in items:
        if HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.faults)
        if "faults_long" in item.keywords and not long_enabled:
            item.add_marker(skip_long)


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as installed

    return installed


@pytest.fixture
def identity(tmp_path: Path) -> TlsIdentity:
    return load_or_create_identity(tmp_path / "server-state")


@pytest.fixture
def echo_server(
    reactor: Any, identity: TlsIdentity
) -> Iterator[tuple[QuicListeningPort, EchoServerFactory]]:
    """A QUIC echo server on loopback; the factory remembers every connection."""
    factory = EchoServerFactory()
    port = listenQuic(
        reactor, 0, identity, factory, interface="127.0.0.1", settings=fault_settings()
    )
    yield port, factory
    pytest_twisted.blockon(port.stopListening())


MakeRelay = Callable[..., ImpairmentRelay]


@pytest.fixture
def make_relay(reactor: Any) -> Iterator[MakeRelay]:
    """Start impairment relays in front of a server; all are stopped after the test."""
    relays: list[ImpairmentRelay] = []

    def make(server_port: int, seed: int | str = 0) -> ImpairmentRelay:
        relay = ImpairmentRelay(reactor, ("127.0.0.1", server_port), seed=seed)
        relay.start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        pytest_twisted.blockon(relay.stop())


@pytest.fixture
def namespaces() -> Iterator[NamespacePair]:
    """Two fresh network namespaces joined by a veth pair (removed after the test)."""
    try:
        with namespace_pair() as pair:
            yield pair
    except NamespacesUnavailable as reason:
        pytest.skip(str(reason))


SpawnIn = Callable[..., NamespaceProcess]


@pytest.fixture
def spawn_in_namespace(reactor: Any, namespaces: NamespacePair) -> Iterator[SpawnIn]:
    """Start programs inside the test's namespaces; each is ended after the test."""
    processes: list[NamespaceProcess] = []

    def spawn(side: Namespace, argv: list[str], *, python_module: bool = False) -> NamespaceProcess:
        process = spawn_in(reactor, side, argv, python_module=python_module)
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        pytest_twisted.blockon(process.stop(reactor).addTimeout(15, reactor))
