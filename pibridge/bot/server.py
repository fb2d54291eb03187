"""The bot side of ``pibridge/1``: terminal sessions served to clients over MoQ.

Discovery is the same with or without a relay: a client PUBLISH_NAMESPACEs
``("pibridge", SID, "client")``; the bot hears of it (from the peer itself, or
through SUBSCRIBE_NAMESPACE on a relay), SUBSCRIBEs to the client's control
track, and once an ``open`` with a valid token arrives, binds the session,
PUBLISH_NAMESPACEs ``("pibridge", SID)`` and SUBSCRIBEs to the client's stdin
and resize tracks. Each track is one Twisted protocol (see ``channels``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from nacl.public import PrivateKey
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.agent.runtime import AgentNotReady
from pibridge.bot.channels import ControlChannel, PayloadChannel
from pibridge.bot.session import TerminalSession, TerminalStats
from pibridge.moq.errors import SubscribeErrorCode
from pibridge.moq.filters import AbsoluteStart
from pibridge.moq.publisher import Refusal, SubscribeRequest, TrackPublisher, TrackRegistry
from pibridge.moq.session import MoqSession, NamespaceAnnouncement
from pibridge.seal.box import Channel, SealedLink, SealError
from pibridge.terminal import control
from pibridge.terminal.auth import RefusalReason, Refused, SessionRegistry, TokenAuthority
from pibridge.terminal.control import (
    Ack,
    Close,
    CloseReason,
    Error,
    Message,
    Open,
    ParseError,
    Ping,
    Pong,
    Resize,
    Status,
)
from pibridge.terminal.heartbeat import Heartbeat
from pibridge.terminal.pty_host import PtySpec

log = Logger()

NAMESPACE_ROOT = b"pibridge"
CLIENT_MARK = b"client"
#: Client keys remembered to refuse replayed relay-mode opens.
MAX_REMEMBERED_CLIENT_KEYS = 65536
#: Objects that fail to open before a relay-mode attach is ended.
MAX_SEAL_FAILURES = 16
#: Output held back this long (no acknowledgement, or a full stream) shows as "slow".
SLOW_AFTER = 2.0
SLOW_CHECK_EVERY = 1.0
#: How long a refused client may stay connected to read why.
REFUSED_LINGER = 10.0
#: Largest stdout object; a reattach replay is cut into pieces of this size.
MAX_OUTPUT_OBJECT = 64 * 1024
#: How soon the bot subscribes again to a relayed client namespace whose attach ended.
REWATCH_DELAY = 0.5


def client_namespace(session_id: str) -> tuple[bytes, ...]:
    return (NAMESPACE_ROOT, session_id.encode(), CLIENT_MARK)


def bot_namespace(session_id: str) -> tuple[bytes, ...]:
    return (NAMESPACE_ROOT, session_id.encode())


def session_id_of(namespace: tuple[bytes, ...]) -> str | None:
    """The SID of a well-formed client namespace, else None."""
    if len(namespace) != 3 or namespace[0] != NAMESPACE_ROOT or namespace[2] != CLIENT_MARK:
        return None
    try:
        text = namespace[1].decode("ascii")
        if str(uuid.UUID(text)) != text:
            return None
    except (UnicodeDecodeError, ValueError):
        return None
    return text


class CannotStart(Exception):
    """The session's program could not be spawned."""


