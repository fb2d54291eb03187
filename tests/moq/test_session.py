"""MoQ sessions end to end in memory: setup, requests, publish and subscribe."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from pibridge.moq.draft14.control import ControlStreamParser, encode_message
from pibridge.moq.draft14.data import SubgroupWriter
from pibridge.moq.draft14.messages import (
    ClientSetup,
    ControlMessage,
    Fetch,
    FetchError,
    FilterType,
    GoAway,
    KeyValuePair,
    Location,
    Publish,
    PublishError,
    PublishNamespace,
    ServerSetup,
    SetupParameter,
    SubgroupHeader,
    Subscribe,
    SubscribeOk,
    TrackStatus,
    TrackStatusError,
)
from pibridge.moq.errors import SessionErrorCode, StreamResetCode, SubscribeErrorCode
from pibridge.moq.filters import AbsoluteStart, LargestObject
from pibridge.moq.publisher import Refusal, SubscribeRequest, TrackPublisher, TrackRegistry
from pibridge.moq.session import GoingAway, MoqSession, NamespaceAnnouncement, SessionState
from pibridge.moq.subscriber import SessionClosed, SubscribeRefused, TrackEnded, Unsubscribed
from tests.moq.memory import MemoryLink, MemoryStream

NS = ("pibridge", "3f1c")


class Recorder(Protocol):
    """A track protocol that records each object and how the track ended."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.objects.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.lost = reason


@attrs.define
class Pair:
    link: MemoryLink
    clock: MemoryReactorClock
    client: MoqSession
    server: MoqSession
    client_tracks: TrackRegistry
    server_tracks: TrackRegistry

    def flush(self) -> None:
        self.link.flush()


def make_pair(**server_options: Any) -> Pair:
    clock = MemoryReactorClock()
    client_tracks, server_tracks = TrackRegistry(), TrackRegistry()
    client = MoqSession(
        clock, is_client=True, tracks=client_tracks, path="/moq", authorization=b"tok"
    )
    server = MoqSession(clock, is_client=False, tracks=server_tracks, **server_options)
    link = MemoryLink()
    link.connect(client, server)
    return Pair(link, clock, client, server, client_tracks, server_tracks)


def result(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred[Any]) -> Failure:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results and isinstance(results[0], Failure), f"expected a failure, got {results}"
    return results[0]


def test_setup_negotiates_draft14_and_carries_path_token_and_implementation() -> None:
    pair = make_pair()
    assert pair.client.state is SessionState.ESTABLISHED
    assert pair.server.state is SessionState.ESTABLISHED
    assert pair.client.version == pair.server.version == 0xFF00000E
    assert pair.server.peer_path == "/moq"
    assert pair.server.peer_authorization == (b"tok",)
    assert pair.server.peer_implementation.startswith("pibridge/")
    assert pair.client.peer_implementation.startswith("pibridge/")
    assert result(pair.client.whenReady()) is pair.client


@pytest.mark.parametrize("publisher_side", ["server", "client"])
def test_subscriber_gets_every_object_in_order_including_earlier_ones(publisher_side: str) -> None:
    pair = make_pair()
    tracks = pair.server_tracks if publisher_side == "server" else pair.client_tracks
    subscriber = pair.client if publisher_side == "server" else pair.server
    track = tracks.add(TrackPublisher(NS, "stdout"))
    track.write(b"written before anyone subscribed")
    track.write(b"")
    recorder = Recorder()
    d = subscriber.subscribe(NS, "stdout", recorder, start=AbsoluteStart(0, 0))
    pair.flush()
    subscription = result(d)
    assert subscription.alias is not None
    for index in range(100):
        track.write(b"object %d" % index)
    pair.flush()
    assert recorder.objects == [b"written before anyone subscribed", b""] + [
        b"object %d" % index for index in range(100)
    ]


def test_new_group_opens_a_new_stream_and_late_subscribers_start_there() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    early = Recorder()
    pair.client.subscribe(NS, "stdout", early)
    track.write(b"epoch 0")
    pair.flush()
    assert track.startGroup() == 1
    track.write(b"epoch 1, first")
    late = Recorder()
    pair.flush()
    second = MoqSession(pair.clock, is_client=True)
    link = MemoryLink()
    link.connect(second, MoqSession(pair.clock, is_client=False, tracks=pair.server_tracks))
    d = second.subscribe(NS, "stdout", late, start=AbsoluteStart(1, 0))
    link.flush()
    track.write(b"epoch 1, second")
    pair.flush()
    link.flush()
    result(d)
    assert early.objects == [b"epoch 0", b"epoch 1, first", b"epoch 1, second"]
    assert late.objects == [b"epoch 1, first", b"epoch 1, second"]


