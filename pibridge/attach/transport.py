"""How ``pibridge-attach`` reaches a bot: MoQ over QUIC, with automatic reattach.

Directly, the QUIC certificate identifies the bot (pinned in known-hosts).
Through a relay, the relay's certificate only identifies the relay; every
payload is sealed to the bot's identity key given with ``--bot-key``.

A dropped link is not the end of a session: the bot keeps the program for a
grace window, so the client reconnects (with backoff, for a while) and resumes
from the last byte it showed. Only when that fails, or the bot says the
session is over, does the attach end.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from pibridge.attach.cli import AttachOptions
from pibridge.attach.client import State, TerminalClient
from pibridge.attach.moq_link import AttachLink, new_epoch
from pibridge.moq.endpoint import connectMoq
from pibridge.moq.session import MoqSession, NamespaceAnnouncement
from pibridge.quic.verification import PinnedFingerprintVerification, default_known_hosts_path
from pibridge.seal.box import SealedLink, parse_public_key
from pibridge.terminal import control

log = Logger()

#: How long to keep trying to reattach after the link drops.
REATTACH_WINDOW = 25.0
FIRST_RETRY = 0.25
MAX_RETRY = 4.0


def _notify(text: str) -> None:
    sys.stderr.write(text.replace("\n", "\r\n") + "\r\n")
    sys.stderr.flush()


@attrs.define(eq=False)
class Attachment:
    """Keeps one ``TerminalClient`` attached across link drops."""

    reactor: Any
    options: AttachOptions
    client: TerminalClient
    reattach_window: float = REATTACH_WINDOW
    link: AttachLink | None = None
    lost_at: float | None = None
    retry: IDelayedCall | None = None
    delay: float = FIRST_RETRY
    attaches: int = 0

    def __attrs_post_init__(self) -> None:
        self.client.on_silent = self._silent

    def verification(self) -> PinnedFingerprintVerification:
        return PinnedFingerprintVerification(
            known_hosts=self.options.known_hosts or default_known_hosts_path(),
            expected_fingerprint=self.options.fingerprint,
            notify=_notify,
        )

    @defer.inlineCallbacks
    def connect(self) -> Any:
        """One attach: connect, publish, open (resuming where output stopped)."""
        holder: list[AttachLink] = []

        def seen(announcement: NamespaceAnnouncement) -> None:
            if holder:
                holder[0].namespace_seen(announcement)

        moq: MoqSession = yield connectMoq(
            self.reactor,
            self.options.host,
            self.options.port,
            verification=self.verification(),
            on_namespace=seen,
        )
        resume = self.client.output_offset if self.attaches else None
        request = self.client.open_request(epoch=new_epoch(), resume_offset=resume)
        seal = None
        if self.options.relay is not None:
            assert self.options.bot_key is not None
            seal = SealedLink.for_client(parse_public_key(self.options.bot_key))

        def lost(why: str) -> None:
            # Only the current link's first report counts: a link reports a drop
            # from each track and from its connection, and each report would start
            # another reattach, each publishing the same client namespace. The
            # dropped link is closed so a relay forgets its namespace.
            if holder and holder[0] is self.link:
                self.link = None
                holder[0].close()
                self._lost(why)

        link = AttachLink(moq, request, self._output, self._control, lost, seal=seal)
        holder.append(link)
        self.link = link
        self.attaches += 1
        self.client.attach(link)
        link.start()
        if self.client.state is State.NEW:
            self.client.start()
        return link

    # -- what the link reports ----------------------------------------------------------

    def _output(self, data: bytes) -> None:
        self.client.output_received(data)

    def _control(self, message: control.Message) -> None:
        if isinstance(message, control.OpenAck) and self.lost_at is not None:
            self.lost_at = None
            self.delay = FIRST_RETRY
            self.client.status.clear()
        if (
            isinstance(message, control.Close)
            and message.reason == control.CloseReason.HEARTBEAT_TIMEOUT
            and self.client.state is State.OPEN
        ):
            # The bot stopped hearing us; it keeps the session for its grace
            # window, so this is a drop to reattach after, not the end.
            self._silent("the bot stopped hearing us")
            return
        self.client.control_received(message)

    def _lost(self, why: str) -> None:
        if self.client.state is State.CLOSED:
            return
        if self.client.state is not State.OPEN:
            self.client.connection_lost(why)
            return
        if self.lost_at is None:
            self.lost_at = self.reactor.seconds()
            log.info("attach: link lost ({why}), reattaching", why=why)
        self._schedule(why)

    def _silent(self, why: str) -> None:
        """The bot went quiet: drop this link without a word (the bot keeps the
        session for its grace window) and reattach."""
        link = self.link
        if link is not None and not link.closed:
            link.closed = True
            if not link.moq.isClosed:
                link.moq.close(reason="no answer")
        self._lost(why)

    def _schedule(self, why: str) -> None:
        assert self.lost_at is not None
        if self.reactor.seconds() - self.lost_at > self.reattach_window:
            self.client.connection_lost(f"{why}; could not reattach")
            return
        self.client.status.show("connection lost, reattaching")
        self.client.keep_alive()
        self.retry = self.reactor.callLater(self.delay, self._reattach, why)
        self.delay = min(self.delay * 2, MAX_RETRY)

    def _reattach(self, why: str) -> None:
        self.retry = None
        if self.client.state is State.CLOSED:
            return

        def failed(failure: Any) -> None:
            log.info("attach: reattach failed: {why}", why=failure.getErrorMessage())
            self._schedule(why)

        self.connect().addErrback(failed)

    def cancel(self) -> None:
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None


def connect(reactor: Any, options: AttachOptions, client: TerminalClient) -> defer.Deferred[object]:
    """The connector ``pibridge-attach`` uses: attach directly to ``HOST:PORT``."""
    attachment = Attachment(reactor, options, client)

    def stop_retrying(outcome: object) -> object:
        attachment.cancel()
        return outcome

    client.finished.addBoth(stop_retrying)
    attached: defer.Deferred[object] = attachment.connect()
    return attached
