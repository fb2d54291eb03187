"""Drive a real ``pi --mode rpc`` process from tests, on the running reactor."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pibridge.agent.runtime import PiInvocation

PI_TIMEOUT = 60.0


@attrs.define(eq=False)
class PiRpcProcess(ProcessProtocol):
    """Collects pi's JSON events (split on ``\\n`` only) and its stderr."""

    events: list[dict[str, Any]] = attrs.field(factory=list)
    stderr: bytes = b""
    _buffer: bytes = b""
    _waiters: list[tuple[str, defer.Deferred[dict[str, Any]]]] = attrs.field(factory=list)
    ended: defer.Deferred[None] = attrs.field(factory=defer.Deferred)
    end_reason: Failure | None = None

    def __attrs_post_init__(self) -> None:
        ProcessProtocol.__init__(self)

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if not line.strip():
                continue
            event = json.loads(line)
            self.events.append(event)
            for waiter in list(self._waiters):
                kind, deferred = waiter
                if event.get("type") == kind:
                    self._waiters.remove(waiter)
                    deferred.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        for _, deferred in self._waiters:
            deferred.errback(RuntimeError(f"pi ended: {reason.value}; stderr: {self.stderr!r}"))
        self._waiters.clear()
        self.end_reason = reason
        self.ended.callback(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(command).encode() + b"\n")

    def next_event(self, kind: str, timeout: float = PI_TIMEOUT) -> defer.Deferred[dict[str, Any]]:
        deferred: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiters.append((kind, deferred))
        deferred.addTimeout(timeout, reactor)
        return deferred

    def close(self, timeout: float = 15.0) -> defer.Deferred[None]:
        """Close stdin (pi then exits cleanly) and wait for the exit."""
        assert self.transport is not None
        if not self.ended.called:
            self.transport.closeStdin()
            self.ended.addTimeout(timeout, reactor)
        return self.ended


def spawn_pi(invocation: PiInvocation) -> PiRpcProcess:
    process = PiRpcProcess()
    reactor.spawnProcess(  # type: ignore[attr-defined]
        process,
        invocation.argv[0],
        list(invocation.argv),
        env=dict(invocation.env),
        path=invocation.cwd,
    )
    return process


def assistant_texts(events: list[dict[str, Any]]) -> list[str]:
    """The text of every finished assistant message, in order."""
    texts = []
    for event in events:
        message = event.get("message") or {}
        if event.get("type") == "message_end" and message.get("role") == "assistant":
            texts.append(
                "".join(
                    part.get("text", "")
                    for part in message.get("content", [])
                    if part.get("type") == "text"
                )
            )
    return texts


@defer.inlineCallbacks
def run_prompt(invocation: PiInvocation, message: str, timeout: float = PI_TIMEOUT) -> Any:
    """Start pi, send one prompt, wait for the agent to finish, close pi.

    Returns the process (events and stderr) once pi has exited.
    """
    process = spawn_pi(invocation)
    try:
        finished = process.next_event("agent_end", timeout)
        process.send({"id": "p1", "type": "prompt", "message": message})
        yield finished
    finally:
        yield process.close()
    reason = process.end_reason
    assert reason is not None and reason.check(ProcessDone), f"pi ended oddly: {reason}"
    return process
