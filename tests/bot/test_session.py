"""A terminal session with a real PTY: attach, output, detach, reattach, grace, exit."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable

import attrs
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from pibridge.bot.session import TerminalSession
from pibridge.terminal.auth import Identity
from pibridge.terminal.control import Close, Message, Open, OpenAck
from pibridge.terminal.pty_host import PtySpec
from pibridge.terminal.ring import OutputRing

OWNER = Identity(user="alice", group="team")


@attrs.define(eq=False)
class RecordingLink:
    controls: list[Message] = attrs.field(factory=list)
    output: bytearray = attrs.field(factory=bytearray)
    ended: bool = False
    waiters: list[tuple[Callable[[RecordingLink], bool], defer.Deferred[None]]] = attrs.field(
        factory=list
    )

    def send_control(self, message: Message) -> None:
        self.controls.append(message)
        self._check()

    def send_output(self, data: bytes) -> None:
        self.output += data
        self._check()

    def end(self) -> None:
        self.ended = True
        self._check()

    def until(self, condition: Callable[[RecordingLink], bool]) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        waiter.addTimeout(10, reactor)
        self.waiters.append((condition, waiter))
        self._check()
        return waiter

    def _check(self) -> None:
        for entry in list(self.waiters):
            condition, waiter = entry
            if condition(self):
                self.waiters.remove(entry)
                waiter.callback(None)


def script(text: str) -> tuple[str, ...]:
    return (sys.executable, "-c", text)


def make_session(
    argv: tuple[str, ...], finished: list[TerminalSession], **options: object
) -> TerminalSession:
    session = TerminalSession(
        str(uuid.uuid4()),
        OWNER,
        reactor,  # type: ignore[arg-type]
        finished.append,
        **options,  # type: ignore[arg-type]
    )
    spec = PtySpec(argv, workspace=os.getcwd(), term="xterm-256color", cols=80, rows=24)
    session.start(reactor, spec)
    return session


def open_for(session: TerminalSession, resume: int | None = None, cols: int = 80) -> Open:
    return Open(session.session_id, "team", "xterm-256color", cols, 24, "t", resume_offset=resume)


@pytest_twisted.inlineCallbacks
def test_output_reaches_the_client_and_exit_is_reported() -> None:
    finished: list[TerminalSession] = []
    session = make_session(script("import sys; sys.stdout.write('hello'); sys.exit(3)"), finished)
    link = RecordingLink()
    session.attach(link, open_for(session))
    yield link.until(lambda seen: seen.ended)
    assert isinstance(link.controls[0], OpenAck)
    assert b"hello" in link.output
    close = link.controls[-1]
    assert isinstance(close, Close) and close.reason == "remote_exit" and close.exit_code == 3
    assert finished == [session]


@pytest_twisted.inlineCallbacks
def test_reattach_gets_exactly_the_missed_bytes() -> None:
    finished: list[TerminalSession] = []
    session = make_session(
        script("import sys\nfor line in sys.stdin: sys.stdout.write('got ' + line)"), finished
    )
    first = RecordingLink()
    session.attach(first, open_for(session))
    session.input(b"one\r")
    yield first.until(lambda seen: b"got one" in seen.output)
    shown = len(first.output)
    session.detach(first, "network_error")
    session.input(b"two\r")
    yield deferLater(reactor, 0.3, lambda: None)  # output produced while nobody is attached
    second = RecordingLink()
    session.attach(second, open_for(session, resume=shown))
    session.input(b"three\r")
    yield second.until(lambda seen: b"got three" in seen.output)
    ack = second.controls[0]
    assert isinstance(ack, OpenAck) and ack.output_offset == shown and not ack.output_gap
    assert bytes(first.output) + bytes(second.output) == session.ring.read_from(0)
    assert b"got two" in second.output
    session.terminate()
    yield session.host.when_ended()  # type: ignore[union-attr]


@pytest_twisted.inlineCallbacks
def test_reattach_past_the_ring_is_told_of_the_gap() -> None:
    finished: list[TerminalSession] = []
    session = make_session(
        script("import sys\nsys.stdout.write('x' * 5000); sys.stdout.flush()\nsys.stdin.read()"),
        finished,
        ring=OutputRing(1024),
    )
    first = RecordingLink()
    session.attach(first, open_for(session, resume=0))
    yield first.until(lambda seen: len(seen.output) >= 5000)
    session.detach(first, "network_error")
    second = RecordingLink()
    session.attach(second, open_for(session, resume=10))
    ack = second.controls[0]
    assert isinstance(ack, OpenAck) and ack.output_gap is True
    assert ack.output_offset == session.ring.start_offset
    session.terminate()
    yield session.host.when_ended()  # type: ignore[union-attr]


@pytest_twisted.inlineCallbacks
def test_nobody_reattaching_ends_the_program_after_the_grace_window() -> None:
    finished: list[TerminalSession] = []
    session = make_session(script("import time; time.sleep(60)"), finished, grace=0.2)
    link = RecordingLink()
    session.attach(link, open_for(session))
    session.detach(link, "network_error")
    status = yield session.host.when_ended()  # type: ignore[union-attr]
    assert status.signal is not None
    assert finished == [session]


@pytest_twisted.inlineCallbacks
def test_a_second_client_replaces_the_first() -> None:
    finished: list[TerminalSession] = []
    session = make_session(script("import sys; sys.stdin.read()"), finished)
    first, second = RecordingLink(), RecordingLink()
    session.attach(first, open_for(session))
    session.attach(second, open_for(session))
    assert first.ended
    replaced = first.controls[-1]
    assert isinstance(replaced, Close) and replaced.reason == "replaced"
    session.client_closed(second, "user_exit")
    status = yield session.host.when_ended()  # type: ignore[union-attr]
    assert status.exit_code is not None or status.signal is not None
