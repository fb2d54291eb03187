"""One terminal session on the bot: a program in a PTY and, now and then, a client.

The session outlives its clients. Output always goes into the reattach ring;
an attached client gets it live, a reattaching one gets what it missed from
the ring (or is told it is gone and the program is nudged to redraw). When
the last client drops, a grace timer starts; if nobody reattaches in time the
program is hung up, terminated, killed and reaped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import Logger

from pibridge.bot.flow import DEFAULT_WINDOW, OutputGate
from pibridge.terminal.auth import Identity
from pibridge.terminal.control import Close, CloseReason, Message, Open, OpenAck
from pibridge.terminal.pty_host import ExitStatus, PtyHost, PtySpec
from pibridge.terminal.ring import Gap, OutputRing

log = Logger()

DEFAULT_GRACE = 30.0
DEFAULT_RING = 4 * 1024 * 1024


class ClientLink(Protocol):
    """An attached client as a session sees it; the MoQ layer provides one per attach."""

    def send_control(self, message: Message) -> None: ...

    def send_output(self, data: bytes) -> None: ...

    def end(self) -> None:
        """Finish the link's tracks after a final control message."""


@attrs.define
class TerminalStats:
    """Counters across all sessions of a bot, for /metrics."""

    output_bytes: int = 0
    input_bytes: int = 0
    attaches: int = 0
    reattaches: int = 0
    pauses: int = 0
    exits: int = 0


