"""Local tracks: a :class:`TrackPublisher` is the Twisted transport of one track.

``write(bytes)`` appends exactly one object to the current group (one group per
epoch, subgroup 0); every subscriber gets it on its own subgroup stream. The
publisher keeps the current group's objects (bounded) so a subscriber that
arrives late with ``AbsoluteStart {group, 0}`` still gets all of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IProducer,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.moq.draft14.data import SubgroupWriter
from pibridge.moq.draft14.messages import (
    Location,
    Namespace,
    SubgroupHeader,
    SubgroupObject,
    Subscribe,
)
from pibridge.moq.errors import PublishDoneCode, StreamResetCode, SubscribeErrorCode
from pibridge.moq.filters import AbsoluteRange, AbsoluteStart, LargestObject, start_of

if TYPE_CHECKING:
    from pibridge.moq.session import MoqSession

_log = Logger()

DEFAULT_KEPT_BYTES = 4 * 1024 * 1024
DEFAULT_GROUP_ROLL_OVER = 16 * 1024 * 1024


@attrs.frozen
class SubscribeRequest:
    """What the application sees of an incoming SUBSCRIBE, to accept or refuse it."""

    session: MoqSession
    namespace: Namespace
    track_name: bytes
    authorization: tuple[bytes, ...]
    message: Subscribe


@attrs.frozen
class Refusal:
    """Answer a SUBSCRIBE with SUBSCRIBE_ERROR ``code`` and ``reason``."""

    code: int = SubscribeErrorCode.UNAUTHORIZED
    reason: str = "not authorized"


SubscriberCheck = Callable[[SubscribeRequest], "Refusal | None"]


class _StreamTransport(Protocol):
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self, error_code: int = 0) -> None: ...
    def registerProducer(self, producer: Any, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...


class _TrackAddress:
    """The address a track publisher reports: the track it is."""

    def __init__(self, namespace: Namespace, name: bytes) -> None:
        self.namespace = namespace
        self.name = name

    def __repr__(self) -> str:
        return f"<track {b'/'.join(self.namespace)!r} {self.name!r}>"


def _to_bytes_namespace(value: Any) -> Namespace:
    return tuple(v.encode() if isinstance(v, str) else bytes(v) for v in value)


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


@implementer(ITransport, IConsumer, IPushProducer)
@attrs.define(eq=False)
class TrackPublisher:
    """One local track, written to like a transport; answers SUBSCRIBEs for it.

    ``check_subscriber`` decides per SUBSCRIBE: return ``None`` to accept or a
    :class:`Refusal` to answer SUBSCRIBE_ERROR.

    An *epoch* begins with :meth:`startGroup` and runs until the next one. The
    objects of the current epoch are kept (the oldest let go past
    ``max_kept_bytes``) so a late ``AbsoluteStart {epoch group, 0}`` subscriber
    gets them all. A group holds at most ``group_roll_over_bytes``: past that,
    the next object starts the next group of the same epoch (relays cap a
    group's size; moq-rs cuts a group at 32 MiB).
    """

    namespace: Namespace = attrs.field(converter=_to_bytes_namespace)
    name: bytes = attrs.field(converter=_to_bytes)
    check_subscriber: SubscriberCheck | None = None
    max_kept_bytes: int = DEFAULT_KEPT_BYTES
    group_roll_over_bytes: int | None = DEFAULT_GROUP_ROLL_OVER
    publisher_priority: int = 128
    group_id: int = 0
    epoch_group: int = 0
    _kept: deque[tuple[Location, bytes]] = attrs.field(factory=deque)
    _kept_bytes: int = 0
    _dropped: bool = False
    _next_object_id: int = 0
    _group_bytes: int = 0
    _largest: Location | None = None
    _deliveries: list[_Delivery] = attrs.field(factory=list)
    _paused: set[_Delivery] = attrs.field(factory=set)
    _producer: IProducer | None = None
    _producer_paused: bool = False
    ended: bool = False

    # -- ITransport ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append ``data`` as exactly one object of the current group."""
        if self.ended:
            raise RuntimeError(f"{self!r} has ended")
        data = bytes(data)
        limit = self.group_roll_over_bytes
        if limit is not None and self._next_object_id and self._group_bytes + len(data) > limit:
            self._beginGroup(self.group_id + 1)
        location = Location(self.group_id, self._next_object_id)
        self._next_object_id += 1
        self._group_bytes += len(data)
        self._kept.append((location, data))
        self._kept_bytes += len(data)
        while self._kept_bytes > self.max_kept_bytes and len(self._kept) > 1:
            self._kept_bytes -= len(self._kept.popleft()[1])
            self._dropped = True
        self._largest = location
        for delivery in list(self._deliveries):
            delivery.send(location.group, location.object, data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """End the track: finish every subgroup stream and send PUBLISH_DONE."""
        if self.ended:
            return
        self.ended = True
        for delivery in list(self._deliveries):
            delivery.finish(PublishDoneCode.TRACK_ENDED, "track ended")

    def abortConnection(self) -> None:
        self.loseConnection()

    def getPeer(self) -> IAddress:
        return _TrackAddress(self.namespace, self.name)  # type: ignore[return-value]

    def getHost(self) -> IAddress:
        return _TrackAddress(self.namespace, self.name)  # type: ignore[return-value]

    # -- groups -------------------------------------------------------------------

    def startGroup(self, group_id: int | None = None) -> int:
        """Begin a new epoch at ``group_id`` (default: the next group); return its id.

        Each subscriber's current subgroup stream ends with FIN; the first object
        of the new group opens a new stream. Objects kept for late subscribers
        are those of the new epoch only.
        """
        new_group = self.group_id + 1 if group_id is None else group_id
        if new_group < self.group_id or (new_group == self.group_id and self._next_object_id):
            raise ValueError(f"group {new_group} does not follow group {self.group_id}")
        self._kept.clear()
        self._kept_bytes = 0
        self._dropped = False
        self.epoch_group = new_group
        self._beginGroup(new_group)
        return new_group

    def _beginGroup(self, group_id: int) -> None:
        self.group_id = group_id
        self._next_object_id = 0
        self._group_bytes = 0
        for delivery in list(self._deliveries):
            delivery.groupStarted(group_id)

    @property
    def subscriberCount(self) -> int:
        return len(self._deliveries)

    # -- IConsumer ----------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"{self!r} already has a producer")
        if not streaming:
            raise ValueError("a track publisher takes streaming (push) producers only")
        self._producer = producer
        self._producer_paused = False
        self._updateProducer()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producer_paused = False

    # -- IPushProducer (so an application can stop a track) -------------------------

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- used by the session ----------------------------------------------------------

    def _subscribe(self, session: MoqSession, message: Subscribe, alias: int) -> _Delivery:
        """Start delivering to an accepted SUBSCRIBE; replays the kept objects it asks for."""
        start = start_of(message)
        end_group: int | None = None
        if isinstance(start, AbsoluteStart | AbsoluteRange):
            first = Location(start.group, start.object)
            if isinstance(start, AbsoluteRange):
                end_group = start.end_group
        elif isinstance(start, LargestObject):
            # Relays (moq-rs among them) subscribe upstream with LargestObject only
            # when their own subscriber arrives, and expect the group from its start;
            # starting after the largest object would lose what was written before.
            first = Location(self.epoch_group, 0)
        else:
            first = Location(self.group_id + 1, 0)
        kept_from = self._kept[0][0] if self._kept else Location(self.group_id, 0)
        if first < kept_from:
            if self._dropped:
                _log.info(
                    "{track}: subscriber asked for {first}, the oldest kept is {kept}",
                    track=self,
                    first=first,
                    kept=kept_from,
                )
            first = kept_from
        delivery = _Delivery(
            self, session, message.request_id, alias, first, end_group, forward=message.forward
        )
        self._deliveries.append(delivery)
        for location, payload in list(self._kept):
            delivery.send(location.group, location.object, payload)
        return delivery

    def _largestLocation(self) -> Location | None:
        return self._largest

    def _deliveryEnded(self, delivery: _Delivery) -> None:
        if delivery in self._deliveries:
            self._deliveries.remove(delivery)
        self._deliveryResumed(delivery)

    def _deliveryPaused(self, delivery: _Delivery) -> None:
        self._paused.add(delivery)
        self._updateProducer()

    def _deliveryResumed(self, delivery: _Delivery) -> None:
        self._paused.discard(delivery)
        self._updateProducer()

    def _updateProducer(self) -> None:
        producer = self._producer
        if producer is None:
            return
        if self._paused and not self._producer_paused:
            self._producer_paused = True
            IPushProducer(producer).pauseProducing()
        elif not self._paused and self._producer_paused:
            self._producer_paused = False
            IPushProducer(producer).resumeProducing()

    def __repr__(self) -> str:
        return f"<TrackPublisher {b'/'.join(self.namespace)!r} {self.name!r}>"


class _OutgoingSubgroup(TwistedProtocol):
    """The protocol on a subgroup stream we send; reports flow control upward."""

    def __init__(self, delivery: _Delivery) -> None:
        self.delivery = delivery

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.delivery.streamLost(self)

    def stopSendingReceived(self, error_code: int) -> None:
        self.delivery.streamLost(self)


@implementer(IPushProducer)
@attrs.define(eq=False)
class _Delivery:
    """One subscription to a local track: its streams, start and stream count."""

    track: TrackPublisher
    session: MoqSession
    request_id: int
    alias: int
    start: Location
    end_group: int | None
    forward: bool = True
    stream_count: int = 0
    _stream: _StreamTransport | None = None
    _protocol: _OutgoingSubgroup | None = None
    _writer: SubgroupWriter | None = None
    _stream_group: int | None = None
    _stopped_group: int | None = None
    done: bool = False

    def send(self, group_id: int, object_id: int, payload: bytes) -> None:
        if self.done or not self.forward:
            return
        if Location(group_id, object_id) < self.start:
            return
        if self.end_group is not None and group_id > self.end_group:
            return
        if group_id == self._stopped_group:
            return  # the subscriber stopped this group's stream: skip the rest of it
        if self._stream is None or self._stream_group != group_id:
            self._closeStream()
            self._openStream(group_id)
        assert self._stream is not None and self._writer is not None
        self._stream.write(self._writer.object_bytes(SubgroupObject(object_id, payload)))

    def groupStarted(self, group_id: int) -> None:
        self._closeStream()
        if self.end_group is not None and group_id > self.end_group:
            self.finish(PublishDoneCode.SUBSCRIPTION_ENDED, "end group reached")

    def finish(self, code: int, reason: str) -> None:
        """End cleanly: FIN the open stream, then tell the subscriber with PUBLISH_DONE."""
        if self.done:
            return
        self._closeStream()
        self.done = True
        self.track._deliveryEnded(self)
        self.session._publishDone(self, code, reason)

    def cancel(self, error_code: int = StreamResetCode.CANCELLED) -> None:
        """The subscriber went away (UNSUBSCRIBE or session end): reset the stream."""
        if self.done:
            return
        self.done = True
        stream = self._stream
        self._forgetStream()
        if stream is not None:
            stream.abortConnection(error_code)
        self.track._deliveryEnded(self)

    def streamLost(self, protocol: _OutgoingSubgroup) -> None:
        if protocol is self._protocol:
            # STOP_SENDING or a reset: that group is no longer wanted on this stream.
            self._stopped_group = self._stream_group
            self._forgetStream()
        self.track._deliveryResumed(self)

    # IPushProducer: the stream tells us when it is full.
    def pauseProducing(self) -> None:
        self.track._deliveryPaused(self)

    def resumeProducing(self) -> None:
        self.track._deliveryResumed(self)

    def stopProducing(self) -> None:
        self.track._deliveryResumed(self)

    def _openStream(self, group_id: int) -> None:
        header = SubgroupHeader(
            track_alias=self.alias,
            group_id=group_id,
            subgroup_id=0,
            publisher_priority=self.track.publisher_priority,
        )
        protocol = _OutgoingSubgroup(self)
        stream = self.session._openDataStream(protocol)
        self._protocol = protocol
        self._stream = stream
        self._stream_group = group_id
        self._writer = SubgroupWriter(header)
        self.stream_count += 1
        stream.registerProducer(self, True)
        stream.write(self._writer.header_bytes())

    def _closeStream(self) -> None:
        stream = self._stream
        self._forgetStream()
        if stream is not None:
            stream.unregisterProducer()
            stream.loseConnection()
            self.track._deliveryResumed(self)

    def _forgetStream(self) -> None:
        self._stream = None
        self._protocol = None
        self._writer = None
        self._stream_group = None


@attrs.define(eq=False)
class TrackRegistry:
    """The local tracks a session can serve, by (namespace, track name)."""

    _tracks: dict[tuple[Namespace, bytes], TrackPublisher] = attrs.field(factory=dict)

    def add(self, track: TrackPublisher) -> TrackPublisher:
        key = (track.namespace, track.name)
        if key in self._tracks and not self._tracks[key].ended:
            raise ValueError(f"{track!r} is already published")
        self._tracks[key] = track
        return track

    def remove(self, track: TrackPublisher) -> None:
        if self._tracks.get((track.namespace, track.name)) is track:
            del self._tracks[(track.namespace, track.name)]

    def get(self, namespace: Namespace, name: bytes) -> TrackPublisher | None:
        track = self._tracks.get((namespace, name))
        return None if track is None or track.ended else track

    def __iter__(self) -> Any:
        return iter(list(self._tracks.values()))
