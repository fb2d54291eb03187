"""A relay, or anyone on it, is not trusted: it sees only sealed bytes and cannot type.

A third party on the relay subscribes to a live session's five tracks and
records what it gets; it then tries to get input into the session: a forged
client namespace with its own key and a bad token, the captured sealed open
replayed, the captured stdin objects replayed. The program logs every byte of
input it reads, so anything foreign would show there.
"""

# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import sys
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol

from pibridge.attach.moq_link import new_epoch
from pibridge.bot.server import bot_namespace, client_namespace
from pibridge.moq.endpoint import connectMoq
from pibridge.moq.filters import AbsoluteStart
from pibridge.moq.publisher import TrackPublisher, TrackRegistry
from pibridge.moq.session import MoqSession
from tests.relay.harness import (
    FixedRelay,
    SealedClient,
    attach_through,
    eventually,
    open_request,
    pin,
    start_relay_bot,
)

TYPED = b"typed-plaintext-kumquat"
SHOWN = b"shown-plaintext-quince"


def input_logger(log: Path) -> tuple[str, ...]:
    """Logs every byte of input it reads (no terminal echo), answers each line."""
    return (
        sys.executable,
        "-c",
        "import os, sys, termios\n"
        "attributes = termios.tcgetattr(0)\n"
        "attributes[3] &= ~termios.ECHO\n"
        "termios.tcsetattr(0, termios.TCSANOW, attributes)\n"
        f"log = open({str(log)!r}, 'ab', buffering=0)\n"
        "os.write(1, b'ready\\r\\n')\n"
        "while True:\n"
        "    data = os.read(0, 4096)\n"
        "    if not data: break\n"
        "    log.write(data)\n"
        "    if b'\\r' in data or b'\\n' in data:\n"
        f"        os.write(1, {SHOWN!r} + b' ' + data.strip() + b'\\r\\n')\n",
    )


class Tape(Protocol):
    """Keeps every object of one track."""

    def __init__(self) -> None:
        self.objects: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.objects.append(data)


@attrs.define(eq=False)
class Eavesdropper:
    """A third party on the relay, subscribed to one session's tracks from the start."""

    moq: MoqSession
    tapes: dict[tuple[str, str], Tape] = attrs.field(factory=dict)

    @defer.inlineCallbacks
    def listen(self, session_id: str) -> Any:
        for side, namespace, tracks in (
            ("bot", bot_namespace(session_id), ("control", "stdout")),
            ("client", client_namespace(session_id), ("control", "stdin", "resize")),
        ):
            for track in tracks:
                tape = self.tapes[(side, track)] = Tape()
                yield self.moq.subscribe(namespace, track, tape, start=AbsoluteStart(0, 0))

    def everything(self) -> list[bytes]:
        return [payload for tape in self.tapes.values() for payload in tape.objects]


