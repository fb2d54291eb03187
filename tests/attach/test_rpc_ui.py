"""The line-based terminal chat (``--ui rpc``) against a real server, pi and offline model."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from tests.chat.live import WAIT, LiveStack

pytestmark = pytest.mark.slow


class Terminal(protocol.ProcessProtocol):
    """The client as a person drives it: lines in, output watched for text."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.output = b""
        self.waiters: list[tuple[re.Pattern[bytes], defer.Deferred[None]]] = []
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for pattern, waiting in list(self.waiters):
            if pattern.search(self.output):
                self.waiters.remove((pattern, waiting))
                waiting.callback(None)

    errReceived = outReceived

    def expect(self, pattern: bytes) -> defer.Deferred[None]:
        compiled = re.compile(pattern)
        if compiled.search(self.output):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self.waiters.append((compiled, waiting))
        return waiting.addTimeout(WAIT, self.reactor)

    def type(self, line: str) -> None:
        assert self.transport is not None
        self.transport.write(line.encode() + b"\n")

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


@pytest_twisted.async_yield_fixture
async def stack(tmp_path: Path) -> AsyncIterator[LiveStack]:
    from twisted.internet import reactor

    live = LiveStack(reactor, tmp_path)
    live.start()
    try:
        yield live
    finally:
        await live.stop()


def start_client(stack: LiveStack, *args: str) -> Terminal:
    terminal = Terminal(stack.reactor)
    argv = [sys.executable, "-m", "pibridge.attach.rpc_ui", stack.url, *args]
    stack.reactor.spawnProcess(terminal, argv[0], argv, env=None)
    return terminal


@pytest_twisted.ensureDeferred
async def test_chat_streams_replies_shows_tools_and_exits_on_ctrl_d(stack: LiveStack) -> None:
    terminal = start_client(stack)
    await terminal.expect(rb"chat session ([0-9a-f]+) .*\n> ")
    terminal.type("hello from the terminal")
    await terminal.expect(rb"You said: hello from the terminal\n> ")
    terminal.type("[bash: echo tool-ran-here]")
    await terminal.expect(rb"\[tool bash \{\"command\": \"echo tool-ran-here\"\}\]\n")
    await terminal.expect(rb"\[tool bash done\] tool-ran-here\n")
    await terminal.expect(rb"returned:\ntool-ran-here\n\n> ")
    assert terminal.transport is not None
    terminal.transport.closeStdin()
    code = await terminal.ended.addTimeout(WAIT, stack.reactor)
    assert code == 0
    assert b"can be resumed" in terminal.output
    [session] = stack.manager.sessions.values()
    assert session.id.encode() in terminal.output


@pytest_twisted.ensureDeferred
async def test_ctrl_c_aborts_a_streaming_reply_and_the_chat_goes_on(stack: LiveStack) -> None:
    sid = await stack.create("resumed")
    terminal = start_client(stack, sid)
    await terminal.expect(rb"chat session " + sid.encode() + rb" \(resumed\)")
    terminal.type("[slow: 40] [long: 500]")
    await terminal.expect(rb"line 3 of 500")
    assert terminal.transport is not None
    terminal.transport.signalProcess("INT")
    await terminal.expect(rb"\[aborting\]")
    await terminal.expect(rb"\[aborted: [^\]]+\]\n> ")
    assert b"line 500 of 500" not in terminal.output
    terminal.type("are you there")
    await terminal.expect(rb"You said: are you there\n> ")
    terminal.transport.closeStdin()
    assert await terminal.ended.addTimeout(WAIT, stack.reactor) == 0


@pytest_twisted.ensureDeferred
async def test_an_unknown_session_is_reported_and_exits_non_zero(stack: LiveStack) -> None:
    terminal = start_client(stack, "no-such-session")
    code = await terminal.ended.addTimeout(WAIT, stack.reactor)
    assert code == 1
    assert b"no chat session 'no-such-session'" in terminal.output