def test_largest_object_filter_replays_the_current_group() -> None:
    """Relays subscribe upstream with LargestObject; earlier objects must not be lost."""
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    track.write(b"a")
    track.write(b"b")
    recorder = Recorder()
    pair.client.subscribe(NS, "stdout", recorder, start=LargestObject())
    pair.flush()
    track.write(b"c")
    pair.flush()
    assert recorder.objects == [b"a", b"b", b"c"]


def test_refused_and_unknown_tracks_get_subscribe_error() -> None:
    seen: list[SubscribeRequest] = []

    def refuse(request: SubscribeRequest) -> Refusal:
        seen.append(request)
        return Refusal(SubscribeErrorCode.UNAUTHORIZED, "not your session")

    pair = make_pair()
    pair.server_tracks.add(TrackPublisher(NS, "stdout", check_subscriber=refuse))
    recorder = Recorder()
    refused = pair.client.subscribe(NS, "stdout", recorder, authorization=b"who-am-i")
    unknown = pair.client.subscribe(NS, "nothing", Recorder())
    pair.flush()
    error = failure_of(refused).value
    assert isinstance(error, SubscribeRefused)
    assert error.code == SubscribeErrorCode.UNAUTHORIZED
    assert seen[0].authorization == (b"who-am-i",)
    missing = failure_of(unknown).value
    assert isinstance(missing, SubscribeRefused)
    assert missing.code == SubscribeErrorCode.TRACK_DOES_NOT_EXIST
    assert recorder.lost is None  # never connected
    assert pair.client.state is SessionState.ESTABLISHED


def test_track_end_reaches_the_subscriber_after_its_objects() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "control"))
    recorder = Recorder()
    pair.client.subscribe(NS, "control", recorder)
    pair.flush()
    track.write(b'{"type":"close"}')
    track.loseConnection()
    pair.flush()
    assert recorder.objects == [b'{"type":"close"}']
    assert recorder.lost is not None and recorder.lost.check(TrackEnded)


def test_unsubscribe_stops_delivery_and_aliases_are_never_reused() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    first = Recorder()
    d = pair.client.subscribe(NS, "stdout", first)
    pair.flush()
    subscription = result(d)
    track.write(b"one")
    pair.flush()
    subscription.loseConnection()
    pair.flush()
    assert first.lost is not None and first.lost.check(Unsubscribed)
    assert track.subscriberCount == 0
    track.write(b"two")
    second = Recorder()
    again = pair.client.subscribe(NS, "stdout", second, start=AbsoluteStart(0, 1))
    pair.flush()
    assert result(again).alias != subscription.alias
    assert first.objects == [b"one"]
    assert second.objects == [b"two"]


def test_namespaces_reach_the_callback_in_direct_mode() -> None:
    pair = make_pair()
    heard: list[NamespaceAnnouncement] = []
    published = pair.client.publishNamespace((*NS, "client"))
    pair.flush()
    assert result(published) is None
    ready = pair.server.subscribeNamespace(("pibridge",), heard.append)
    pair.flush()
    result(ready)
    assert [(a.namespace, a.active) for a in heard] == [((b"pibridge", b"3f1c", b"client"), True)]
    pair.client.publishNamespace(("pibridge", "other"))
    pair.client.publishNamespace(("elsewhere",))
    pair.flush()
    pair.client.publishNamespaceDone((*NS, "client"))
    pair.flush()
    assert [(a.namespace, a.active) for a in heard[1:]] == [
        ((b"pibridge", b"other"), True),
        ((b"pibridge", b"3f1c", b"client"), False),
    ]


def test_requests_wait_for_max_request_id_and_report_blocked() -> None:
    pair = make_pair(max_requests=2)
    first = pair.client.publishNamespace(("a",))
    second = pair.client.publishNamespace(("b",))
    third = pair.client.publishNamespace(("c",))
    pair.flush()
    result(first), result(second)
    assert not third.called
    assert pair.server.peer_blocked_at == 4
    pair.client.publishNamespaceDone(("a",))
    pair.flush()
    assert result(third) is None


