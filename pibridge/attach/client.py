"""The attach client's session logic, independent of how the four tracks are carried.

`TerminalClient` talks to a `Channels` object (the shape of
`pibridge.attach.moq_link.AttachLink`: send control, input and resize,
acknowledge shown output, pause output) and is fed by whoever carries the
tracks (``control_received``, ``output_received``, ``connection_lost``).
Wiring one attach::

    client = TerminalClient(reactor, terminal, session_id=sid, group=g, token=t)
    link = AttachLink(moq, client.open_request(epoch), client.output_received,
                      client.control_received, client.connection_lost)
    client.attach(link)
    link.start()
    client.start()

Tests use lists in memory for the channels.

Lifecycle, as a table (`TRANSITIONS`): ``new -start-> opening -open_ack->
open``; from opening or open, a close, an error, a heartbeat timeout, the
connection dropping, local input ending or a local signal lead to ``closed``.
"""

from __future__ import annotations

import enum
import signal as signals
from collections.abc import Callable
from typing import Final, Protocol

import attrs
from attrs import define, frozen
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer, IReactorTime
from zope.interface import implementer

from pibridge.attach.local_terminal import InputProducer, LocalTerminal
from pibridge.attach.resize import ResizeCoalescer
from pibridge.attach.screen_state import ScreenState
from pibridge.attach.status import StatusLine
from pibridge.terminal import control
from pibridge.terminal.control import CloseReason
from pibridge.terminal.heartbeat import Heartbeat

#: Exit statuses of ``pibridge-attach`` when the remote program gave none.
EXIT_REFUSED: Final = 77
EXIT_CONNECTION: Final = 255


class Channels(Protocol):
    """Outbound side of the tracks, provided by the transport glue."""

    def send_control(self, message: control.Message) -> None: ...

    def send_input(self, data: bytes) -> None:
        """One object on the stdin track."""

    def send_resize(self, cols: int, rows: int) -> None: ...

    def register_input_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the keyboard) while the stdin track is saturated."""

    def shown_output(self, count: int) -> None:
        """``count`` more output bytes reached the local terminal."""

    def pause_output(self) -> None:
        """The local terminal is behind: stop delivering output for now."""

    def resume_output(self) -> None: ...

    def close(self) -> None:
        """Tear the transport down; called once the session is over."""


@implementer(IPushProducer)
@define(eq=False)
class _OutputFlow:
    """The local writer's backpressure, passed on to the output track."""

    client: TerminalClient

    def pauseProducing(self) -> None:
        if self.client.channels is not None:
            self.client.channels.pause_output()

    def resumeProducing(self) -> None:
        if self.client.channels is not None:
            self.client.channels.resume_output()

    def stopProducing(self) -> None:
        self.pauseProducing()


class State(enum.Enum):
    NEW = "new"
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"


class Event(enum.Enum):
    START = "start"
    OPEN_ACK = "open_ack"
    END = "end"


TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.NEW, Event.START): State.OPENING,
    (State.OPENING, Event.OPEN_ACK): State.OPEN,
    (State.NEW, Event.END): State.CLOSED,
    (State.OPENING, Event.END): State.CLOSED,
    (State.OPEN, Event.END): State.CLOSED,
}


@frozen
class Outcome:
    """How the attach ended: the process exit status and a sentence for the user."""

    exit_code: int
    reason: str
    message: str


def outcome_of_close(close: control.Close) -> Outcome:
    if close.reason == CloseReason.REMOTE_EXIT:
        if close.signal is not None:
            name = _signal_name(close.signal)
            return Outcome(128 + close.signal, close.reason, f"remote program killed by {name}")
        code = close.exit_code if close.exit_code is not None else 0
        return Outcome(code & 0xFF, close.reason, f"remote program exited with status {code}")
    if close.reason == CloseReason.REFUSED:
        detail = f": {close.message}" if close.message else ""
        return Outcome(EXIT_REFUSED, close.reason, f"the bot refused the session{detail}")
    detail = f" ({close.message})" if close.message else ""
    return Outcome(EXIT_CONNECTION, close.reason, f"session closed: {close.reason}{detail}")


def _signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


