"""The terminal face as a Twisted service: a QUIC port speaking MoQ, and the bot behind it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pibridge.agent.runtime import AgentRuntime
from pibridge.bot.relay import RelayConnector
from pibridge.bot.server import TerminalBot
from pibridge.quic.endpoint import QuicListeningPort, listenQuic
from pibridge.quic.identity import TlsIdentity, load_or_create_identity
from pibridge.quic.interfaces import IQuicConnectionHandler
from pibridge.quic.verification import PinnedFingerprintVerification
from pibridge.seal.box import format_public_key
from pibridge.seal.box import load_or_create_identity as load_or_create_bot_key
from pibridge.terminal.auth import TokenAuthority, load_or_create_key
from pibridge.terminal.control import Open
from pibridge.terminal.pty_host import PtySpec

log = Logger()


def spec_factory(config: Mapping[str, Any], runtime: AgentRuntime) -> Callable[[Open], PtySpec]:
    """What a terminal session runs: pi, isolated like chat's, or the configured command."""
    workspace = str(config["workspace"])
    explicit = config.get("terminal-command")

    def spec_for(request: Open) -> PtySpec:
        if explicit:
            argv = shlex.split(explicit)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())}
            return PtySpec(
                argv,  # type: ignore[arg-type]
                workspace,
                request.term,
                request.cols,
                request.rows,
                env,
            )
        invocation = runtime.invocation("tui", term=request.term)
        env = {k: v for k, v in invocation.env.items() if k != "TERM"}
        return PtySpec(
            invocation.argv,  # type: ignore[arg-type]
            invocation.cwd,
            invocation.env.get("TERM", "xterm-256color"),
            request.cols,
            request.rows,
            env,
        )

    return spec_for


@attrs.define(eq=False)
class TerminalService(MultiService):
    """Listens for MoQ clients (or meets them at a relay); on stop, closes every
    session and reaps every program."""

    reactor: Any
    bot: TerminalBot
    identity: TlsIdentity
    host: str
    port_number: int
    relay: RelayConnector | None = None
    port: QuicListeningPort | None = None
    state_dir: Path = Path(".")

    def __attrs_post_init__(self) -> None:
        MultiService.__init__(self)
        if self.relay is not None:
            self.relay.setServiceParent(self)

    def public_facts(self) -> dict[str, Any]:
        """What clients need to reach and pin this bot (shown in /api/capabilities)."""
        assert self.bot.identity is not None
        facts: dict[str, Any] = {
            "protocol": "pibridge/1 over MoQ draft-14 (ALPN moq-00)",
            "bot_key": format_public_key(self.bot.identity.public_key),
            "certificate": self.identity.fingerprint.display,
        }
        if self.relay is not None:
            facts["relay"] = f"moqt://{self.relay.host}:{self.relay.port}"
        else:
            facts["moq"] = f"{self.host}:{self.port_number}"
        return facts

    def startService(self) -> None:
        super().startService()
        assert self.bot.identity is not None
        log.info(
            "pibridge: bot identity key {key} (clients pin it with --bot-key)",
            key=format_public_key(self.bot.identity.public_key),
        )
        if self.relay is not None:
            return
        self.port = listenQuic(
            self.reactor,
            self.port_number,
            self.identity,
            cast(Callable[[], IQuicConnectionHandler], self.bot.moq_session),
            interface=self.host,
        )
        address = self.port.getHost()
        log.info(
            "pibridge: terminal sessions over MoQ on udp {host}:{port}, certificate {fingerprint}",
            host=getattr(address, "host", self.host),
            port=getattr(address, "port", self.port_number),
            fingerprint=self.identity.fingerprint.display,
        )
        log.info(
            "pibridge: to attach, mint a token with `pibridge-token --state-dir {state} "
            "--user NAME --group GROUP > token`, then run "
            "`pibridge-attach --token-file token {host}:{port}`",
            state=str(self.state_dir),
            host=getattr(address, "host", self.host),
            port=getattr(address, "port", self.port_number),
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        yield self.bot.stop()
        yield super().stopService()
        port, self.port = self.port, None
        if port is not None:
            yield self._sent(port)
            yield port.stopListening()

    def _sent(self, port: QuicListeningPort, limit: float = 1.0) -> Deferred[None]:
        """Fires once every connection has handed its written data to the network.

        Each client was just written its ``close``; cutting the connections while that
        is still queued in the connection leaves the client a bare connection loss.
        """
        deadline = self.reactor.seconds() + limit

        def check() -> None:
            pending = sum(connection.unsentBytes() for connection in port.protocol.connections)
            if pending == 0 or self.reactor.seconds() >= deadline:
                loop.stop()

        loop = LoopingCall(check)
        loop.clock = self.reactor
        return loop.start(0.01).addCallback(lambda _: None)


def build_terminal(
    config: Mapping[str, Any], reactor: Any, runtime: AgentRuntime
) -> TerminalService:
    state_dir: Path = config["state-dir"]
    authority = TokenAuthority(load_or_create_key(state_dir))
    bot = TerminalBot(
        reactor,
        authority,
        spec_factory(config, runtime),
        grace=config["grace"],
        heartbeat_interval=config["heartbeat"],
        heartbeat_timeout=config["heartbeat"] * 4,
        debug_io=bool(config.get("debug-bytes")),
    )
    bot.identity = load_or_create_bot_key(state_dir)
    address = config["moq"]
    identity = load_or_create_identity(state_dir, [address.host])
    relay = None
    if config.get("relay") is not None:
        target = config["relay"]
        verification = PinnedFingerprintVerification(
            known_hosts=state_dir / "relay_known_hosts",
            expected_fingerprint=config.get("relay-fingerprint"),
        )
        relay = RelayConnector(reactor, bot, target.host, target.port, verification)
    return TerminalService(
        reactor, bot, identity, address.host, address.port, relay, state_dir=state_dir
    )
