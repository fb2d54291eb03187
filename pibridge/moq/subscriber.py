"""Remote tracks: a :class:`Subscription` feeds one object per ``dataReceived``.

Incoming subgroup streams are parsed here. A stream whose track alias is not
yet known (its SUBSCRIBE_OK is still on the way, as happens through relays) is
held, bounded in count, bytes and time, until the alias is known.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IPushProducer, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.moq.draft14.data import SubgroupStreamParser
from pibridge.moq.draft14.messages import Location, Namespace, ObjectStatus, SubgroupObject
from pibridge.moq.errors import ProtocolViolation, StreamResetCode

if TYPE_CHECKING:
    from pibridge.moq.session import MoqSession

_log = Logger()

#: Bytes of objects held per stream before we stop reading it (QUIC flow control
#: then holds the sender back).
STREAM_BUFFER_LIMIT = 1024 * 1024
#: How long a PUBLISH_DONE waits for the streams it announced but we have not seen.
PUBLISH_DONE_GRACE = 2.0


class TrackEnded(ConnectionDone):
    """The publisher ended the subscription (PUBLISH_DONE, or END_OF_TRACK)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"track ended (status {code}: {reason})")
        self.code = code
        self.reason = reason


class Unsubscribed(ConnectionDone):
    """We ended the subscription ourselves (UNSUBSCRIBE)."""


