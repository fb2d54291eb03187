"""Run a program in a pseudo-terminal and move its bytes, untouched, in both directions.

The host opens the PTY itself and sets its size before spawning, so the
program starts at the client's size (``spawnProcess(usePTY=True)`` starts at
0x0). Output goes to a sink exactly as read, never decoded. Input objects are
written one object per ``write`` so escape sequences and pastes arrive whole.
The host is a push producer toward its sink: pausing stops reading the PTY, so
a flooding program blocks in ``write`` instead of memory growing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Final, cast

import attrs
from attrs import define, frozen
from twisted.internet import defer
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IPushProducer,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from pibridge.terminal.redaction import log_io

DEFAULT_LANG: Final = "C.UTF-8"
#: Queued input above which the input producer (the stdin track) is paused.
INPUT_HIGH_WATER: Final = 64 * 1024
INPUT_LOW_WATER: Final = 16 * 1024
#: Queued input beyond which writes are refused: the producer ignored the pause.
INPUT_HARD_LIMIT: Final = 1024 * 1024
#: How often a blocked input queue retries writing to the PTY.
INPUT_RETRY_SECONDS: Final = 0.005
#: Most output gathered from the PTY in one wakeup.
READ_BURST: Final = 64 * 1024
#: Wait between hang-up, SIGTERM and SIGKILL when terminating.
DEFAULT_GRACE_SECONDS: Final = 1.0

_log = Logger()


class InputOverflow(Exception):
    """More input queued than the bound allows: the producer did not honour a pause."""


@frozen
class ExitStatus:
    """How the program ended: an exit code, or the signal that killed it."""

    exit_code: int | None
    signal: int | None

    @classmethod
    def from_reason(cls, reason: Failure) -> ExitStatus:
        value = reason.value
        if isinstance(value, ProcessDone):
            return cls(exit_code=0, signal=None)
        if isinstance(value, ProcessTerminated):
            return cls(exit_code=value.exitCode, signal=value.signal)
        return cls(exit_code=None, signal=None)


@frozen
class PtySpec:
    """What to run and in what terminal."""

    argv: Sequence[str] = attrs.field(converter=tuple)
    workspace: str
    term: str
    cols: int
    rows: int
    #: The environment besides TERM (and LANG, defaulted to C.UTF-8).
    env: Mapping[str, str] = attrs.field(factory=dict)

    def environment(self) -> dict[str, str]:
        result = dict(self.env)
        result.setdefault("LANG", DEFAULT_LANG)
        result["TERM"] = self.term
        return result


def window_size(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


def set_window_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, window_size(cols, rows))


class _PtyProcessProtocol(ProcessProtocol):
    """Forwards process events to the host; holds no logic."""

    def __init__(self, host: PtyHost) -> None:
        self._host = host

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._host._output_received(data)

    def processEnded(self, reason: Failure) -> None:
        self._host._ended(ExitStatus.from_reason(reason))


def session_groups(session_id: int) -> set[int]:
    """The process groups of every live process in session ``session_id`` (from /proc)."""
    groups: set[int] = set()
    if session_id <= 1:
        return groups
    try:
        entries = os.listdir("/proc")
    except OSError:
        return groups
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, session, ...
        if len(fields) > 3 and int(fields[3]) == session_id:
            groups.add(int(fields[2]))
    return groups


@implementer(IPushProducer)
@define(eq=False)
class PtyHost:
    """One program running in a PTY; see the module docstring."""

    clock: IReactorTime
    output: Callable[[bytes], object]
    _master_fd: int
    debug_io: bool = False
    pid: int = attrs.field(init=False, default=0)
    _transport: IProcessTransport | None = attrs.field(init=False, default=None)
    exit_status: ExitStatus | None = attrs.field(init=False, default=None)
    _waiters: list[defer.Deferred[ExitStatus]] = attrs.field(init=False, factory=list)
    _pending: deque[bytes] = attrs.field(init=False, factory=deque)
    _pending_bytes: int = attrs.field(init=False, default=0)
    _retry: IDelayedCall | None = attrs.field(init=False, default=None)
    _input_producer: IPushProducer | None = attrs.field(init=False, default=None)
    _input_producer_paused: bool = attrs.field(init=False, default=False)
    _master_closed: bool = attrs.field(init=False, default=False)
    _escalation: list[IDelayedCall] = attrs.field(init=False, factory=list)
    _terminating: bool = attrs.field(init=False, default=False)
    _groups: set[int] = attrs.field(init=False, factory=set)

    @classmethod
    def spawn(
        cls,
        reactor: IReactorProcess,
        spec: PtySpec,
        output: Callable[[bytes], object],
        *,
        clock: IReactorTime | None = None,
        debug_io: bool = False,
    ) -> PtyHost:
        """Open a PTY at the spec's size and start the program in it.

        ``clock`` defaults to ``reactor`` (a real reactor is both).
        """
        master, slave = os.openpty()
        try:
            set_window_size(slave, spec.cols, spec.rows)
            name = os.ttyname(slave)
            timer = clock if clock is not None else cast(IReactorTime, reactor)
            host = cls(timer, output, master, debug_io=debug_io)
            transport = reactor.spawnProcess(
                _PtyProcessProtocol(host),
                spec.argv[0],
                list(spec.argv),
                spec.environment(),
                path=spec.workspace,
                usePTY=(master, slave, name),  # type: ignore[arg-type]
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        host._transport = transport
        host.pid = transport.pid
        return host

    # -- output toward the sink --------------------------------------------------------

    def _output_received(self, data: bytes) -> None:
        data = self._gather(data)
        log_io(_log, self.debug_io, "pty output", data)
        self.output(data)

    def _gather(self, first: bytes) -> bytes:
        """Take what else the program has already written, up to a burst.

        A PTY hands over about 4 KiB per read; under a flood, sending each
        read on its own costs a QUIC transmit apiece. Reading on (without
        blocking: Twisted keeps the master non-blocking) lets a flood go out
        in few large pieces, in the same order, byte for byte.
        """
        if not self._master_open() or os.get_blocking(self._master_fd):
            return first
        pieces = [first]
        total = len(first)
        while total < READ_BURST:
            try:
                chunk = os.read(self._master_fd, READ_BURST - total)
            except OSError:
                break
            if not chunk:
                break
            pieces.append(chunk)
            total += len(chunk)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def pauseProducing(self) -> None:
        """Stop reading the PTY; the program blocks once the kernel buffer fills.

        While paused the end of the program is not noticed either: its last
        output is still unread.
        """
        if self._transport is not None and self._master_open():
            self._transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        if self._transport is not None and self._master_open():
            self._transport.resumeProducing()  # type: ignore[attr-defined]

    def _master_open(self) -> bool:
        """Whether the master fd is still ours: Twisted closes it when the PTY hangs up."""
        transport = self._transport
        return (
            not self._master_closed
            and transport is not None
            and bool(getattr(transport, "connected", False))
            and not getattr(transport, "disconnecting", False)
        )

    def stopProducing(self) -> None:
        self.terminate()

    # -- input from the client ---------------------------------------------------------

    def write_input(self, data: bytes) -> None:
        """Write one input object to the PTY in one write, after anything queued before it."""
        if not data or not self._master_open():
            return
        log_io(_log, self.debug_io, "pty input", data)
        if self._pending_bytes + len(data) > INPUT_HARD_LIMIT:
            raise InputOverflow(f"more than {INPUT_HARD_LIMIT} bytes of input queued")
        if not self._pending:
            written = self._write_some(data)
            if written == len(data):
                return
            data = data[written:]
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._update_input_producer()
        self._schedule_retry()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Let the host pause whoever feeds it input (the stdin track) when the PTY is full."""
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self._input_producer = producer
        self._input_producer_paused = False
        self._update_input_producer()

    def unregisterProducer(self) -> None:
        self._input_producer = None

    @property
    def pending_input(self) -> int:
        return self._pending_bytes

    def _write_some(self, data: bytes) -> int:
        try:
            return os.write(self._master_fd, data)
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno in (errno.EIO, errno.EBADF):
                self._drop_pending()
                return len(data)
            raise

    def _flush(self) -> None:
        self._retry = None
        if not self._master_open():
            self._drop_pending()
            return
        while self._pending:
            head = self._pending[0]
            written = self._write_some(head)
            self._pending_bytes -= written
            if written < len(head):
                self._pending[0] = head[written:]
                break
            self._pending.popleft()
        self._update_input_producer()
        if self._pending:
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._retry is None:
            self._retry = self.clock.callLater(INPUT_RETRY_SECONDS, self._flush)

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0

    def _update_input_producer(self) -> None:
        producer = self._input_producer
        if producer is None:
            return
        if not self._input_producer_paused and self._pending_bytes > INPUT_HIGH_WATER:
            self._input_producer_paused = True
            producer.pauseProducing()
        elif self._input_producer_paused and self._pending_bytes <= INPUT_LOW_WATER:
            self._input_producer_paused = False
            producer.resumeProducing()

    # -- size ----------------------------------------------------------------------------

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal size; the kernel sends SIGWINCH to the foreground group."""
        if self._master_open():
            set_window_size(self._master_fd, cols, rows)

    # -- ending ------------------------------------------------------------------------

    def when_ended(self) -> defer.Deferred[ExitStatus]:
        """A Deferred that fires with the exit status once the program is reaped."""
        if self.exit_status is not None:
            return defer.succeed(self.exit_status)
        waiter: defer.Deferred[ExitStatus] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def terminate(self, grace: float = DEFAULT_GRACE_SECONDS) -> defer.Deferred[ExitStatus]:
        """Hang up, then SIGTERM, then SIGKILL the program's groups, ``grace`` apart."""
        if self.exit_status is None and not self._terminating:
            self._terminating = True
            self._groups = {self.pid}
            if self._master_open():
                with contextlib.suppress(OSError):
                    self._groups.add(os.tcgetpgrp(self._master_fd))
            self._signal_groups(signal.SIGHUP)
            self._hang_up()
            self._escalation = [
                self.clock.callLater(grace, self._signal_groups, signal.SIGTERM),
                self.clock.callLater(2 * grace, self._signal_groups, signal.SIGKILL),
            ]
        return self.when_ended()

    def _hang_up(self) -> None:
        """Close the master side: the terminal's equivalent of the line dropping."""
        if self._transport is not None and self._master_open():
            self._transport.loseConnection()
        self._master_closed = True

    def _signal_groups(self, signum: int) -> None:
        if self.exit_status is not None:
            return
        for group in self._program_groups():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signum)

    def _program_groups(self) -> list[int]:
        """Every process group of the program's terminal session, never pibridge's own.

        The program leads its own session (Twisted's PTY spawn calls setsid),
        so background jobs in other groups of that session are found by their
        session id and end with it. Before the child's setsid the PTY has no
        foreground group and tcgetpgrp answers 0 or our own group: killpg
        would then signal pibridge itself.
        """
        ours = os.getpgrp()
        groups = self._groups | session_groups(self.pid)
        return [group for group in groups if group > 1 and group != ours]

    def _ended(self, status: ExitStatus) -> None:
        self._master_closed = True
        self._drop_pending()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for call in self._escalation:
            if call.active():
                call.cancel()
        if self._terminating:
            # Leftovers of the program's groups must not outlive the session.
            for group in self._program_groups():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
        self.exit_status = status
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(status)