def test_backpressure_pauses_the_track_producer_until_the_subscriber_reads() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    recorder = Recorder()
    d = pair.client.subscribe(NS, "stdout", recorder)
    pair.flush()
    subscription = result(d)

    @attrs.define
    class Producer:
        paused: int = 0
        resumed: int = 0

        def pauseProducing(self) -> None:
            self.paused += 1

        def resumeProducing(self) -> None:
            self.resumed += 1

        def stopProducing(self) -> None:
            pass

    from twisted.internet.interfaces import IPushProducer
    from zope.interface import implementer

    producer = implementer(IPushProducer)(Producer)()
    track.registerProducer(producer, True)
    subscription.pauseProducing()
    chunk = b"x" * 4096
    for _ in range(200):
        track.write(chunk)
        pair.flush()
    assert producer.paused == 1 and producer.resumed == 0
    subscription.resumeProducing()
    pair.flush()
    assert producer.resumed == 1
    assert recorder.objects == [chunk] * 200


def test_session_close_ends_subscriptions_and_pending_requests() -> None:
    pair = make_pair()
    pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    recorder = Recorder()
    pair.client.subscribe(NS, "stdout", recorder)
    pair.flush()
    pending = pair.client.publishNamespace(NS)
    pair.server.close(SessionErrorCode.NO_ERROR, "bye")
    pair.flush()
    assert recorder.lost is not None and recorder.lost.check(SessionClosed)
    assert failure_of(pending).check(SessionClosed)
    assert pair.client.state is SessionState.CLOSED
    closed = result(pair.client.whenClosed())
    assert isinstance(closed, SessionClosed)
    assert closed.reason == "bye"


def test_goaway_moves_both_ends_to_draining() -> None:
    pair = make_pair()
    pair.server.goAway(b"moqt://elsewhere:4443/")
    pair.flush()
    assert pair.server.state is SessionState.DRAINING
    assert pair.client.state is SessionState.DRAINING
    assert pair.client.goaway_uri == b"moqt://elsewhere:4443/"


# -- a scripted peer ------------------------------------------------------------------


class _ControlReader(Protocol):
    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer

    def dataReceived(self, data: bytes) -> None:
        self.peer.dataReceived(data)


class RawPeer:
    """A hand-driven endpoint: writes raw control bytes, records what comes back."""

    def __init__(self) -> None:
        self.parser = ControlStreamParser()
        self.received: list[ControlMessage] = []
        self.connection: Any = None
        self.stream: MemoryStream | None = None
        self.lost: Failure | None = None

    # IQuicConnectionHandler
    def connectionMade(self, connection: Any) -> None:
        self.connection = connection
        self.stream = connection.openStream(_ControlReader(self))

    def streamOpened(self, stream: Any) -> Any:
        return Protocol()

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason

    # control stream protocol
    def dataReceived(self, data: bytes) -> None:
        self.received += self.parser.feed(data)

    def send(self, *messages: ControlMessage) -> None:
        assert self.stream is not None
        for message in messages:
            self.stream.write(encode_message(message))

    def setup(self) -> None:
        self.send(ClientSetup((0xFF00000E,), (KeyValuePair(SetupParameter.MAX_REQUEST_ID, 100),)))


def raw_pair(**server_options: Any) -> tuple[MemoryLink, RawPeer, MoqSession]:
    clock = MemoryReactorClock()
    server = MoqSession(clock, is_client=False, **server_options)
    peer = RawPeer()
    link = MemoryLink()
    link.connect(peer, server)
    return link, peer, server


@pytest.mark.parametrize(
    ("script", "code"),
    [
        pytest.param([b"\x3f\x00\x00"], SessionErrorCode.PROTOCOL_VIOLATION, id="unknown-type"),
        pytest.param(
            [encode_message(PublishNamespace(0, (b"x",)))],
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="request-before-setup",
        ),
        pytest.param(
            [encode_message(ClientSetup((0xFF00000D,)))],
            SessionErrorCode.VERSION_NEGOTIATION_FAILED,
            id="no-common-version",
        ),
        pytest.param(
            [b"setup", encode_message(PublishNamespace(2, (b"x",)))],
            SessionErrorCode.INVALID_REQUEST_ID,
            id="skipped-request-id",
        ),
        pytest.param(
            [b"setup", encode_message(PublishNamespace(1, (b"x",)))],
            SessionErrorCode.INVALID_REQUEST_ID,
            id="server-parity",
        ),
        pytest.param(
            [b"setup", encode_message(GoAway()), encode_message(GoAway())],
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="second-goaway",
        ),
        pytest.param(
            [b"setup", encode_message(GoAway(b"moqt://x/"))],
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="goaway-uri-from-client",
        ),
        pytest.param(
            [b"setup", b"\x06\x00\x06\x00\x01\x01x\x00\x00"],
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="length-mismatch",
        ),
        pytest.param(
            [b"setup", encode_message(ServerSetup(0xFF00000E))],
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="server-setup-from-client",
        ),
    ],
)
def test_hostile_control_messages_close_with_the_drafts_code(
    script: list[bytes], code: SessionErrorCode
) -> None:
    link, peer, server = raw_pair()
    for step in script:
        if step == b"setup":
            peer.setup()
        else:
            assert peer.stream is not None
            peer.stream.write(step)
        link.flush()
    assert server.state is SessionState.CLOSED
    assert server.close_code == code
    assert link.server.close_code == code