@attrs.define(eq=False)
class Forger:
    """Publishes a client namespace of its own making and writes raw objects on it."""

    moq: MoqSession
    tracks: dict[str, TrackPublisher]

    def write(self, track: str, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.tracks[track].write(payload)


@defer.inlineCallbacks
def forge(relay: FixedRelay, tmp: Path, session_id: str) -> Any:
    registry = TrackRegistry()
    tracks = {}
    for name in ("control", "stdin", "resize"):
        track = TrackPublisher(client_namespace(session_id), name)
        track.startGroup(new_epoch())
        tracks[name] = registry.add(track)
    moq = yield connectMoq(
        reactor, "127.0.0.1", relay.port, verification=pin(relay, tmp, "forger"), tracks=registry
    )
    # moq-rs answers PUBLISH_NAMESPACE; waiting for it puts the forgery in place.
    yield moq.publishNamespace(client_namespace(session_id))
    return Forger(moq, tracks)


@defer.inlineCallbacks
def typed_and_shown(client: SealedClient, line: bytes) -> Any:
    assert client.link is not None
    client.link.send_input(line + b"\r")
    yield client.until(lambda c: SHOWN + b" " + line in c.output)


@pytest_twisted.inlineCallbacks
def test_a_third_party_on_the_relay_sees_only_sealed_bytes(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    bot = start_relay_bot(relay, tmp_path, input_logger(tmp_path / "input.log"))
    spy = None
    client = None
    try:
        yield bot.connected()
        token = bot.token()
        request = open_request(token)
        client = yield attach_through(relay, tmp_path, bot.public_key, request)
        yield client.until(lambda c: b"ready" in c.output)
        spy_moq = yield connectMoq(
            reactor, "127.0.0.1", relay.port, verification=pin(relay, tmp_path, "spy")
        )
        spy = Eavesdropper(spy_moq)
        yield spy.listen(request.session_id)
        yield typed_and_shown(client, TYPED)
        client.link.send_resize(100, 30)
        # Everything the client sent and got so far reaches the third party too.
        sent_control = 1
        yield eventually(
            lambda: (
                len(spy.tapes[("bot", "stdout")].objects) >= client.output_objects
                and len(spy.tapes[("bot", "control")].objects) >= len(client.controls)
                and len(spy.tapes[("client", "control")].objects) >= sent_control
                and len(spy.tapes[("client", "stdin")].objects) >= 1
                and len(spy.tapes[("client", "resize")].objects) >= 1
            )
        )
        assert TYPED in (tmp_path / "input.log").read_bytes()
        for payload in spy.everything():
            for plaintext in (TYPED, SHOWN, b"ready", token.encode(), b'"open"', b"resize"):
                assert plaintext not in payload
    finally:
        if spy is not None:
            spy.moq.close()
        if client is not None:
            client.leave()
        yield bot.stop()


FOREIGN = b"foreign-input-damson"


@pytest.mark.parametrize("token", ["", "not-a-token"])
@pytest_twisted.inlineCallbacks
def test_a_forged_client_namespace_with_its_own_key_cannot_type(
    relay: FixedRelay, tmp_path: Path, token: str
) -> Generator[Any, Any, None]:
    log = tmp_path / "input.log"
    bot = start_relay_bot(relay, tmp_path, input_logger(log))
    clients: list[SealedClient] = []
    try:
        yield bot.connected()
        request = open_request(bot.token())
        client = yield attach_through(relay, tmp_path, bot.public_key, request)
        clients.append(client)
        yield client.until(lambda c: b"ready" in c.output)
        yield typed_and_shown(client, b"before")

        # Same session, sealed properly to the bot under the forger's own key, no good token.
        forged_request = open_request(token, session_id=request.session_id)
        forger = yield attach_through(relay, tmp_path, bot.public_key, forged_request)
        clients.append(forger)
        forger.link.send_input(FOREIGN + b"\r")
        # And a session of its own, refused: the forger is told so, and nothing runs.
        own = yield attach_through(relay, tmp_path, bot.public_key, open_request(token))
        clients.append(own)
        own.link.send_input(FOREIGN + b"\r")
        yield own.until(lambda c: c.close is not None)
        assert own.close.reason == "refused"
        assert set(bot.bot.sessions) == {request.session_id}

        yield typed_and_shown(client, b"after")
        assert log.read_bytes() == b"before\nafter\n"
        assert FOREIGN not in client.output
        assert not client.lost
        # The forger reads nothing of the session it tried to join.
        assert forger.output == b"" and forger.controls == []
    finally:
        for each in clients:
            each.leave()
        yield bot.stop()


@pytest_twisted.inlineCallbacks
def test_replayed_open_and_stdin_objects_inject_nothing(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    log = tmp_path / "input.log"
    bot = start_relay_bot(relay, tmp_path, input_logger(log))
    clients: list[SealedClient] = []
    forgers: list[Forger] = []
    spy = None
    try:
        yield bot.connected()
        token = bot.token()
        request = open_request(token)
        client = yield attach_through(relay, tmp_path, bot.public_key, request)
        clients.append(client)
        spy_moq = yield connectMoq(
            reactor, "127.0.0.1", relay.port, verification=pin(relay, tmp_path, "spy")
        )
        yield client.until(lambda c: b"ready" in c.output)
        spy = Eavesdropper(spy_moq)
        yield spy.listen(request.session_id)
        yield typed_and_shown(client, b"before")
        yield eventually(
            lambda: (
                len(spy.tapes[("client", "control")].objects) >= 1
                and len(spy.tapes[("client", "stdin")].objects) >= 1
            )
        )
        captured_control = list(spy.tapes[("client", "control")].objects)
        captured_stdin = list(spy.tapes[("client", "stdin")].objects)

        # Replayed under a session id of the replayer's choosing: refused as a replay.
        elsewhere = yield forge(relay, tmp_path, str(uuid.uuid4()))
        forgers.append(elsewhere)
        elsewhere.write("control", captured_control)
        elsewhere.write("stdin", captured_stdin)
        yield eventually(lambda: bot.bot.refusals.get("replayed_open", 0) >= 1)

        # Replayed into the live session's own namespace while the client is attached.
        alongside = yield forge(relay, tmp_path, request.session_id)
        forgers.append(alongside)
        alongside.write("control", captured_control)
        alongside.write("stdin", captured_stdin)
        yield typed_and_shown(client, b"during")
        alongside.moq.close()

        # The client drops; while the program waits for it, the open is replayed again.
        client.leave()
        yield eventually(
            lambda: (
                not any(
                    a.session_id == request.session_id and not a.ended for a in bot.bot.attachments
                )
            )
        )
        assert request.session_id in bot.bot.sessions
        later = yield forge(relay, tmp_path, request.session_id)
        forgers.append(later)
        later.write("control", captured_control)
        later.write("stdin", captured_stdin)
        yield eventually(lambda: bot.bot.refusals.get("replayed_open", 0) >= 2)
        later.moq.close()

        # The real client comes back under a fresh key and carries on.
        again = yield attach_through(
            relay,
            tmp_path,
            bot.public_key,
            open_request(token, session_id=request.session_id, resume_offset=len(client.output)),
        )
        clients.append(again)
        yield typed_and_shown(again, b"after")
        assert log.read_bytes() == b"before\nduring\nafter\n"
    finally:
        for forger in forgers:
            forger.moq.close()
        if spy is not None:
            spy.moq.close()
        for each in clients:
            each.leave()
        yield bot.stop()


@pytest_twisted.inlineCallbacks
def test_objects_the_relay_replays_or_alters_on_a_live_subscription_are_dropped(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    """The relay itself is the attacker here: it hands the bot's own stdin
    subscription copies of objects it already delivered, and altered ones."""
    log = tmp_path / "input.log"
    bot = start_relay_bot(relay, tmp_path, input_logger(log))
    client = None
    spy = None
    try:
        yield bot.connected()
        request = open_request(bot.token())
        client = yield attach_through(relay, tmp_path, bot.public_key, request)
        yield client.until(lambda c: b"ready" in c.output)
        spy_moq = yield connectMoq(
            reactor, "127.0.0.1", relay.port, verification=pin(relay, tmp_path, "spy")
        )
        spy = Eavesdropper(spy_moq)
        yield spy.listen(request.session_id)
        yield typed_and_shown(client, b"once")
        yield eventually(lambda: len(spy.tapes[("client", "stdin")].objects) >= 1)
        captured = spy.tapes[("client", "stdin")].objects[0]

        (attachment,) = [a for a in bot.bot.attachments if a.session is not None]
        (stdin,) = [s for s in attachment.subscriptions if s.name == b"stdin"]
        altered = captured[:-1] + bytes([captured[-1] ^ 1])
        for payload in (captured, captured, altered):
            stdin.protocol.dataReceived(payload)

        yield typed_and_shown(client, b"twice")
        assert log.read_bytes() == b"once\ntwice\n"
        assert bot.bot.refusals.get("seal_failure") == 3
        assert not client.lost
    finally:
        if spy is not None:
            spy.moq.close()
        if client is not None:
            client.leave()
        yield bot.stop()
