"""The TUI invocation runs the real pi in a PTY against the offline model."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import termios
from typing import Any

import attrs
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pibridge.agent.runtime import AgentRuntime

ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[a-zA-Z]|\x1b[\]P_][^\x07\x1b]*(?:\x07|\x1b\\)?")


@attrs.define(eq=False)
class ScreenWatcher(ProcessProtocol):
    """Collects PTY output and fires a waiter when some text has been drawn."""

    output: bytes = b""
    waiting: tuple[bytes, defer.Deferred[None]] | None = None
    ended: defer.Deferred[None] = attrs.field(factory=defer.Deferred)

    def __attrs_post_init__(self) -> None:
        ProcessProtocol.__init__(self)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output += data
        self._check()

    def _check(self) -> None:
        if self.waiting is not None and self.waiting[0] in ESCAPES.sub(b"", self.output):
            _, deferred = self.waiting
            self.waiting = None
            deferred.callback(None)

    def wait_for(self, text: bytes, timeout: float = 30.0) -> defer.Deferred[None]:
        deferred: defer.Deferred[None] = defer.Deferred()
        self.waiting = (text, deferred)
        deferred.addTimeout(timeout, reactor)
        self._check()
        return deferred

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


@pytest_twisted.inlineCallbacks
def test_tui_answers_a_typed_prompt(runtime: AgentRuntime) -> Any:
    invocation = runtime.invocation("tui", term="xterm-256color")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    watcher = ScreenWatcher()
    process = reactor.spawnProcess(  # type: ignore[attr-defined]
        watcher,
        invocation.argv[0],
        list(invocation.argv),
        env=dict(invocation.env),
        path=invocation.cwd,
        usePTY=(master, slave, os.ttyname(slave)),
    )
    try:
        yield watcher.wait_for(b"offline")
        process.write(b"hello tui\r")
        yield watcher.wait_for(b"Offline model here. You said: hello tui")
    finally:
        if watcher.ended.called is False:
            process.signalProcess("KILL")
            yield watcher.ended.addTimeout(10, reactor)