@attrs.define(eq=False)
class TerminalBot:
    """Every terminal session of this bot, and the rules for who may reach them."""

    reactor: Any
    authority: TokenAuthority
    spec_for: Callable[[Open], PtySpec]
    grace: float = 30.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 20.0
    max_sessions: int = 64
    debug_io: bool = False
    #: The bot's long-term key; clients pin it, and relay-mode objects are sealed to it.
    identity: PrivateKey | None = None
    registry: SessionRegistry = attrs.field(init=False)
    sessions: dict[str, TerminalSession] = attrs.field(factory=dict, init=False)
    _seen_client_keys: OrderedDict[bytes, None] = attrs.field(factory=OrderedDict, init=False)
    attachments: set[ClientAttachment] = attrs.field(factory=set, init=False)
    refusals: dict[str, int] = attrs.field(factory=dict, init=False)
    stats: TerminalStats = attrs.field(factory=TerminalStats, init=False)
    #: Client namespaces the relay has announced and not withdrawn, per relay connection.
    _relayed_namespaces: set[tuple[MoqSession, tuple[bytes, ...]]] = attrs.field(
        factory=set, init=False
    )

    def __attrs_post_init__(self) -> None:
        self.registry = SessionRegistry(max_sessions=self.max_sessions)

    # -- MoQ sessions ---------------------------------------------------------------

    def moq_session(self, *, is_client: bool = False) -> MoqSession:
        """A MoQ session handler for one QUIC connection (the server's handler factory)."""
        session = MoqSession(
            clock=self.reactor,
            is_client=is_client,
            tracks=TrackRegistry(),
            on_namespace=self.namespace_seen,
        )
        return session

    def namespace_seen(self, announcement: NamespaceAnnouncement) -> None:
        """A client namespace appeared on a direct connection."""
        self._client_appeared(announcement, relayed=False)

    def relayed_namespace_seen(self, announcement: NamespaceAnnouncement) -> None:
        """A client namespace appeared on the relay: it may be for another bot."""
        key = (announcement.session, tuple(announcement.namespace))
        if announcement.active:
            # Entries of relay connections that have gone are dropped as new ones come.
            self._relayed_namespaces = {
                seen for seen in self._relayed_namespaces if not seen[0].isClosed
            }
            self._relayed_namespaces.add(key)
        else:
            self._relayed_namespaces.discard(key)
        self._client_appeared(announcement, relayed=True)

    def watch_again(self, moq: MoqSession, session_id: str) -> None:
        """A relayed attach of a session that waits for its client ended.

        A relay announces a namespace once however many publish it: a client that
        reattaches while the relay still holds its dead connection (killed,
        network gone) publishes a path already announced, and nothing new reaches
        the bot. The relay routes each SUBSCRIBE to a publisher still there, so
        while the session waits, the bot subscribes again.
        """
        if session_id in self.sessions:
            self.reactor.callLater(REWATCH_DELAY, self._rewatch, moq, session_id)

    def _rewatch(self, moq: MoqSession, session_id: str) -> None:
        namespace = client_namespace(session_id)
        if (
            session_id not in self.sessions
            or moq.isClosed
            or (moq, namespace) not in self._relayed_namespaces
        ):
            return
        self._client_appeared(NamespaceAnnouncement(moq, namespace, True), relayed=True)

    def _client_appeared(self, announcement: NamespaceAnnouncement, *, relayed: bool) -> None:
        if not announcement.active:
            return
        session_id = session_id_of(announcement.namespace)
        if session_id is None:
            return
        if any(
            existing.moq is announcement.session
            and existing.session_id == session_id
            and not existing.ended
            for existing in self.attachments
        ):
            return
        attachment = ClientAttachment(self, announcement.session, session_id, relayed=relayed)
        self.attachments.add(attachment)
        attachment.start()

    def fresh_client_key(self, key: bytes) -> bool:
        """Each attach seals under a new client key; a key seen before is a replay."""
        if key in self._seen_client_keys:
            return False
        self._seen_client_keys[key] = None
        while len(self._seen_client_keys) > MAX_REMEMBERED_CLIENT_KEYS:
            self._seen_client_keys.popitem(last=False)
        return True

    # -- sessions -----------------------------------------------------------------------

    def accept(self, attachment: ClientAttachment, request: Open) -> TerminalSession:
        """Authenticate an open and bind it; raises `Refused` with the reason."""
        identity = self.authority.verify(request.token)
        if identity.group != request.agent_group_id:
            raise Refused(RefusalReason.WRONG_OWNER, "the token is for another agent group")
        session = self.sessions.get(request.session_id)
        if session is None and request.resume_offset is not None:
            # A reattach after the grace window: say the session is gone rather
            # than start a fresh program under the old id.
            raise Refused(RefusalReason.UNKNOWN_SESSION, "it ended while no client was attached")
        # What to run is decided before binding, so a bot that cannot start
        # its program (pi not configured) refuses without keeping anything.
        spec = self.spec_for(request) if session is None else None
        _, replaced = self.registry.open(request.session_id, identity, attachment)
        if isinstance(replaced, ClientAttachment):
            replaced.superseded()
        if session is None:
            assert spec is not None
            session = TerminalSession(
                request.session_id,
                identity,
                self.reactor,
                self._finished,
                grace=self.grace,
                stats=self.stats,
            )
            try:
                session.start(self.reactor, spec, debug_io=self.debug_io)
            except OSError as e:
                self.registry.release(request.session_id)
                raise CannotStart(f"the program could not be started: {e.strerror}") from None
            self.sessions[request.session_id] = session
        return session

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def _finished(self, session: TerminalSession) -> None:
        self.sessions.pop(session.session_id, None)
        self.registry.release(session.session_id)

    def stop(self) -> Deferred[Any]:
        """Tell every client the server is stopping, end every program, wait until reaped."""
        waits = []
        for session in list(self.sessions.values()):
            ended = session.shutdown()
            if ended is not None:
                waits.append(ended)
        for attachment in list(self.attachments):
            attachment.stop_heartbeat()
            if attachment.refused:
                attachment._cut_off()
        return DeferredList(waits, consumeErrors=True)


