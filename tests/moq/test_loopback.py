"""MoQ over real QUIC on loopback: pibridge to pibridge, and through the moq-rs relay."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moq
import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.moq import (
    AbsoluteStart,
    MoqSession,
    NamespaceAnnouncement,
    SessionClosed,
    SessionErrorCode,
    SessionState,
    SubscribeErrorCode,
    SubscribeRefused,
    TrackPublisher,
    TrackRegistry,
)
from pibridge.moq.draft14.control import ControlStreamParser, encode_message
from pibridge.moq.draft14.messages import (
    ClientSetup,
    ControlMessage,
    KeyValuePair,
    PublishNamespace,
    SetupParameter,
)
from pibridge.moq.endpoint import ALPN, MoqServerService, connectMoq, listenMoq
from pibridge.quic import (
    IQuicConnectionHandler,
    PinnedFingerprintVerification,
    QuicSettings,
    TlsIdentity,
    connectQuic,
    load_or_create_identity,
)
from tests.moq.relay import RustRelay

WAIT = 10.0


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor as installed

    return installed


@pytest.fixture
def identity(tmp_path: Path) -> TlsIdentity:
    return load_or_create_identity(tmp_path / "server-state")


@pytest.fixture(scope="module")
def relay() -> Iterator[RustRelay]:
    rust = RustRelay()
    rust.start()
    yield rust
    rust.stop()


def pin(tmp_path: Path, fingerprint: str) -> PinnedFingerprintVerification:
    return PinnedFingerprintVerification(
        known_hosts=tmp_path / "known_hosts", expected_fingerprint=fingerprint
    )


class Recorder(Protocol):
    """Records each object; ``waitFor(n)`` fires once ``n`` objects have arrived."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []
        self.lost: Deferred[BaseException] = Deferred()
        self._waiters: list[tuple[int, Deferred[list[bytes]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.objects.append(data)
        for waiter in [w for w in self._waiters if len(self.objects) >= w[0]]:
            self._waiters.remove(waiter)
            waiter[1].callback(self.objects)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost.callback(reason.value)

    def waitFor(self, count: int, reactor: Any, timeout: float = WAIT) -> Deferred[list[bytes]]:
        d: Deferred[list[bytes]] = Deferred()
        if len(self.objects) >= count:
            d.callback(self.objects)
        else:
            self._waiters.append((count, d))
        return d.addTimeout(timeout, reactor)


class Sessions:
    """Collects the server's sessions as they are set up."""

    def __init__(self) -> None:
        self.sessions: list[MoqSession] = []
        self._waiters: list[Deferred[MoqSession]] = []

    def __call__(self, session: MoqSession) -> None:
        self.sessions.append(session)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(session)

    def next(self, reactor: Any) -> Deferred[MoqSession]:
        d: Deferred[MoqSession] = Deferred()
        self._waiters.append(d)
        return d.addTimeout(WAIT, reactor)


def announcements(session_or_none: Any = None) -> tuple[list[NamespaceAnnouncement], Any]:
    seen: list[NamespaceAnnouncement] = []
    waiters: list[Deferred[NamespaceAnnouncement]] = []

    def callback(announcement: NamespaceAnnouncement) -> None:
        seen.append(announcement)
        current, waiters[:] = list(waiters), []
        for waiter in current:
            waiter.callback(announcement)

    def wait(reactor: Any) -> Deferred[NamespaceAnnouncement]:
        d: Deferred[NamespaceAnnouncement] = Deferred()
        if seen:
            d.callback(seen[-1])
        else:
            waiters.append(d)
        return d.addTimeout(WAIT, reactor)

    callback.wait = wait  # type: ignore[attr-defined]
    return seen, callback


# -- direct mode ----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_direct_mode_both_directions_with_discovery(
    reactor: Any, identity: TlsIdentity, tmp_path: Path
) -> Any:
    sid = "6c0e9a3e-0000-4000-8000-000000000001"
    bot_tracks = TrackRegistry()
    stdout = bot_tracks.add(TrackPublisher(("pibridge", sid), "stdout"))
    sessions = Sessions()
    port = listenMoq(
        reactor, 0, identity, tracks=bot_tracks, on_session=sessions, interface="127.0.0.1"
    )
    try:
        client_tracks = TrackRegistry()
        stdin = client_tracks.add(TrackPublisher(("pibridge", sid, "client"), "stdin"))
        next_session = sessions.next(reactor)
        client = yield connectMoq(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            verification=pin(tmp_path, identity.fingerprint.hex),
            tracks=client_tracks,
            path="/pibridge",
        )
        bot = yield next_session
        assert bot.peer_path == "/pibridge"

        _seen, callback = announcements()
        bot.subscribeNamespace(("pibridge",), callback)
        yield client.publishNamespace(("pibridge", sid, "client"))
        announced = yield callback.wait(reactor)  # type: ignore[attr-defined]
        assert announced.namespace == (b"pibridge", sid.encode(), b"client")

        stdout.write(b"\x1b[2Jbefore attach")
        output = Recorder()
        yield client.subscribe(("pibridge", sid), "stdout", output, start=AbsoluteStart(0, 0))
        keys = Recorder()
        yield bot.subscribe(announced.namespace, "stdin", keys, start=AbsoluteStart(0, 0))
        for index in range(50):
            stdout.write(b"line %d\r\n" % index)
            stdin.write(b"k%d" % index)
        got = yield output.waitFor(51, reactor)
        assert got == [b"\x1b[2Jbefore attach"] + [b"line %d\r\n" % i for i in range(50)]
        typed = yield keys.waitFor(50, reactor)
        assert typed == [b"k%d" % i for i in range(50)]
        client.close()
        yield client.whenClosed()
    finally:
        yield port.stopListening()


# -- through the Rust relay ---------------------------------------------------------------------


async def _rust_publish(relay: RustRelay, path: str, count: int) -> None:
    async with moq.Client(relay.url, tls_verify=False, reconnect=False) as client:
        broadcast = client.create_broadcast(path)
        track = broadcast.publish_track("stdout")
        broadcast.announce()
        await asyncio.wait_for(track.used(), WAIT)
        group = track.append_group()
        for index in range(count):
            group.write_frame(b"rust object %d" % index)
            await asyncio.sleep(0.002)
        group.finish()
        await asyncio.sleep(1.0)  # keep the session up while the relay forwards


async def _rust_read(relay: RustRelay, path: str, count: int) -> list[bytes]:
    async with moq.Client(relay.url, tls_verify=False, reconnect=False) as client:
        broadcast = await asyncio.wait_for(client.announced_broadcast(path), WAIT)
        track = await broadcast.subscribe_track("stdout")
        got: list[bytes] = []

        async def read() -> None:
            async for group in track:
                async for frame in group:
                    got.append(bytes(frame.payload))
                    if len(got) >= count:
                        return

        await asyncio.wait_for(read(), WAIT)
        return got


@pytest_twisted.inlineCallbacks
def test_pibridge_subscribes_to_a_track_published_by_the_rust_stack(
    reactor: Any, relay: RustRelay, tmp_path: Path
) -> Any:
    _seen, callback = announcements()
    session = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=pin(tmp_path, relay.fingerprint)
    )
    # moq-rs relays announcements without answering SUBSCRIBE_NAMESPACE.
    session.subscribeNamespace(("pibridge",), callback).addErrback(lambda _: None)
    published = relay.deferred(reactor, _rust_publish(relay, "pibridge/rust-pub", 200))
    announced = yield callback.wait(reactor)  # type: ignore[attr-defined]
    assert announced.namespace == (b"pibridge", b"rust-pub")
    recorder = Recorder()
    yield session.subscribe(announced.namespace, "stdout", recorder, start=AbsoluteStart(0, 0))
    got = yield recorder.waitFor(200, reactor)
    assert got == [b"rust object %d" % i for i in range(200)]
    yield published
    session.close()


@pytest_twisted.inlineCallbacks
def test_pibridge_publishes_through_the_relay_including_objects_written_before(
    reactor: Any, relay: RustRelay, tmp_path: Path
) -> Any:
    verification = pin(tmp_path, relay.fingerprint)
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("pibridge", "via-relay"), "stdout"))
    publisher = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=verification, tracks=tracks
    )
    yield publisher.publishNamespace(("pibridge", "via-relay"))
    for index in range(5):
        track.write(b"early %d" % index)
    subscriber = yield connectMoq(reactor, "127.0.0.1", relay.port, verification=verification)
    recorder = Recorder()
    yield subscriber.subscribe(
        ("pibridge", "via-relay"), "stdout", recorder, start=AbsoluteStart(0, 0)
    )
    for index in range(300):
        track.write(b"object %d" % index)
    got = yield recorder.waitFor(305, reactor)
    assert got == [b"early %d" % i for i in range(5)] + [b"object %d" % i for i in range(300)]

    # A new epoch is a new group, and its objects follow in order.
    track.startGroup()
    track.write(b"epoch 1")
    got = yield recorder.waitFor(306, reactor)
    assert got[-1] == b"epoch 1"

    # A Rust client subscribes through the relay to the same pibridge track.
    rust = relay.deferred(reactor, _rust_read(relay, "pibridge/via-relay", 2))
    track.write(b"for the rust client")
    got = yield rust
    assert got == [b"epoch 1", b"for the rust client"]
    subscriber.close()
    publisher.close()


