"""Relay mode for the bot: dial out to a MoQ relay and serve the clients that appear there.

Nothing else changes: the same `ClientAttachment` serves each client, only
who dialled whom differs (and every payload is sealed, since a relay is not
trusted). When the relay goes away the bot redials with backoff; programs
keep running for the grace window, so clients reattach once both are back.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pibridge.bot.server import NAMESPACE_ROOT, TerminalBot
from pibridge.moq.endpoint import connectMoq
from pibridge.moq.session import MoqSession
from pibridge.quic.verification import PeerVerification

log = Logger()

FIRST_RETRY = 0.5
MAX_RETRY = 10.0


@attrs.define(eq=False)
class RelayConnector(Service):
    reactor: Any
    bot: TerminalBot
    host: str
    port: int
    verification: PeerVerification
    moq: MoqSession | None = None
    delay: float = FIRST_RETRY
    retry: IDelayedCall | None = None
    stopping: bool = False
    connections: int = 0

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self._connect()

    def stopService(self) -> None:
        super().stopService()
        self.stopping = True
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        moq, self.moq = self.moq, None
        if moq is not None and not moq.isClosed:
            moq.close(reason="bot stopping")

    def _connect(self) -> None:
        self.retry = None
        connecting = connectMoq(
            self.reactor,
            self.host,
            self.port,
            verification=self.verification,
            on_namespace=self.bot.relayed_namespace_seen,
        )
        connecting.addCallbacks(self._connected, self._failed)

    def _connected(self, moq: MoqSession) -> None:
        if self.stopping:
            moq.close(reason="bot stopping")
            return
        self.moq = moq
        self.connections += 1
        self.delay = FIRST_RETRY
        log.info(
            "pibridge: serving terminal sessions through the relay at {host}:{port}",
            host=self.host,
            port=self.port,
        )
        # Announcements arrive through on_namespace; some relays never answer
        # SUBSCRIBE_NAMESPACE, so its outcome is not waited for.
        moq.subscribeNamespace((NAMESPACE_ROOT,), lambda announcement: None).addErrback(
            lambda failure: None
        )
        moq.whenClosed().addCallback(self._lost)

    def _lost(self, reason: object) -> None:
        self.moq = None
        if self.stopping:
            return
        log.warn(
            "pibridge: lost the relay at {host}:{port}; redialling", host=self.host, port=self.port
        )
        self._schedule()

    def _failed(self, failure: Failure) -> None:
        if self.stopping:
            return
        log.warn(
            "pibridge: cannot reach the relay at {host}:{port}: {why}",
            host=self.host,
            port=self.port,
            why=failure.getErrorMessage(),
        )
        self._schedule()

    def _schedule(self) -> None:
        self.retry = self.reactor.callLater(self.delay, self._connect)
        self.delay = min(self.delay * 2, MAX_RETRY)