@define(eq=False)
class TerminalClient:
    clock: IReactorTime
    terminal: LocalTerminal
    session_id: str
    group: str
    token: str = attrs.field(repr=False)
    channels: Channels | None = None
    term: str = "xterm-256color"
    write_error: Callable[[str], object] = lambda text: None
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 20.0
    #: Where a link that went silent is reported, if something can reattach;
    #: without it silence ends the attach.
    on_silent: Callable[[str], None] | None = None
    screen: ScreenState = attrs.field(factory=ScreenState)
    state: State = attrs.field(init=False, default=State.NEW)
    #: Output bytes shown so far: where a reattach resumes.
    output_offset: int = attrs.field(init=False, default=0)
    outcome: Outcome | None = attrs.field(init=False, default=None)
    finished: defer.Deferred[Outcome] = attrs.field(init=False, factory=defer.Deferred)
    status: StatusLine = attrs.field(init=False)
    input_producer: InputProducer = attrs.field(init=False)
    _resizer: ResizeCoalescer = attrs.field(init=False)
    _heartbeat: Heartbeat = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.status = StatusLine(self.terminal.write_output, self.screen, self.write_error)
        self.input_producer = InputProducer(self.terminal, self._input_paused_changed)
        self._resizer = ResizeCoalescer(self.clock, self.terminal.size, self._send_resize)
        self._heartbeat = Heartbeat(
            self.clock,
            self._send_control,
            self._heartbeat_lost,
            self.heartbeat_interval,
            self.heartbeat_timeout,
        )
        self.terminal.register_output_producer(_OutputFlow(self))

    def _move(self, event: Event) -> bool:
        following = TRANSITIONS.get((self.state, event))
        if following is None:
            return False
        self.state = following
        return True

    # -- starting --------------------------------------------------------------------

    def open_request(self, epoch: int = 0, resume_offset: int | None = None) -> control.Open:
        """The ``open`` for this attach, at the local terminal's current size."""
        cols, rows = self.terminal.size()
        self._resizer.last_sent = (cols, rows)
        return control.Open(
            session_id=self.session_id,
            agent_group_id=self.group,
            term=self.term,
            cols=cols,
            rows=rows,
            token=self.token,
            resume_offset=resume_offset,
            epoch=epoch,
        )

    def attach(self, channels: Channels) -> None:
        """Use ``channels`` from now on (the first attach, or a reattach)."""
        self.channels = channels
        channels.register_input_producer(self.input_producer)

    def start(self) -> None:
        """Begin reading the keyboard; the glue has sent `open_request` already."""
        if not self._move(Event.START):
            return
        self.terminal.start(self._local_input, self._local_input_closed)

    # -- inbound -----------------------------------------------------------------------

    def control_received(self, message: control.Message) -> None:
        self._heartbeat.heard()
        if isinstance(message, control.OpenAck):
            if message.session_id == self.session_id and (
                self._move(Event.OPEN_ACK) or self.state is State.OPEN
            ):
                self._heartbeat.start()  # again after a reattach
        elif isinstance(message, control.Close):
            self._finish(outcome_of_close(message))
        elif isinstance(message, control.Error):
            self._finish(
                Outcome(EXIT_REFUSED, CloseReason.REFUSED, f"{message.code}: {message.message}")
            )
        elif isinstance(message, control.Ping):
            self._send_control(self._heartbeat.ping_received(message))
        elif isinstance(message, control.Pong):
            self._heartbeat.pong_received(message)
        elif isinstance(message, control.Status):
            if message.state == control.StatusState.OK:
                self.status.clear()
            else:
                detail = f" ({message.detail})" if message.detail else ""
                self.status.show(f"connection {message.state}{detail}")

    def output_received(self, data: bytes) -> None:
        """Remote output: straight to the terminal, untouched."""
        if self.state is State.CLOSED:
            return
        self._heartbeat.heard()
        self.output_offset += len(data)
        self.screen.feed(data)
        self.terminal.write_output(data)
        self.status.flush()
        if self.channels is not None:
            self.channels.shown_output(len(data))

    def keep_alive(self) -> None:
        """A reattach is under way: the silence is known, not a dead peer."""
        self._heartbeat.heard()

    def connection_lost(self, why: str = "connection lost") -> None:
        self._finish(Outcome(EXIT_CONNECTION, CloseReason.NETWORK_ERROR, why))

    # -- outbound --------------------------------------------------------------------

    def window_changed(self) -> None:
        """Call on SIGWINCH."""
        if self.state in (State.OPENING, State.OPEN):
            self._resizer.changed()

    def _send_resize(self, cols: int, rows: int) -> None:
        if self.channels is not None:
            self.channels.send_resize(cols, rows)

    def _send_control(self, message: control.Message) -> None:
        if self.channels is not None:
            self.channels.send_control(message)

    def _local_input(self, data: bytes) -> None:
        if self.state in (State.OPENING, State.OPEN) and self.channels is not None:
            self.channels.send_input(data)

    def _local_input_closed(self) -> None:
        self._end_locally(CloseReason.USER_EXIT, "local input closed")

    def _input_paused_changed(self, paused: bool) -> None:
        if paused:
            self.status.show("connection slow, keyboard input waiting")
        else:
            self.status.clear()

    def _heartbeat_lost(self, reason: str) -> None:
        if self.on_silent is not None and self.state is State.OPEN:
            # A cut link that QUIC has not noticed yet: the session may still
            # be kept for us on the bot, so reattach rather than give up.
            self.on_silent("no answer from the bot")
            return
        self._end_locally(reason, "no answer from the bot")

    # -- ending ------------------------------------------------------------------------

    def close(self, signum: int | None = None) -> None:
        """The user ends the attach (SIGTERM/SIGHUP to the client)."""
        why = "attach ended by the user" if signum is None else f"{_signal_name(signum)} received"
        code = 128 + signum if signum is not None else 0
        self._end_locally(CloseReason.USER_EXIT, why, exit_code=code)

    def _end_locally(self, reason: str, why: str, exit_code: int | None = None) -> None:
        if self.state in (State.OPENING, State.OPEN):
            self._send_control(control.Close(self.session_id, reason, message=why))
        code = exit_code if exit_code is not None else EXIT_CONNECTION
        self._finish(Outcome(code, reason, f"session closed: {why}"))

    def _finish(self, outcome: Outcome) -> None:
        if not self._move(Event.END):
            return
        self._heartbeat.stop()
        self._resizer.stop()
        self.terminal.stop()
        self.outcome = outcome
        if self.channels is not None:
            self.channels.close()
        self.finished.callback(outcome)
