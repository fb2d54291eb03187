"""Fixtures for the QUIC adapter tests: a TLS identity and loopback servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pibridge.quic import (
    QuicListeningPort,
    QuicSettings,
    TlsIdentity,
    listenQuic,
    load_or_create_identity,
)
from tests.quic.support import HandlerFactory


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as installed

    return installed


@pytest.fixture
def identity(tmp_path: Path) -> TlsIdentity:
    return load_or_create_identity(tmp_path / "server-state")


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    return tmp_path / "client" / "known_hosts"


StartServer = Callable[..., tuple[QuicListeningPort, HandlerFactory]]


@pytest.fixture
def start_server(reactor: Any, identity: TlsIdentity) -> Iterator[StartServer]:
    """Start loopback servers; every one is stopped after the test."""
    ports: list[QuicListeningPort] = []

    def start(
        factory: HandlerFactory | None = None,
        settings: QuicSettings | None = None,
        server_identity: TlsIdentity | None = None,
    ) -> tuple[QuicListeningPort, HandlerFactory]:
        factory = factory or HandlerFactory()
        port = listenQuic(
            reactor,
            0,
            server_identity or identity,
            factory,
            interface="127.0.0.1",
            settings=settings,
        )
        ports.append(port)
        return port, factory

    yield start
    for port in ports:
        pytest_twisted.blockon(port.stopListening())