class SessionClosed(ConnectionLost):
    """The MoQ session under the subscription ended."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"MoQ session closed (code {code:#x}: {reason})")
        self.code = code
        self.reason = reason


class SubscribeRefused(Exception):
    """The publisher answered SUBSCRIBE with SUBSCRIBE_ERROR."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"subscribe refused (code {code:#x}: {reason})")
        self.code = code
        self.reason = reason


class _SubscriptionAddress:
    def __init__(self, namespace: Namespace, name: bytes) -> None:
        self.namespace = namespace
        self.name = name

    def __repr__(self) -> str:
        return f"<remote track {b'/'.join(self.namespace)!r} {self.name!r}>"


class IncomingSubgroup(Protocol):
    """The protocol on every subgroup stream the peer opens."""

    def __init__(self, session: MoqSession) -> None:
        self.session = session
        self.parser = SubgroupStreamParser()
        self.pending: deque[SubgroupObject] = deque()
        self.pending_bytes = 0
        self.subscription: Subscription | None = None
        self.finished = False
        self.reset = False
        self.discarded = False
        self.read_paused = False
        self.orphan_timer: IDelayedCall | None = None

    @property
    def group_id(self) -> int:
        assert self.parser.header is not None
        return self.parser.header.group_id

    def dataReceived(self, data: bytes) -> None:
        if self.discarded:
            return
        had_header = self.parser.header is not None
        try:
            objects = self.parser.feed(data)
        except ProtocolViolation as violation:
            self.session._violation(violation)
            return
        for obj in objects:
            self.pending.append(obj)
            self.pending_bytes += len(obj.payload)
        if not had_header and self.parser.header is not None:
            self.session._subgroupHeader(self)
        elif self.subscription is not None:
            self.subscription._pump()
        self._limitBuffer()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self.orphan_timer is not None and self.orphan_timer.active():
            self.orphan_timer.cancel()
        self.orphan_timer = None
        if self.discarded:
            return
        if reason.check(ConnectionDone):
            try:
                self.parser.end()
            except ProtocolViolation as violation:
                self.session._violation(violation)
                return
        else:
            self.reset = True
            if self.parser.header is not None:
                _log.info(
                    "subgroup stream of group {group} ended early: {why}",
                    group=self.parser.header.group_id,
                    why=reason.getErrorMessage(),
                )
        self.finished = True
        if self.subscription is not None:
            self.subscription._pump()
        else:
            self.session._orphanGone(self)

    def discard(self) -> None:
        """We do not want this stream (unknown or ended subscription): stop it."""
        self.discarded = True
        self.finished = True
        self.pending.clear()
        self.pending_bytes = 0
        if self.orphan_timer is not None and self.orphan_timer.active():
            self.orphan_timer.cancel()
        self.orphan_timer = None
        if self.transport is not None:
            self.transport.abortConnection(StreamResetCode.CANCELLED)  # type: ignore[attr-defined]
        if self.subscription is not None:
            self.subscription._pump()

    def pauseReading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeReading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _limitBuffer(self) -> None:
        if self.pending_bytes > STREAM_BUFFER_LIMIT:
            self.pauseReading()


@implementer(ITransport, IPushProducer)
@attrs.define(eq=False)
class Subscription:
    """An accepted SUBSCRIBE: the transport of the protocol reading the track.

    ``loseConnection()`` unsubscribes; ``pauseProducing()`` stops reading the
    track's streams (QUIC flow control then holds the publisher back).
    """

    session: MoqSession
    request_id: int
    namespace: Namespace
    name: bytes
    protocol: IProtocol
    alias: int | None = None
    largest: Location | None = None
    _queue: list[IncomingSubgroup] = attrs.field(factory=list)
    _delivered_group: int | None = None
    _paused: bool = False
    _pumping: bool = False
    _pump_again: bool = False
    _streams_seen: int = 0
    _done_count: int | None = None
    _done_reason: Failure | None = None
    _done_timer: IDelayedCall | None = None
    ended: bool = False

    # -- ITransport -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        raise RuntimeError("a subscription is read-only; publish a track to send")

    def writeSequence(self, data: Any) -> None:
        raise RuntimeError("a subscription is read-only; publish a track to send")

    def loseConnection(self) -> None:
        """Unsubscribe: the protocol gets ``connectionLost(Unsubscribed)``."""
        if self.ended:
            return
        self.session._unsubscribe(self)
        self._end(Failure(Unsubscribed("unsubscribed")))

    def getPeer(self) -> IAddress:
        return _SubscriptionAddress(self.namespace, self.name)  # type: ignore[return-value]

    def getHost(self) -> IAddress:
        return _SubscriptionAddress(self.namespace, self.name)  # type: ignore[return-value]

    # -- IPushProducer ----------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._queue:
            self._queue[0].pauseReading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- from the session ----------------------------------------------------------------

    def _attachStream(self, stream: IncomingSubgroup) -> None:
        if self.ended or (
            self._delivered_group is not None and stream.group_id < self._delivered_group
        ):
            stream.discard()
            return
        stream.subscription = self
        self._streams_seen += 1
        self._queue.append(stream)
        self._queue.sort(key=lambda s: s.group_id)
        self._pump()

    def _pump(self) -> None:
        """Deliver objects in group order, one ``dataReceived`` per object."""
        if self._pumping:
            # Called back from inside a delivery (resuming a stream hands over
            # its buffered data at once): the running loop must look again.
            self._pump_again = True
            return
        self._pumping = True
        try:
            self._pump_again = True
            while self._pump_again:
                self._pump_again = False
                self._pumpOnce()
            for waiting in self._queue[1:]:
                waiting._limitBuffer()
        finally:
            self._pumping = False
        self._maybeDone()

    def _pumpOnce(self) -> None:
        while self._queue and not self.ended:
            head = self._queue[0]
            self._delivered_group = head.group_id
            while head.pending and not self._paused and not self.ended:
                obj = head.pending.popleft()
                head.pending_bytes -= len(obj.payload)
                if obj.status == ObjectStatus.NORMAL:
                    try:
                        self.protocol.dataReceived(obj.payload)
                    except Exception:
                        _log.failure("{protocol} failed on an object", protocol=self.protocol)
                        self.session._unsubscribe(self)
                        self._end(Failure())
                elif obj.status == ObjectStatus.END_OF_TRACK:
                    self._end(Failure(TrackEnded(0, "end of track")))
            if self._paused:
                head.pauseReading()
                break
            if self.ended:
                break
            head.resumeReading()
            if head.pending:
                continue
            if not head.finished:
                break
            self._queue.pop(0)

    def _publishDone(self, code: int, stream_count: int, reason: str) -> None:
        if self.ended:
            return
        self._done_count = stream_count
        self._done_reason = Failure(TrackEnded(code, reason))
        self._maybeDone()
        if not self.ended and self._done_timer is None:
            self._done_timer = self.session._clock.callLater(
                PUBLISH_DONE_GRACE, self._doneGraceExpired
            )

    def _doneGraceExpired(self) -> None:
        """Streams PUBLISH_DONE counted never came: end. If they all came, their
        objects are still being read (a slow reader) and end the track when done."""
        self._done_timer = None
        assert self._done_count is not None and self._done_reason is not None
        if self._streams_seen < self._done_count:
            self._end(self._done_reason)

    def _maybeDone(self) -> None:
        if self.ended or self._done_reason is None or self._queue:
            return
        assert self._done_count is not None
        if self._streams_seen >= self._done_count:
            self._end(self._done_reason)

    def _end(self, reason: Failure) -> None:
        if self.ended:
            return
        self.ended = True
        if self._done_timer is not None and self._done_timer.active():
            self._done_timer.cancel()
        self._done_timer = None
        for stream in self._queue:
            if not stream.finished:
                stream.discard()
        self._queue.clear()
        self.session._subscriptionEnded(self)
        self.protocol.connectionLost(reason)