# -- a hostile peer -------------------------------------------------------------------------------


class _ControlBytes(Protocol):
    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer

    def dataReceived(self, data: bytes) -> None:
        self.peer.received += self.peer.parser.feed(data)
        waiters, self.peer.waiters = self.peer.waiters, []
        for waiter in waiters:
            waiter.callback(self.peer.received)


@implementer(IQuicConnectionHandler)
class HostilePeer:
    """Raw QUIC with ALPN moq-00 that writes whatever control bytes it is told to."""

    def __init__(self) -> None:
        self.parser = ControlStreamParser()
        self.received: list[ControlMessage] = []
        self.waiters: list[Deferred[list[ControlMessage]]] = []
        self.lost: Deferred[Any] = Deferred()
        self.stream: Any = None

    def connectionMade(self, connection: Any) -> None:
        self.stream = connection.openStream(_ControlBytes(self))

    def streamOpened(self, stream: Any) -> Any:
        return Protocol()

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(reason.value)

    def send(self, data: bytes) -> None:
        self.stream.write(data)

    def reply(self, reactor: Any) -> Deferred[list[ControlMessage]]:
        d: Deferred[list[ControlMessage]] = Deferred()
        self.waiters.append(d)
        return d.addTimeout(WAIT, reactor)


SETUP = encode_message(
    ClientSetup((0xFF00000E,), (KeyValuePair(SetupParameter.MAX_REQUEST_ID, 10),))
)


