"""The ``pi --mode rpc`` child: a thin ProcessProtocol around the pure framing.

Commands go to stdin as JSON lines with an ``id``; the matching ``response``
fires that command's Deferred. Every other record is handed on as an event.
Ending the child is a ladder: close stdin (pi exits cleanly), then SIGTERM,
then SIGKILL to its whole process group, each after a short wait.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from pibridge.chat.framing import DEFAULT_MAX_LINE, FramingError, JsonLineSplitter, encode_command

STDERR_TAIL = 4096


class CommandFailed(Exception):
    """pi answered a command with ``success: false``."""


class ChildGone(Exception):
    """The pi child ended before answering."""


def kill_process_group(pid: int, signo: int) -> None:
    os.killpg(pid, signo)


@attrs.define(eq=False)
class PiRpcProtocol(ProcessProtocol):
    """Talks to one pi child; reports records, framing errors and the exit."""

    on_record: Callable[[dict[str, Any]], None]
    on_framing_error: Callable[[FramingError], None]
    on_exit: Callable[[Failure], None]
    max_line: int = DEFAULT_MAX_LINE
    _splitter: JsonLineSplitter = attrs.field(init=False)
    _pending: dict[str, defer.Deferred[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _counter: int = attrs.field(default=0, init=False)
    _stderr: bytearray = attrs.field(factory=bytearray, init=False)
    ended: defer.Deferred[None] = attrs.field(factory=defer.Deferred, init=False)
    exited: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self._splitter = JsonLineSplitter(self.max_line)

    @property
    def process(self) -> IProcessTransport | None:
        transport: IProcessTransport | None = self.transport
        return transport

    def outReceived(self, data: bytes) -> None:
        for frame in self._splitter.feed(data):
            if isinstance(frame, FramingError):
                self.on_framing_error(frame)
                continue
            record = frame.value
            if record.get("type") == "response" and isinstance(record.get("id"), str):
                self._answer(record)
            else:
                self.on_record(record)

    def _answer(self, record: dict[str, Any]) -> None:
        waiting = self._pending.pop(record["id"], None)
        if waiting is None:
            return
        if record.get("success") is True:
            waiting.callback(record)
        else:
            waiting.errback(CommandFailed(str(record.get("error") or "pi refused the command")))

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-STDERR_TAIL]

    @property
    def stderr_tail(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def send(self, command: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """Send a command; the Deferred fires with pi's response record."""
        if self.exited or self.transport is None:
            return defer.fail(ChildGone("pi is not running"))
        self._counter += 1
        command_id = f"pibridge-{self._counter}"
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._pending[command_id] = waiting
        self.transport.write(encode_command({**command, "id": command_id}))
        return waiting

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(ChildGone("pi ended before answering"))
        self.on_exit(reason)
        self.ended.callback(None)


@attrs.define(eq=False)
class Terminator:
    """Ends a pi child and its process group: close stdin, SIGTERM, SIGKILL."""

    clock: IReactorTime
    close_grace: float = 3.0
    term_grace: float = 2.0
    kill_group: Callable[[int, int], None] = kill_process_group

    def end(self, protocol: PiRpcProtocol, *, group: bool) -> defer.Deferred[None]:
        """Fires once the child has been reaped."""
        if protocol.exited:
            return defer.succeed(None)
        calls: list[IDelayedCall] = []
        transport = protocol.process
        if transport is not None:
            transport.closeStdin()
        calls.append(self.clock.callLater(self.close_grace, self._signal, protocol, "TERM", group))
        calls.append(
            self.clock.callLater(
                self.close_grace + self.term_grace, self._signal, protocol, "KILL", group
            )
        )

        def cancel_ladder(result: None) -> None:
            for call in calls:
                if call.active():
                    call.cancel()

        done: defer.Deferred[None] = defer.Deferred()
        protocol.ended.addBoth(lambda _: done.callback(None))
        done.addCallback(cancel_ladder)
        return done

    def _signal(self, protocol: PiRpcProtocol, name: str, group: bool) -> None:
        transport = protocol.process
        if protocol.exited or transport is None or transport.pid is None:
            return
        if group:
            try:
                self.kill_group(transport.pid, getattr(signal, f"SIG{name}"))
                return
            except ProcessLookupError:
                return
            except OSError:
                pass
        try:
            transport.signalProcess(name)
        except Exception:  # the process may be gone already
            return
