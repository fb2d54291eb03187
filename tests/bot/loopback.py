"""A bot and attach links over real QUIC on loopback, in this process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, reactor

from pibridge.attach.moq_link import AttachLink, new_epoch
from pibridge.bot.server import TerminalBot
from pibridge.moq.session import MoqSession
from pibridge.quic.endpoint import QuicListeningPort, connectQuic, listenQuic
from pibridge.quic.identity import load_or_create_identity
from pibridge.quic.verification import PinnedFingerprintVerification
from pibridge.terminal.auth import TokenAuthority
from pibridge.terminal.control import Close, Message, Open
from pibridge.terminal.pty_host import PtySpec

KEY = b"k" * 32


@attrs.define(eq=False)
class Bot:
    bot: TerminalBot
    port: QuicListeningPort
    authority: TokenAuthority
    fingerprint: str

    @property
    def address(self) -> tuple[str, int]:
        host = self.port.getHost()
        return "127.0.0.1", host.port  # type: ignore[attr-defined]

    def token(self, user: str = "alice", group: str = "team") -> str:
        return self.authority.mint(user, group)


def start_bot(state: Path, argv: Sequence[str], **options: Any) -> Bot:
    authority = TokenAuthority(KEY)

    def spec_for(request: Open) -> PtySpec:
        return PtySpec(argv, os.getcwd(), request.term, request.cols, request.rows)

    bot = TerminalBot(reactor, authority, spec_for, **options)
    identity = load_or_create_identity(state)
    port = listenQuic(reactor, 0, identity, bot.moq_session, interface="127.0.0.1")
    return Bot(bot, port, authority, identity.fingerprint.display)


@attrs.define(eq=False)
class Client:
    """What a person attached to the session would have seen."""

    link: AttachLink | None = None
    output: bytearray = attrs.field(factory=bytearray)
    controls: list[Message] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    #: A client that stops acknowledging looks like a terminal that stopped rendering.
    acking: bool = True
    waiters: list[tuple[Callable[[Client], bool], defer.Deferred[None]]] = attrs.field(factory=list)

    def got_output(self, data: bytes) -> None:
        self.output += data
        if self.link is not None and self.acking:
            self.link.shown_output(len(data))
        self._check()

    def resume_acking(self) -> None:
        self.acking = True
        if self.link is not None:
            self.link.shown_output(len(self.output) - self.link.shown)
            self.link.flush_ack()

    def got_control(self, message: Message) -> None:
        self.controls.append(message)
        self._check()

    def got_lost(self, why: str) -> None:
        self.lost.append(why)
        self._check()

    def until(
        self, condition: Callable[[Client], bool], timeout: float = 15
    ) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        waiter.addTimeout(timeout, reactor)
        self.waiters.append((condition, waiter))
        self._check()
        return waiter

    def _check(self) -> None:
        for entry in list(self.waiters):
            if entry[0](self):
                self.waiters.remove(entry)
                entry[1].callback(None)

    @property
    def close(self) -> Close | None:
        closes = [m for m in self.controls if isinstance(m, Close)]
        return closes[-1] if closes else None


@defer.inlineCallbacks
def attach(
    bot: Bot,
    tmp: Path,
    *,
    token: str | None = None,
    session_id: str | None = None,
    resume_offset: int | None = None,
    group: str = "team",
    cols: int = 80,
    rows: int = 24,
) -> Any:
    client = Client()
    request = Open(
        session_id or str(uuid.uuid4()),
        group,
        "xterm-256color",
        cols,
        rows,
        bot.token() if token is None else token,
        resume_offset=resume_offset,
        epoch=new_epoch(),
    )
    holder: list[AttachLink] = []
    moq = MoqSession(
        clock=reactor, is_client=True, on_namespace=lambda a: holder[0].namespace_seen(a)
    )
    link = AttachLink(moq, request, client.got_output, client.got_control, client.got_lost)
    holder.append(link)
    client.link = link
    host, port = bot.address
    verification = PinnedFingerprintVerification(known_hosts=tmp / "known_hosts")
    yield connectQuic(reactor, host, port, moq, verification=verification)
    yield moq.whenReady()
    link.start()
    return client
