"""The local end: stdin as a pausable stream of objects, stdout with backpressure.

Each read from stdin becomes one object (escape sequences and pastes arrive
in one read when the terminal delivers them so). Reading pauses when the
network's stdin queue is full. Output goes to stdout through Twisted's
buffered writer; once its buffer passes its high-water mark it pauses the
registered producer (the stdout track), so a slow local terminal slows the
network stream instead of growing memory.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from attrs import define
from twisted.internet import defer
from twisted.internet._posixstdio import StandardIO
from twisted.internet.interfaces import IPushProducer, IReactorFDSet
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

DEFAULT_SIZE = (80, 24)


class LocalTerminal(Protocol):
    """What the attach client needs from the local terminal (real or in memory)."""

    def start(self, on_input: Callable[[bytes], None], on_input_closed: Callable[[], None]) -> None:
        """Begin reading; each read is passed to ``on_input``."""

    def write_output(self, data: bytes) -> None: ...

    def size(self) -> tuple[int, int]:
        """(cols, rows)."""
        ...

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...

    def register_output_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` while output is backed up."""

    def unregister_output_producer(self) -> None: ...

    def stop(self) -> None: ...


def terminal_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on ``fd``; 80x24 when it reports nothing useful."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return DEFAULT_SIZE
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    if not cols or not rows:
        return DEFAULT_SIZE
    return (min(cols, 1000), min(rows, 1000))


def _writer_is_idle(writer: Any) -> bool:
    """Whether Twisted's buffered writer holds nothing, so a direct write keeps the order.

    Reads two private fields of ``twisted.internet.abstract.FileDescriptor``
    (pinned with Twisted; the attach tests write through both paths).
    """
    return bool(
        writer is not None
        and writer.connected
        and not writer.disconnecting
        and not writer._tempDataLen
        and len(writer.dataBuffer) == writer.offset
    )


class _StdioForwarder(TwistedProtocol):
    def __init__(self, terminal: StdioTerminal) -> None:
        self._terminal = terminal

    def dataReceived(self, data: bytes) -> None:
        self._terminal._input(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._terminal._connection_lost()


@define(eq=False)
class StdioTerminal:
    """`LocalTerminal` over the process's own stdin and stdout."""

    reactor: IReactorFDSet
    input_fd: int = 0
    output_fd: int = 1
    _stdio: Any = attrs.field(init=False, default=None)
    _on_input: Callable[[bytes], None] | None = attrs.field(init=False, default=None)
    _on_input_closed: Callable[[], None] | None = attrs.field(init=False, default=None)
    _output_producer: IPushProducer | None = attrs.field(init=False, default=None)
    _early_output: list[bytes] = attrs.field(init=False, factory=list)
    _closed: bool = attrs.field(init=False, default=False)
    _close_waiters: list[defer.Deferred[None]] = attrs.field(init=False, factory=list)

    def start(self, on_input: Callable[[bytes], None], on_input_closed: Callable[[], None]) -> None:
        self._on_input = on_input
        self._on_input_closed = on_input_closed
        self._stdio = StandardIO(
            _StdioForwarder(self), stdin=self.input_fd, stdout=self.output_fd, reactor=self.reactor
        )
        if self._output_producer is not None:
            self._stdio.registerProducer(self._output_producer, True)
        early, self._early_output = self._early_output, []
        for data in early:
            self._stdio.write(data)

    def _input(self, data: bytes) -> None:
        if self._on_input is not None:
            self._on_input(data)

    def _connection_lost(self) -> None:
        self._closed = True
        if self._on_input_closed is not None:
            callback, self._on_input_closed = self._on_input_closed, None
            callback()
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_closed(self) -> defer.Deferred[None]:
        """Fires once `stop` has flushed every byte written (or stdio closed on its own)."""
        if self._closed or self._stdio is None:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._close_waiters.append(waiter)
        return waiter

    def write_output(self, data: bytes) -> None:
        if self._stdio is None:
            self._early_output.append(data)
            return
        if _writer_is_idle(self._stdio._writer):
            # Straight to the terminal: Twisted's writer would wait for the next
            # reactor turn (and two epoll changes) to write what it could write now.
            try:
                written = os.write(self.output_fd, data)
            except OSError:
                # Full (EAGAIN) or broken: Twisted's writer queues the rest, or
                # reports the error as it always does.
                written = 0
            data = data[written:]
            if not data:
                return
        self._stdio.write(data)

    def size(self) -> tuple[int, int]:
        return terminal_size(self.output_fd)

    def pause_input(self) -> None:
        if self._stdio is not None:
            self._stdio.pauseProducing()

    def resume_input(self) -> None:
        if self._stdio is not None:
            self._stdio.resumeProducing()

    def register_output_producer(self, producer: IPushProducer) -> None:
        self._output_producer = producer
        if self._stdio is not None:
            self._stdio.registerProducer(producer, True)

    def unregister_output_producer(self) -> None:
        self._output_producer = None
        if self._stdio is not None:
            self._stdio.unregisterProducer()

    def stop(self) -> None:
        """Stop reading; flush what is written, then let go of stdin and stdout."""
        self._on_input_closed = None
        if self._stdio is not None and not self._closed:
            self._stdio.loseConnection()


@implementer(IPushProducer)
@define(eq=False)
class InputProducer:
    """Adapts the local terminal's reading to `IPushProducer` for the stdin track."""

    terminal: LocalTerminal
    on_change: Callable[[bool], None] | None = None
    paused: bool = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self.terminal.pause_input()
            if self.on_change is not None:
                self.on_change(True)

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self.terminal.resume_input()
            if self.on_change is not None:
                self.on_change(False)

    def stopProducing(self) -> None:
        self.pauseProducing()