def test_flood_past_max_request_id_is_too_many_requests() -> None:
    link, peer, server = raw_pair(max_requests=64)
    peer.setup()
    link.flush()
    limit = next(
        p.value for p in peer.received[0].parameters if p.type == SetupParameter.MAX_REQUEST_ID
    )
    assert limit >= 128  # at least 64 requests
    peer.send(*(PublishNamespace(2 * n, (b"ns%d" % n,)) for n in range(65)))
    link.flush()
    assert server.close_code == SessionErrorCode.TOO_MANY_REQUESTS


def test_subscribe_for_an_unknown_track_answers_and_keeps_the_session() -> None:
    link, peer, server = raw_pair()
    peer.setup()
    peer.send(Subscribe(0, (b"pibridge",), b"nope", FilterType.ABSOLUTE_START, Location(0, 0)))
    link.flush()
    assert server.state is SessionState.ESTABLISHED
    error = peer.received[-1]
    assert error.error_code == SubscribeErrorCode.TRACK_DOES_NOT_EXIST  # type: ignore[union-attr]


class ScriptedPublisher(RawPeer):
    """Answers a SUBSCRIBE with data first and SUBSCRIBE_OK afterwards, as relays may."""

    def __init__(self, alias: int) -> None:
        super().__init__()
        self.alias = alias

    def connectionMade(self, connection: Any) -> None:
        self.connection = connection

    def streamOpened(self, stream: Any) -> Any:
        self.stream = stream
        return _ControlReader(self)

    def dataReceived(self, data: bytes) -> None:
        for message in self.parser.feed(data):
            self.received.append(message)
            if isinstance(message, ClientSetup):
                self.send(ServerSetup(0xFF00000E, (KeyValuePair(2, 100),)))
            elif isinstance(message, Subscribe):
                data_stream = self.connection.openStream(Protocol(), unidirectional=True)
                writer = SubgroupWriter(SubgroupHeader(self.alias, 3))
                data_stream.write(writer.header_bytes())
                data_stream.write(writer.payload_bytes(b"early"))
                data_stream.write(writer.payload_bytes(b"bird"))
                self.pending = (message, data_stream, writer)

    def answer(self) -> None:
        message, data_stream, writer = self.pending
        self.send(SubscribeOk(message.request_id, self.alias))
        data_stream.write(writer.payload_bytes(b"after ok"))
        data_stream.loseConnection()


def test_data_before_subscribe_ok_is_held_until_the_alias_is_known() -> None:
    clock = MemoryReactorClock()
    client = MoqSession(clock, is_client=True)
    publisher = ScriptedPublisher(alias=7)
    link = MemoryLink()
    link.connect(client, publisher)
    recorder = Recorder()
    d = client.subscribe(("a",), "t", recorder)
    link.flush()
    assert not d.called
    publisher.answer()
    link.flush()
    assert result(d).alias == 7
    assert recorder.objects == [b"early", b"bird", b"after ok"]


def test_streams_for_an_alias_that_never_comes_are_dropped_in_time() -> None:
    clock = MemoryReactorClock()
    client = MoqSession(clock, is_client=True)
    publisher = ScriptedPublisher(alias=7)
    link = MemoryLink()
    link.connect(client, publisher)
    client.subscribe(("a",), "t", Recorder())
    link.flush()
    assert len(client._orphans) == 1
    stream = client._orphans[0]
    clock.advance(11)
    link.flush()
    assert client._orphans == []
    assert stream.discarded
    assert client.state is SessionState.ESTABLISHED


def test_reset_code_is_cancelled_for_unsubscribe() -> None:
    assert StreamResetCode.CANCELLED == 1


def test_requests_after_goaway_fail_and_goaway_timeout_closes() -> None:
    pair = make_pair()
    pair.server.goAway(b"", timeout=5.0)
    pair.flush()
    refused = pair.client.subscribe(NS, "stdout", Recorder())
    assert failure_of(refused).check(GoingAway)
    pair.clock.advance(5.0)
    pair.flush()
    assert pair.server.close_code == SessionErrorCode.GOAWAY_TIMEOUT
    assert pair.client.state is SessionState.CLOSED


