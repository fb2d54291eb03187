"""Relay mode in this process: the moq-rs relay, relay-mode bots and sealed clients.

The relay keeps one address and one certificate across restarts, as a real
relay does, so bots and clients that pinned it can come back to it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import moq
from nacl.public import PrivateKey, PublicKey
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall

from pibridge.attach.cli import AttachOptions
from pibridge.attach.client import TerminalClient
from pibridge.attach.moq_link import AttachLink, new_epoch
from pibridge.attach.transport import Attachment
from pibridge.bot.relay import RelayConnector
from pibridge.bot.server import TerminalBot
from pibridge.moq.endpoint import connectMoq
from pibridge.moq.session import MoqSession, NamespaceAnnouncement
from pibridge.quic.identity import TlsIdentity, load_or_create_identity
from pibridge.quic.verification import PinnedFingerprintVerification
from pibridge.seal.box import SealedLink, format_public_key
from pibridge.terminal.auth import TokenAuthority
from pibridge.terminal.control import Open
from pibridge.terminal.pty_host import PtySpec
from tests.bot.loopback import KEY, Client
from tests.moq.relay import RustRelay


class FixedRelay(RustRelay):
    """The moq-rs relay bound to a chosen port with a certificate kept on disk."""

    def __init__(self, tls: TlsIdentity, port: int = 0) -> None:
        super().__init__()
        self.tls = tls
        self.requested_port = port
        #: What the relay's sessions ended with (timeouts of killed clients, closes);
        #: kept here rather than printed as "never retrieved" at exit.
        self.session_endings: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.session_endings.append(context))

    async def _start(self) -> None:
        origin = moq.OriginProducer()
        server = moq.Server(
            f"127.0.0.1:{self.requested_port}",
            tls_cert=[str(self.tls.certificate_path)],
            tls_key=[str(self.tls.key_path)],
            publish=origin,
            subscribe=origin,
        )
        await server.__aenter__()
        self._server = server
        self.port = int(server.local_addr.rsplit(":", 1)[1])
        self.fingerprint = server.cert_fingerprints()[0]
        self._serving = asyncio.ensure_future(server.serve())

    def stop(self, timeout: float = 10.0) -> None:
        if self.thread.is_alive():
            super().stop(timeout)

    async def _stop(self) -> None:
        await super()._stop()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def restarted(self) -> FixedRelay:
        """Stop this relay and start a fresh one (empty state) on the same port."""
        self.stop()
        again = FixedRelay(self.tls, self.port)
        again.start()
        return again


def start_relay(state: Path) -> FixedRelay:
    relay = FixedRelay(load_or_create_identity(state / "relay", ["localhost"]))
    relay.start()
    return relay


def pin(relay: RustRelay, tmp: Path, name: str) -> PinnedFingerprintVerification:
    return PinnedFingerprintVerification(
        known_hosts=tmp / f"{name}_known_hosts", expected_fingerprint=relay.fingerprint
    )


def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> defer.Deferred[None]:
    """Fires once ``condition`` holds, for state that announces no event of its own."""
    done: defer.Deferred[None] = defer.Deferred()

    def check() -> None:
        if condition():
            poll.stop()
            done.callback(None)

    def give_up(failure: Any) -> Any:
        if poll.running:
            poll.stop()
        return failure

    poll = LoopingCall(check)
    poll.clock = reactor
    poll.start(0.01, now=True)
    done.addTimeout(timeout, reactor).addErrback(give_up)
    return done


@attrs.define(eq=False)
class WatchedBot(TerminalBot):
    """A `TerminalBot` that also keeps every client namespace the relay showed it."""

    heard: list[tuple[bytes, ...]] = attrs.field(factory=list, init=False)

    def relayed_namespace_seen(self, announcement: NamespaceAnnouncement) -> None:
        if announcement.active:
            self.heard.append(announcement.namespace)
        TerminalBot.relayed_namespace_seen(self, announcement)


@attrs.define(eq=False)
class RelayBot:
    """A `TerminalBot` that meets its clients at the relay."""

    bot: WatchedBot
    connector: RelayConnector
    authority: TokenAuthority

    @property
    def public_key(self) -> PublicKey:
        assert self.bot.identity is not None
        return self.bot.identity.public_key

    @property
    def key_text(self) -> str:
        return format_public_key(self.public_key)

    def token(self, user: str = "alice", group: str = "team") -> str:
        return self.authority.mint(user, group)

    def connected(self, timeout: float = 15.0) -> defer.Deferred[None]:
        """Fires once the bot has a MoQ session with the relay."""
        return eventually(lambda: self.connector.moq is not None, timeout)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        self.connector.stopService()
        yield self.bot.stop()


def start_relay_bot(
    relay: RustRelay, tmp: Path, argv: Sequence[str], name: str = "bot", **options: Any
) -> RelayBot:
    authority = TokenAuthority(KEY)

    def spec_for(request: Open) -> PtySpec:
        return PtySpec(
            argv,  # type: ignore[arg-type]
            os.getcwd(),
            request.term,
            request.cols,
            request.rows,
        )

    options.setdefault("identity", PrivateKey.generate())
    bot = WatchedBot(reactor, authority, spec_for, **options)
    connector = RelayConnector(reactor, bot, "127.0.0.1", relay.port, pin(relay, tmp, name))
    connector.startService()
    return RelayBot(bot, connector, authority)


@attrs.define(eq=False)
class SealedClient(Client):
    """A client that reached a bot through the relay, sealed to the key it pinned."""

    moq: MoqSession | None = None
    #: Output objects received (each one sealed object on the stdout track).
    output_objects: int = 0

    def got_output(self, data: bytes) -> None:
        self.output_objects += 1
        Client.got_output(self, data)

    def leave(self) -> None:
        if self.link is not None:
            self.link.close()
        elif self.moq is not None and not self.moq.isClosed:
            self.moq.close()


def open_request(
    token: str,
    *,
    session_id: str | None = None,
    group: str = "team",
    cols: int = 80,
    rows: int = 24,
    resume_offset: int | None = None,
) -> Open:
    return Open(
        session_id or str(uuid.uuid4()),
        group,
        "xterm-256color",
        cols,
        rows,
        token,
        resume_offset=resume_offset,
        epoch=new_epoch(),
    )


@defer.inlineCallbacks
def attach_through(
    relay: RustRelay,
    tmp: Path,
    bot_key: PublicKey,
    request: Open,
    *,
    seal: SealedLink | None = None,
) -> Any:
    """Publish a client namespace on the relay, sealed to ``bot_key``, and open."""
    client = SealedClient()
    holder: list[AttachLink] = []

    def seen(announcement: NamespaceAnnouncement) -> None:
        if holder:
            holder[0].namespace_seen(announcement)

    moq_session = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=pin(relay, tmp, "client"), on_namespace=seen
    )
    link = AttachLink(
        moq_session,
        request,
        client.got_output,
        client.got_control,
        client.got_lost,
        seal=seal or SealedLink.for_client(bot_key),
    )
    holder.append(link)
    client.link = link
    client.moq = moq_session
    link.start()
    return client


@attrs.define(eq=False)
class ScreenlessTerminal:
    """The local terminal of an attach client, in memory."""

    typed: Callable[[bytes], None] | None = None

    def start(self, on_input: Callable[[bytes], None], on_input_closed: Callable[[], None]) -> None:
        self.typed = on_input

    def write_output(self, data: bytes) -> None:
        pass

    def size(self) -> tuple[int, int]:
        return (80, 24)

    def pause_input(self) -> None:
        pass

    def resume_input(self) -> None:
        pass

    def register_output_producer(self, producer: IPushProducer) -> None:
        pass

    def unregister_output_producer(self) -> None:
        pass

    def stop(self) -> None:
        pass


@attrs.define(eq=False)
class RecordedAttachment(Attachment):
    """The real reattaching client; keeps the remote output exactly as it arrived."""

    remote_output: bytearray = attrs.field(factory=bytearray)

    def _output(self, data: bytes) -> None:
        self.remote_output += data
        Attachment._output(self, data)


def real_client(
    relay: RustRelay, tmp: Path, bot: RelayBot, token: str, session_id: str
) -> tuple[RecordedAttachment, TerminalClient, ScreenlessTerminal]:
    """``pibridge-attach --relay``'s own objects, with a terminal in memory."""
    options = AttachOptions(
        host="127.0.0.1",
        port=relay.port,
        token=token,
        session_id=session_id,
        group="team",
        ui="pty",
        term="xterm-256color",
        relay=f"moqt://127.0.0.1:{relay.port}",
        known_hosts=tmp / "client_known_hosts",
        fingerprint=relay.fingerprint,
        bot_key=bot.key_text,
    )
    terminal = ScreenlessTerminal()
    client = TerminalClient(reactor, terminal, session_id, "team", token)
    return RecordedAttachment(reactor, options, client), client, terminal
