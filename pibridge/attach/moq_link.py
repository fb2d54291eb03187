"""The client's end of ``pibridge/1``: one attach to a terminal session over MoQ.

The client publishes ``("pibridge", SID, "client")`` with its control, stdin
and resize tracks and writes ``open`` first on control; once the bot
publishes ``("pibridge", SID)`` the client subscribes to its control and
stdout tracks from the start of this attach's epoch, so nothing the bot wrote
before the subscription is lost. Output is acknowledged as it is shown, which
is what lets the bot keep only a small window of output in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from pibridge.bot.channels import ControlChannel, PayloadChannel
from pibridge.bot.server import bot_namespace, client_namespace
from pibridge.moq.filters import AbsoluteStart
from pibridge.moq.publisher import Refusal, SubscribeRequest, TrackPublisher
from pibridge.moq.session import MoqSession, NamespaceAnnouncement
from pibridge.seal.box import Channel, SealedLink, SealError
from pibridge.terminal import control
from pibridge.terminal.control import Ack, Message, Open, ParseError, Resize

log = Logger()

#: Objects from the relay that fail to open before the attach gives up.
MAX_SEAL_FAILURES = 16
#: Acknowledge shown output at least this often (bytes).
ACK_EVERY = 32 * 1024


#: Longest wait for the program's last output once the bot said it exited.
FINAL_OUTPUT_WAIT: Final = 5.0
#: How long a track's end waits for the bot's close before counting as a lost link.
TRACK_END_WAIT: Final = 2.0
#: How long a refused stdout subscription waits for the bot's reason on control.
REFUSAL_WAIT: Final = 2.0


def new_epoch() -> int:
    """An attach epoch above any earlier one of the same session: milliseconds of wall time."""
    return time.time_ns() // 1_000_000


@attrs.define(eq=False)
class AttachLink:
    """One attach; ``on_output`` gets PTY bytes, ``on_control`` every control message."""

    moq: MoqSession
    request: Open
    on_output: Callable[[bytes], None]
    on_control: Callable[[Message], None]
    on_lost: Callable[[str], None]
    #: Through a relay: every payload sealed to the bot's pinned key.
    seal: SealedLink | None = None
    control_out: TrackPublisher = attrs.field(init=False)
    stdin: TrackPublisher = attrs.field(init=False)
    resize: TrackPublisher = attrs.field(init=False)
    shown: int = attrs.field(init=False, default=0)
    acked: int = attrs.field(init=False, default=0)
    subscribed: bool = attrs.field(init=False, default=False)
    output_subscription: Any = attrs.field(init=False, default=None)
    closed: bool = attrs.field(init=False, default=False)
    #: Fires when the stdout track ends: after the last byte of output.
    output_done: defer.Deferred[None] = attrs.field(init=False, factory=defer.Deferred)

    def __attrs_post_init__(self) -> None:
        namespace = client_namespace(self.request.session_id)
        epoch = self.request.epoch
        self.control_out = self._track(namespace, "control", epoch)
        self.stdin = self._track(namespace, "stdin", epoch)
        self.resize = self._track(namespace, "resize", epoch)
        self.shown = self.request.resume_offset or 0
        self.acked = self.shown

    def _track(self, namespace: tuple[bytes, ...], name: str, epoch: int) -> TrackPublisher:
        track = TrackPublisher(namespace, name, check_subscriber=self._only_our_peer)
        track.startGroup(epoch)
        self.moq.tracks.add(track)
        return track

    def _only_our_peer(self, request: SubscribeRequest) -> Refusal | None:
        return None if request.session is self.moq else Refusal()

    def start(self) -> None:
        """Publish our namespace with ``open`` queued on control; find the bot's namespace."""
        self.send_control(self.request)
        self.moq.publishNamespace(client_namespace(self.request.session_id)).addErrback(
            self._failed, "publishing our namespace"
        )
        if self.seal is not None:
            # Through a relay the bot's namespace is learnt by asking for it.
            self.moq.subscribeNamespace(
                bot_namespace(self.request.session_id), self.namespace_seen
            ).addErrback(lambda failure: None)
        self.moq.whenClosed().addCallback(self._moq_closed)

    def _unseal(self, channel: Channel, payload: bytes) -> bytes | None:
        if self.seal is None:
            return payload
        try:
            return self.seal.open(channel, payload)
        except SealError as e:
            log.warn("dropped an object from the relay that did not open: {why}", why=str(e))
            if self.seal.failures == MAX_SEAL_FAILURES and not self.closed:
                self.on_lost("too many objects from the relay failed to open")
            return None

    def _sealed(self, channel: Channel, payload: bytes) -> bytes:
        return payload if self.seal is None else self.seal.seal(channel, payload)

    def namespace_seen(self, announcement: NamespaceAnnouncement) -> None:
        """Hand this every announcement of the MoQ session (peer or relay)."""
        if not announcement.active and announcement.namespace == bot_namespace(
            self.request.session_id
        ):
            # The bot withdrew this attach's namespace: a later attach may announce it again.
            self.subscribed = False
            return
        if (
            announcement.active
            and not self.subscribed
            and announcement.namespace == bot_namespace(self.request.session_id)
        ):
            self.subscribed = True
            self._subscribe()

    def _subscribe(self) -> None:
        namespace = bot_namespace(self.request.session_id)
        start = AbsoluteStart(self.request.epoch, 0)
        channel = ControlChannel(self._control_received, self._track_ended)
        self.moq.subscribe(namespace, "control", channel, start=start).addErrback(
            self._failed, "subscribing to control"
        )
        output = PayloadChannel(self._output_received, self._output_ended)
        self.moq.subscribe(namespace, "stdout", output, start=start).addCallbacks(
            self._output_subscribed, self._output_refused
        )

    def _output_subscribed(self, subscription: Any) -> None:
        self.output_subscription = subscription

    def _output_refused(self, failure: Failure) -> None:
        """A refused open publishes only control, whose error and close travel on a data
        stream that can arrive after this SUBSCRIBE_ERROR: give them time to say why."""
        self.moq.clock.callLater(REFUSAL_WAIT, self._failed, failure, "subscribing to stdout")

    # -- from the bot -------------------------------------------------------------------

    def _control_received(self, payload: bytes) -> None:
        opened = self._unseal(Channel.CONTROL, payload)
        if opened is None:
            return
        payload = opened
        try:
            message = control.parse(payload)
        except ParseError as e:
            log.warn("bad control message from the bot: {why}", why=str(e))
            return
        if isinstance(message, control.OpenAck) and message.output_offset is not None:
            self.shown = self.acked = message.output_offset
        if (
            isinstance(message, control.Close)
            and message.reason == control.CloseReason.REMOTE_EXIT
            and not self.output_done.called
        ):
            # The close travels on the control stream and can overtake the
            # program's last output on a lossy link; that output ends the
            # stdout track, so show it first.
            self.output_done.addTimeout(FINAL_OUTPUT_WAIT, self.moq.clock).addBoth(
                lambda _: self.on_control(message)
            )
            return
        self.on_control(message)

    def _output_received(self, payload: bytes) -> None:
        opened = self._unseal(Channel.STDOUT, payload)
        if opened is not None:
            self.on_output(opened)

    def shown_output(self, count: int) -> None:
        """The terminal took ``count`` more bytes; acknowledge them in batches."""
        self.shown += count
        if self.shown - self.acked >= ACK_EVERY:
            self.flush_ack()

    def flush_ack(self) -> None:
        if self.shown > self.acked:
            self.acked = self.shown
            self.send_control(Ack(self.shown))

    # -- to the bot ---------------------------------------------------------------------

    def send_control(self, message: Message) -> None:
        if not self.control_out.ended:
            self.control_out.write(self._sealed(Channel.CONTROL, control.serialize(message)))

    def send_input(self, data: bytes) -> None:
        if data and not self.stdin.ended:
            self.stdin.write(self._sealed(Channel.STDIN, data))

    def send_resize(self, cols: int, rows: int) -> None:
        if not self.resize.ended:
            message = Resize(self.request.session_id, cols, rows)
            self.resize.write(self._sealed(Channel.RESIZE, control.serialize(message)))

    def register_input_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the local stdin reader) while the stdin track is full."""
        self.stdin.registerProducer(producer, True)

    def pause_output(self) -> None:
        if self.output_subscription is not None:
            self.output_subscription.pauseProducing()

    def resume_output(self) -> None:
        if self.output_subscription is not None:
            self.output_subscription.resumeProducing()

    def close(self) -> None:
        """End this attach's tracks and the MoQ session."""
        if self.closed:
            return
        self.closed = True
        for track in (self.control_out, self.stdin, self.resize):
            track.unregisterProducer()
            track.loseConnection()
        if not self.moq.isClosed:
            self.moq.close(reason="client done")

    # -- failures -------------------------------------------------------------------------

    def _output_ended(self, reason: Failure) -> None:
        if not self.output_done.called:
            self.output_done.callback(None)
        self._track_ended(reason)

    def _track_ended(self, reason: Failure) -> None:
        # The bot ends its tracks when it ends the attach and says why on
        # control; on a lossy link that close may still be on its way (the end
        # is signalled on another stream), so it gets the first word.
        self.moq.clock.callLater(TRACK_END_WAIT, self._track_lost, reason)

    def _track_lost(self, reason: Failure) -> None:
        if not self.closed:
            self.on_lost("the bot ended a track")

    def _moq_closed(self, reason: object) -> None:
        if not self.closed:
            self.closed = True
            self.on_lost("the connection closed")

    def _failed(self, failure: Failure, what: str) -> None:
        log.info("attach: {what} failed: {why}", what=what, why=failure.getErrorMessage())
        if not self.closed:
            self.on_lost(f"{what} failed: {failure.getErrorMessage()}")
