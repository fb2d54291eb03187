"""A Twisted service running a QUIC server port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from pibridge.quic.endpoint import QuicListeningPort, listenQuic
from pibridge.quic.identity import TlsIdentity
from pibridge.quic.interfaces import IQuicConnectionHandler
from pibridge.quic.settings import QuicSettings


class QuicServerService(Service):
    """Listen for QUIC on ``interface:port`` while running.

    Stopping the service closes every connection (their handlers get
    ``connectionLost``) and then the port. ``port`` may be 0; ``listeningPort``
    tells which one was chosen.
    """

    def __init__(
        self,
        reactor: Any,
        port: int,
        identity: TlsIdentity,
        handlerFactory: Callable[[], IQuicConnectionHandler],
        *,
        interface: str = "",
        settings: QuicSettings | None = None,
    ) -> None:
        self._reactor = reactor
        self._portNumber = port
        self._identity = identity
        self._handlerFactory = handlerFactory
        self._interface = interface
        self._settings = settings
        self.listeningPort: QuicListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        self.listeningPort = listenQuic(
            self._reactor,
            self._portNumber,
            self._identity,
            self._handlerFactory,
            interface=self._interface,
            settings=self._settings,
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.listeningPort = self.listeningPort, None
        if port is None:
            return succeed(None)
        return port.stopListening()