@pytest.mark.parametrize(
    ("attack", "code"),
    [
        pytest.param(
            SETUP + b"\x3e\x00\x01\x00", SessionErrorCode.PROTOCOL_VIOLATION, id="unknown"
        ),
        pytest.param(
            SETUP + b"\x03\x00\x03\x00\x00\x00", SessionErrorCode.PROTOCOL_VIOLATION, id="malformed"
        ),
        pytest.param(
            SETUP
            + b"".join(encode_message(PublishNamespace(2 * n, (b"f%d" % n,))) for n in range(101)),
            SessionErrorCode.TOO_MANY_REQUESTS,
            id="flood",
        ),
    ],
)
@pytest_twisted.inlineCallbacks
def test_hostile_peer_is_closed_with_the_drafts_code_while_others_are_served(
    reactor: Any, identity: TlsIdentity, tmp_path: Path, attack: bytes, code: int
) -> Any:
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("pibridge", "s"), "stdout"))
    port = listenMoq(reactor, 0, identity, tracks=tracks, interface="127.0.0.1")
    verification = pin(tmp_path, identity.fingerprint.hex)
    try:
        good = yield connectMoq(
            reactor, "127.0.0.1", port.getHost().port, verification=verification
        )
        recorder = Recorder()
        yield good.subscribe(("pibridge", "s"), "stdout", recorder)
        peer = HostilePeer()
        yield connectQuic(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            peer,
            verification=verification,
            settings=QuicSettings(alpn_protocols=(ALPN,)),
        )
        peer.send(attack)
        closed = yield peer.lost.addTimeout(WAIT, reactor)
        assert closed.error_code == code
        track.write(b"still serving")
        got = yield recorder.waitFor(1, reactor)
        assert got == [b"still serving"]
        good.close()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_hostile_subscribe_for_an_unknown_track_gets_subscribe_error(
    reactor: Any, identity: TlsIdentity, tmp_path: Path
) -> Any:
    port = listenMoq(reactor, 0, identity, interface="127.0.0.1")
    try:
        session = yield connectMoq(
            reactor,
            "127.0.0.1",
            port.getHost().port,
            verification=pin(tmp_path, identity.fingerprint.hex),
        )
        with pytest.raises(SubscribeRefused) as refused:
            yield session.subscribe(("pibridge", "nobody"), "stdout", Recorder())
        assert refused.value.code == SubscribeErrorCode.TRACK_DOES_NOT_EXIST
        assert session.state is SessionState.ESTABLISHED
        session.close()
    finally:
        yield port.stopListening()


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_an_epoch_larger_than_the_relays_group_limit_arrives_whole(
    reactor: Any, relay: RustRelay, tmp_path: Path
) -> Any:
    """moq-rs cuts a group at 32 MiB; the publisher rolls groups over before that."""
    verification = pin(tmp_path, relay.fingerprint)
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("pibridge", "big"), "stdout"))
    publisher = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=verification, tracks=tracks
    )
    yield publisher.publishNamespace(("pibridge", "big"))
    subscriber = yield connectMoq(reactor, "127.0.0.1", relay.port, verification=verification)
    recorder = Recorder()
    yield subscriber.subscribe(("pibridge", "big"), "stdout", recorder, start=AbsoluteStart(0, 0))
    count = 2100  # 16 KiB each: 33 MiB in one epoch
    flood = Flood(track, count)
    flood.start(reactor)
    got = yield recorder.waitFor(count, reactor, timeout=90)
    assert len(got) == count
    assert all(payload == b"%06d" % index * 2731 for index, payload in enumerate(got[:count]))
    assert track.group_id >= 2
    subscriber.close()
    publisher.close()