@attrs.define(eq=False)
class ClientAttachment:
    """One client's attach over one MoQ session: the session's ``ClientLink``."""

    bot: TerminalBot
    moq: MoqSession
    session_id: str
    session: TerminalSession | None = None
    epoch: int = 0
    control_out: TrackPublisher | None = None
    stdout: TrackPublisher | None = None
    heartbeat: Heartbeat | None = None
    ended: bool = False
    refused: bool = False
    linger: IDelayedCall | None = None
    #: Through a relay: the MoQ session is shared and every payload is sealed.
    relayed: bool = False
    seal: SealedLink | None = None
    subscriptions: list[Any] = attrs.field(factory=list)
    published: bool = False
    slow_check: IDelayedCall | None = None
    stalled_since: float | None = None
    slow_reported: bool = False

    def start(self) -> None:
        self._subscribe("control", self._control_object, self.control_lost, AbsoluteStart(0, 0))
        self.moq.whenClosed().addCallback(self._moq_closed)

    def _subscribe(
        self,
        track: str,
        received: Callable[[bytes], None],
        lost: Callable[[Failure], None],
        start: AbsoluteStart,
    ) -> Deferred[Any]:
        channel = (
            ControlChannel(received, lost) if track == "control" else PayloadChannel(received, lost)
        )
        subscribing = self.moq.subscribe(
            client_namespace(self.session_id), track, channel, start=start
        )
        subscribing.addCallback(self._subscribed)
        subscribing.addErrback(self._subscribe_failed, track)
        return subscribing

    def _subscribed(self, subscription: Any) -> Any:
        if self.ended:
            subscription.loseConnection()
        else:
            self.subscriptions.append(subscription)
        return subscription

    # -- sealing (relay mode) ------------------------------------------------------------

    def _control_object(self, payload: bytes) -> None:
        if self.relayed and self.seal is None and not self._begin_seal(payload):
            return
        opened = self._unseal(Channel.CONTROL, payload)
        if opened is not None:
            self.control_received(opened)

    def _begin_seal(self, first: bytes) -> bool:
        if self.bot.identity is None:
            self._end_link()
            return False
        try:
            self.seal = SealedLink.for_bot(self.bot.identity, first)
        except SealError as e:
            # Most often a client of another bot on the same relay: not ours to answer.
            log.debug("relay client {sid} is not ours: {why}", sid=self.session_id, why=str(e))
            self._end_link()
            return False
        if not self.bot.fresh_client_key(bytes(self.seal.client_key)):
            self.bot.refused("replayed_open")
            log.warn("refused a replayed open for terminal session {sid}", sid=self.session_id)
            self._end_link()
            return False
        return True

    def _unseal(self, channel: Channel, payload: bytes) -> bytes | None:
        if not self.relayed:
            return payload
        if self.seal is None:
            return None
        try:
            return self.seal.open(channel, payload)
        except SealError as e:
            self.bot.refused("seal_failure")
            log.warn(
                "dropped an object of terminal session {sid} that did not open: {why}",
                sid=self.session_id,
                why=str(e),
            )
            if self.seal.failures >= MAX_SEAL_FAILURES:
                self.send_control(
                    Close(
                        self.session_id,
                        CloseReason.PROTOCOL_ERROR,
                        message="too many objects failed to open",
                    )
                )
                self._gone("seal_failures")
            return None

    def _sealed(self, channel: Channel, payload: bytes) -> bytes:
        if not self.relayed:
            return payload
        assert self.seal is not None
        return self.seal.seal(channel, payload)

    # -- from the client ---------------------------------------------------------------

    def control_received(self, payload: bytes) -> None:
        if self.heartbeat is not None:
            self.heartbeat.heard()
        try:
            message = control.parse(payload)
        except ParseError as e:
            self._protocol_error(f"bad control message: {e}")
            return
        if self.refused:
            return
        if isinstance(message, Open):
            self._open(message)
        elif self.session is None:
            self._protocol_error(f"{message.TYPE} before open")
        elif isinstance(message, Ping):
            assert self.heartbeat is not None
            self.send_control(self.heartbeat.ping_received(message))
        elif isinstance(message, Pong):
            assert self.heartbeat is not None
            self.heartbeat.pong_received(message)
        elif isinstance(message, Ack):
            self.session.acknowledge(message.offset)
        elif isinstance(message, Close):
            log.info(
                "client closed terminal session {sid}: {reason}",
                sid=self.session_id,
                reason=message.reason,
            )
            self.session.client_closed(self, message.reason)
            self._end_link()
        elif isinstance(message, Resize):
            self.resize_received(message)

    def stdin_received(self, payload: bytes) -> None:
        opened = self._unseal(Channel.STDIN, payload)
        if opened is not None and self.session is not None and self._still_bound():
            self.session.input(opened)

    def resize_payload_received(self, payload: bytes) -> None:
        opened = self._unseal(Channel.RESIZE, payload)
        if opened is None:
            return
        payload = opened
        try:
            message = control.parse(payload, expect=(Resize,))
        except ParseError as e:
            self._protocol_error(f"bad resize message: {e}")
            return
        assert isinstance(message, Resize)
        self.resize_received(message)

    def resize_received(self, message: Resize) -> None:
        if self.session is not None and self._still_bound():
            if message.session_id != self.session_id:
                self._protocol_error("resize names another session")
                return
            self.session.resize(message.cols, message.rows)

    def control_lost(self, reason: Failure) -> None:
        self._gone("network_error")

    # -- open ------------------------------------------------------------------------------

    def _open(self, request: Open) -> None:
        if self.session is not None:
            self._protocol_error("open sent twice")
            return
        self.epoch = request.epoch
        if request.session_id != self.session_id:
            self._refuse("session_mismatch", "open names another session")
            return
        try:
            session = self.bot.accept(self, request)
        except Refused as refused:
            self._refuse(str(refused.reason), str(refused))
            return
        except (AgentNotReady, CannotStart) as problem:
            self._refuse("not_ready", str(problem))
            return
        self.session = session
        self._publish()
        start = AbsoluteStart(self.epoch, 0)
        self._subscribe("stdin", self.stdin_received, self._data_track_lost, start).addCallback(
            self._stdin_subscribed
        )
        self._subscribe("resize", self.resize_payload_received, self._data_track_lost, start)
        session.attach(self, request)
        self.heartbeat = Heartbeat(
            self.bot.reactor,
            self.send_control,
            self._heartbeat_lost,
            interval=self.bot.heartbeat_interval,
            timeout=self.bot.heartbeat_timeout,
        )
        self.heartbeat.start()
        self.slow_check = self.bot.reactor.callLater(SLOW_CHECK_EVERY, self._check_slow)
        log.info(
            "terminal session {sid} attached for {user}/{group} (epoch {epoch})",
            sid=self.session_id,
            user=session.owner.user,
            group=session.owner.group,
            epoch=self.epoch,
        )

    def _check_slow(self) -> None:
        """Tell the user when output has been held back for a while (a slow or stalled link)."""
        self.slow_check = None
        if self.ended or self.session is None or self.session.gate is None:
            return
        now = self.bot.reactor.seconds()
        gate = self.session.gate
        if gate.attached and gate.paused and self.session.link is self:
            if self.stalled_since is None:
                self.stalled_since = now
            elif now - self.stalled_since >= SLOW_AFTER and not self.slow_reported:
                self.slow_reported = True
                detail = f"{gate.in_flight} bytes of output waiting for the client"
                self.send_control(Status("slow", self.session_id, detail))
        else:
            self.stalled_since = None
            if self.slow_reported:
                self.slow_reported = False
                self.send_control(Status("ok", self.session_id))
        self.slow_check = self.bot.reactor.callLater(SLOW_CHECK_EVERY, self._check_slow)

    def _stdin_subscribed(self, subscription: Any) -> None:
        if subscription is None or self.ended:
            return
        if self.session is not None and self.session.host is not None:
            # The PTY's input queue pauses the stdin track, and through QUIC
            # flow control the client's stdin reader, when the program is slow.
            self.session.host.registerProducer(subscription, True)

    def _publish(self, *, only_refusal: bool = False) -> None:
        namespace = bot_namespace(self.session_id)
        self.control_out = TrackPublisher(
            namespace, "control", check_subscriber=self._only_this_client
        )
        self.control_out.startGroup(self.epoch)
        self.moq.tracks.add(self.control_out)
        if not only_refusal:
            self.stdout = TrackPublisher(
                namespace, "stdout", check_subscriber=self._only_this_client
            )
            self.stdout.startGroup(self.epoch)
            self.stdout.registerProducer(_LinkPressure(self), True)
            self.moq.tracks.add(self.stdout)
        self.published = True
        self.moq.publishNamespace(namespace).addErrback(self._publish_failed)

    def _only_this_client(self, request: SubscribeRequest) -> Refusal | None:
        # Direct: only the bound client's connection. Through a relay every
        # subscriber is the relay; what it forwards is sealed for the client.
        if request.session is not self.moq or self.ended:
            self.bot.refused("subscribe_not_bound_client")
            log.warn(
                "refused a SUBSCRIBE to terminal session {sid} from another client",
                sid=self.session_id,
            )
            return Refusal(SubscribeErrorCode.UNAUTHORIZED, "not this session's client")
        return None

    def _refuse(self, reason: str, message: str) -> None:
        self.bot.refused(reason)
        log.warn("refused terminal open for {sid}: {reason}", sid=self.session_id, reason=message)
        if self.relayed and self._someone_else_attached():
            # The namespace belongs to a live attach on this relay connection;
            # the refused party (most likely a replay or a forgery) hears nothing.
            self._end_link()
            return
        self._publish(only_refusal=True)
        self.send_control(Error("refused", message, session_id=self.session_id))
        self.send_control(Close(self.session_id, CloseReason.REFUSED, message=message))
        # The refusal stays readable until the client has taken it and hung up;
        # a client that lingers is cut off.
        self.refused = True
        self.linger = self.bot.reactor.callLater(REFUSED_LINGER, self._cut_off)

    def _someone_else_attached(self) -> bool:
        return any(
            other is not self
            and other.moq is self.moq
            and other.session_id == self.session_id
            and other.published
            and not other.ended
            for other in self.bot.attachments
        )

    def _cut_off(self) -> None:
        self.linger = None
        if not self.relayed and not self.moq.isClosed:
            self.moq.close(reason="terminal open refused")
        self._end_link()

    # -- ClientLink ------------------------------------------------------------------------

    def send_control(self, message: Message) -> None:
        if self.control_out is not None and not self.control_out.ended:
            self.control_out.write(self._sealed(Channel.CONTROL, control.serialize(message)))

    def send_output(self, data: bytes) -> None:
        if self.stdout is None or self.stdout.ended:
            return
        for start in range(0, len(data), MAX_OUTPUT_OBJECT):
            piece = data[start : start + MAX_OUTPUT_OBJECT]
            self.stdout.write(self._sealed(Channel.STDOUT, piece))

    def end(self) -> None:
        self._end_link()

    # -- ending ----------------------------------------------------------------------------

    def superseded(self) -> None:
        """Another client of the same owner attached to this session."""
        self.stop_heartbeat()

    def stop_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def _still_bound(self) -> bool:
        try:
            self.bot.registry.check(self.session_id, self)
        except Refused:
            self.bot.refused("input_not_bound_client")
            return False
        return True

    def _heartbeat_lost(self, reason: str) -> None:
        log.info("terminal session {sid}: heartbeat lost", sid=self.session_id)
        self.send_control(Close(self.session_id, CloseReason.HEARTBEAT_TIMEOUT))
        self._gone(reason)
        if not self.relayed:
            self.moq.close(reason="heartbeat timeout")

    def _data_track_lost(self, reason: Failure) -> None:
        pass

    def _moq_closed(self, reason: object) -> None:
        self._gone("network_error")

    def _gone(self, reason: str) -> None:
        if self.session is not None:
            self.session.detach(self, reason)
            self.bot.registry.detach(self.session_id, self)
        self._end_link()

    def _end_link(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.stop_heartbeat()
        for call in (self.linger, self.slow_check):
            if call is not None and call.active():
                call.cancel()
        self.linger = self.slow_check = None
        for track in (self.control_out, self.stdout):
            if track is not None:
                track.unregisterProducer()
                track.loseConnection()
        for subscription in self.subscriptions:
            if not subscription.ended:
                subscription.loseConnection()
        self.subscriptions.clear()
        if not self.moq.isClosed:
            for track in (self.control_out, self.stdout):
                if track is not None:
                    self.moq.tracks.remove(track)
            if self.published:
                self.moq.publishNamespaceDone(bot_namespace(self.session_id))
        self.bot.attachments.discard(self)
        if self.relayed and not self.moq.isClosed:
            self.bot.watch_again(self.moq, self.session_id)

    def _protocol_error(self, message: str) -> None:
        self.bot.refused("protocol_error")
        log.warn("terminal session {sid}: {message}", sid=self.session_id, message=message)
        self.send_control(Error("protocol_error", message, session_id=self.session_id))

    def _subscribe_failed(self, failure: Failure, track: str) -> None:
        log.info(
            "could not subscribe to {track} of client {sid}: {why}",
            track=track,
            sid=self.session_id,
            why=failure.getErrorMessage(),
        )
        if track == "control":
            self._end_link()

    def _publish_failed(self, failure: Failure) -> None:
        log.warn(
            "could not publish terminal session {sid}: {why}",
            sid=self.session_id,
            why=failure.getErrorMessage(),
        )


@implementer(IPushProducer)
@attrs.define(eq=False)
class _LinkPressure:
    """The stdout track's flow control, reported to the session's output gate."""

    attachment: ClientAttachment

    def pauseProducing(self) -> None:
        if self.attachment.session is not None:
            self.attachment.session.link_paused(self.attachment)

    def resumeProducing(self) -> None:
        if self.attachment.session is not None:
            self.attachment.session.link_resumed(self.attachment)

    def stopProducing(self) -> None:
        pass