def test_requests_outside_the_subset_are_refused_and_counted() -> None:
    link, peer, server = raw_pair()
    peer.setup()
    peer.send(Fetch(0, b"\x00\x01"), Publish(2, b"\x01\x01x"), TrackStatus(4, b""))
    link.flush()
    assert [type(m) for m in peer.received[1:]] == [FetchError, PublishError, TrackStatusError]
    assert all(m.error_code == 0x3 for m in peer.received[1:])  # type: ignore[union-attr]
    assert server.state is SessionState.ESTABLISHED
    peer.send(PublishNamespace(2, (b"x",)))  # 2 was used by PUBLISH
    link.flush()
    assert server.close_code == SessionErrorCode.INVALID_REQUEST_ID


def test_forward_zero_subscription_gets_no_objects() -> None:
    clock = MemoryReactorClock()
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(NS, "stdout"))
    server = MoqSession(clock, is_client=False, tracks=tracks)
    opened: list[Any] = []
    peer = RawPeer()
    peer.streamOpened = lambda stream: opened.append(stream) or Protocol()  # type: ignore[method-assign]
    link = MemoryLink()
    link.connect(peer, server)
    peer.setup()
    peer.send(
        Subscribe(
            0,
            (b"pibridge", b"3f1c"),
            b"stdout",
            FilterType.ABSOLUTE_START,
            Location(0, 0),
            forward=False,
        )
    )
    link.flush()
    track.write(b"not forwarded")
    link.flush()
    assert isinstance(peer.received[-1], SubscribeOk)
    assert opened == []


def test_groups_roll_over_by_size_and_late_subscribers_get_the_whole_epoch() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout", group_roll_over_bytes=100))
    epoch = track.startGroup(7)
    early = Recorder()
    pair.client.subscribe(NS, "stdout", early, start=AbsoluteStart(epoch, 0))
    pair.flush()
    payloads = [b"%02d" % i * 15 for i in range(10)]  # 30 bytes each: 3 per group
    for payload in payloads:
        track.write(payload)
    pair.flush()
    assert track.group_id == 10  # groups 7, 8, 9 and 10
    late = Recorder()
    other = MemoryLink()
    client = MoqSession(pair.clock, is_client=True)
    other.connect(client, MoqSession(pair.clock, is_client=False, tracks=pair.server_tracks))
    client.subscribe(NS, "stdout", late, start=AbsoluteStart(epoch, 0))
    other.flush()
    assert early.objects == payloads
    assert late.objects == payloads


def test_a_stopped_group_is_not_reopened() -> None:
    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    recorder = Recorder()
    d = pair.client.subscribe(NS, "stdout", recorder)
    pair.flush()
    subscription = result(d)
    track.write(b"one")
    pair.flush()
    subscription._queue[0].discard()  # STOP_SENDING the group 0 stream
    pair.flush()
    opened_before = len(pair.link.server.streams)
    track.write(b"two")
    pair.flush()
    assert len(pair.link.server.streams) == opened_before
    track.startGroup()
    track.write(b"three")
    pair.flush()
    assert recorder.objects == [b"one", b"three"]


@pytest.mark.allow_logged_failures
def test_a_failing_subscriber_hook_closes_only_its_session() -> None:
    def broken(request: SubscribeRequest) -> Refusal | None:
        raise RuntimeError("bug in the application")

    pair = make_pair()
    pair.server_tracks.add(TrackPublisher(NS, "stdout", check_subscriber=broken))
    d = pair.client.subscribe(NS, "stdout", Recorder())
    pair.flush()
    assert failure_of(d).check(SessionClosed)
    assert pair.server.close_code == SessionErrorCode.INTERNAL_ERROR


@pytest.mark.allow_logged_failures
def test_a_protocol_that_raises_is_unsubscribed() -> None:
    class Broken(Recorder):
        def dataReceived(self, data: bytes) -> None:
            raise ValueError("cannot handle this")

    pair = make_pair()
    track = pair.server_tracks.add(TrackPublisher(NS, "stdout"))
    broken = Broken()
    pair.client.subscribe(NS, "stdout", broken)
    pair.flush()
    track.write(b"boom")
    pair.flush()
    assert broken.lost is not None and broken.lost.check(ValueError)
    assert track.subscriberCount == 0
    assert pair.client.state is SessionState.ESTABLISHED