@implementer(IPushProducer)
class Flood:
    """Writes numbered 16 KiB objects as fast as the track's streams accept them."""

    def __init__(self, track: TrackPublisher, count: int) -> None:
        self.track = track
        self.count = count
        self.next = 0
        self.paused = False
        self.reactor: Any = None

    def start(self, reactor: Any) -> None:
        self.reactor = reactor
        self.track.registerProducer(self, True)
        reactor.callLater(0, self.pump)

    def pump(self) -> None:
        budget = 32
        while self.next < self.count and not self.paused and budget:
            self.track.write(b"%06d" % self.next * 2731)
            self.next += 1
            budget -= 1
        if self.next < self.count and not self.paused:
            self.reactor.callLater(0, self.pump)
        elif self.next >= self.count:
            self.track.unregisterProducer()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.reactor.callLater(0, self.pump)

    def stopProducing(self) -> None:
        self.count = 0


@pytest_twisted.inlineCallbacks
def test_server_service_serves_while_running_and_closes_sessions_on_stop(
    reactor: Any, identity: TlsIdentity, tmp_path: Path
) -> Any:
    tracks = TrackRegistry()
    track = tracks.add(TrackPublisher(("pibridge", "svc"), "control"))
    service = MoqServerService(reactor, 0, identity, tracks=tracks, interface="127.0.0.1")
    service.startService()
    assert service.listeningPort is not None
    session = yield connectMoq(
        reactor,
        "127.0.0.1",
        service.listeningPort.getHost().port,
        verification=pin(tmp_path, identity.fingerprint.hex),
    )
    recorder = Recorder()
    yield session.subscribe(("pibridge", "svc"), "control", recorder)
    track.write(b'{"type":"ping"}')
    got = yield recorder.waitFor(1, reactor)
    assert got == [b'{"type":"ping"}']
    yield service.stopService()
    closed = yield session.whenClosed().addTimeout(WAIT, reactor)
    assert isinstance(closed, SessionClosed)
    lost = yield recorder.lost.addTimeout(WAIT, reactor)
    assert isinstance(lost, SessionClosed)