@attrs.define(eq=False)
class TerminalSession:
    session_id: str
    owner: Identity
    clock: IReactorTime
    on_finished: Callable[[TerminalSession], None]
    grace: float = DEFAULT_GRACE
    window: int = DEFAULT_WINDOW
    ring: OutputRing = attrs.field(factory=lambda: OutputRing(DEFAULT_RING))
    stats: TerminalStats = attrs.field(factory=TerminalStats)
    host: PtyHost | None = attrs.field(default=None, init=False)
    gate: OutputGate | None = attrs.field(default=None, init=False)
    link: ClientLink | None = attrs.field(default=None, init=False)
    exit_status: ExitStatus | None = attrs.field(default=None, init=False)
    size: tuple[int, int] = attrs.field(default=(80, 24), init=False)
    _grace_call: IDelayedCall | None = attrs.field(default=None, init=False)
    finished: bool = attrs.field(default=False, init=False)
    attached_before: bool = attrs.field(default=False, init=False)

    def start(self, reactor: IReactorProcess, spec: PtySpec, *, debug_io: bool = False) -> None:
        """Spawn the program at the size and terminal type the first open asked for."""
        self.size = (spec.cols, spec.rows)
        self.host = PtyHost.spawn(reactor, spec, self._output, clock=self.clock, debug_io=debug_io)
        self.gate = OutputGate(self.host, window=self.window, detached_limit=self.ring.capacity)
        self.host.when_ended().addCallback(self._ended)
        log.info(
            "terminal session {sid} started for {user}/{group}: pid {pid}",
            sid=self.session_id,
            user=self.owner.user,
            group=self.owner.group,
            pid=self.host.pid,
        )

    # -- clients -------------------------------------------------------------------------

    def attach(self, link: ClientLink, request: Open) -> None:
        """Serve ``link`` from where its output stopped (or from the start of the ring)."""
        if self.link is not None and self.link is not link:
            previous = self.link
            self.link = None
            previous.send_control(
                Close(self.session_id, CloseReason.REPLACED, message="attached elsewhere")
            )
            previous.end()
        self._cancel_grace()
        self.stats.attaches += 1
        if self.attached_before:
            self.stats.reattaches += 1
        self.attached_before = True
        self.link = link
        resume = request.resume_offset
        start = self.ring.start_offset if resume is None else resume
        replay = self.ring.read_from(min(start, self.ring.end_offset))
        gap = isinstance(replay, Gap)
        if isinstance(replay, Gap):
            start = self.ring.start_offset
            missed = self.ring.read_from(start)
            assert not isinstance(missed, Gap)
            replay = missed
        link.send_control(OpenAck(self.session_id, output_offset=start, output_gap=gap or None))
        if replay:
            link.send_output(replay)
        if self.gate is not None:
            self.gate.attach(start)
        self.resize(request.cols, request.rows, nudge=gap)
        if self.exit_status is not None:
            self._send_exit(link)

    def detach(self, link: ClientLink, reason: str) -> None:
        """The client went away (or was cut off); keep the program for the grace window."""
        if link is not self.link:
            return
        self.link = None
        if self.gate is not None:
            self.gate.detach()
        log.info("terminal session {sid} detached: {reason}", sid=self.session_id, reason=reason)
        if self.exit_status is not None:
            self._finish()
        elif self._grace_call is None and not self.finished:
            self._grace_call = self.clock.callLater(self.grace, self._grace_expired)

    def client_closed(self, link: ClientLink, reason: str) -> None:
        """The client said ``close``: a user exit ends the program, anything else detaches."""
        if link is not self.link:
            return
        if reason == CloseReason.USER_EXIT:
            self.link = None
            self.terminate()
        else:
            self.detach(link, reason)

    # -- what the client sends -----------------------------------------------------------

    def input(self, data: bytes) -> None:
        if self.host is not None:
            self.stats.input_bytes += len(data)
            self.host.write_input(data)

    def resize(self, cols: int, rows: int, *, nudge: bool = False) -> None:
        """Apply a size; ``nudge`` makes the program redraw even if the size is unchanged."""
        if self.host is None:
            return
        if nudge:
            # A size change is what makes a full-screen program repaint everything.
            self.host.resize(cols, rows - 1 if rows > 1 else rows + 1)
        self.size = (cols, rows)
        self.host.resize(cols, rows)

    def acknowledge(self, offset: int) -> None:
        if self.gate is not None:
            self.gate.acknowledge(offset)

    def link_paused(self, link: ClientLink) -> None:
        if link is self.link and self.gate is not None:
            self.gate.link_pause()

    def link_resumed(self, link: ClientLink) -> None:
        if link is self.link and self.gate is not None:
            self.gate.link_resume()

    # -- ending --------------------------------------------------------------------------

    def terminate(self) -> Deferred[ExitStatus] | None:
        """Hang up, then terminate, then kill the program; fires once it is reaped."""
        if self.host is None:
            return None
        return self.host.terminate()

    def shutdown(self) -> Deferred[ExitStatus] | None:
        """The server is stopping: say so to the client, then end the program."""
        link, self.link = self.link, None
        if link is not None:
            link.send_control(
                Close(self.session_id, CloseReason.SERVER_SHUTDOWN, message="pibridge is stopping")
            )
            link.end()
        return self.terminate()

    def _output(self, data: bytes) -> None:
        self.stats.output_bytes += len(data)
        self.ring.append(data)
        if self.link is not None:
            self.link.send_output(data)
        if self.gate is not None:
            self.gate.output(len(data))

    def _ended(self, status: ExitStatus) -> None:
        self.exit_status = status
        self.stats.exits += 1
        if self.gate is not None:
            self.stats.pauses += self.gate.pauses
            self.gate.pauses = 0
        log.info(
            "terminal session {sid} program ended: exit {code} signal {signal}",
            sid=self.session_id,
            code=status.exit_code,
            signal=status.signal,
        )
        link, self.link = self.link, None
        if link is not None:
            self._finish()
            self._send_exit(link)
        elif self._grace_call is None:
            self._finish()

    def _send_exit(self, link: ClientLink) -> None:
        assert self.exit_status is not None
        link.send_control(
            Close(
                self.session_id,
                CloseReason.REMOTE_EXIT,
                exit_code=self.exit_status.exit_code,
                signal=self.exit_status.signal,
            )
        )
        link.end()

    def _grace_expired(self) -> None:
        self._grace_call = None
        log.info("terminal session {sid}: nobody reattached in time", sid=self.session_id)
        if self.exit_status is not None:
            self._finish()
        else:
            self.terminate()

    def _cancel_grace(self) -> None:
        if self._grace_call is not None and self._grace_call.active():
            self._grace_call.cancel()
        self._grace_call = None

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_grace()
        # Nobody can attach to a finished session: give its reattach ring back now. The
        # session sits in reference cycles, and a quiet server may not collect them for long.
        self.ring = OutputRing(1)
        self.on_finished(self)
