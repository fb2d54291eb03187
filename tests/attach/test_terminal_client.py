"""The attach client's session logic over in-memory channels and an in-memory terminal."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactorClock

from pibridge.attach.client import EXIT_CONNECTION, EXIT_REFUSED, State, TerminalClient
from pibridge.terminal import control
from pibridge.terminal.control import Close, OpenAck, Ping, Pong, Status

SID = "123e4567-e89b-12d3-a456-426614174000"


class MemoryTerminal:
    def __init__(self) -> None:
        self.output = bytearray()
        self.cols, self.rows = 120, 40
        self.reading = False
        self.paused = False
        self.stopped = False
        self.output_producer: IPushProducer | None = None
        self.on_input: Callable[[bytes], None] | None = None
        self.on_input_closed: Callable[[], None] | None = None

    def start(self, on_input: Callable[[bytes], None], on_input_closed: Callable[[], None]) -> None:
        self.reading = True
        self.on_input, self.on_input_closed = on_input, on_input_closed

    def write_output(self, data: bytes) -> None:
        self.output += data

    def size(self) -> tuple[int, int]:
        return (self.cols, self.rows)

    def pause_input(self) -> None:
        self.paused = True

    def resume_input(self) -> None:
        self.paused = False

    def register_output_producer(self, producer: IPushProducer) -> None:
        self.output_producer = producer

    def unregister_output_producer(self) -> None:
        self.output_producer = None

    def stop(self) -> None:
        self.stopped = True

    def type(self, data: bytes) -> None:
        assert self.on_input is not None
        self.on_input(data)


class MemoryChannels:
    def __init__(self) -> None:
        self.control: list[control.Message] = []
        self.stdin: list[bytes] = []
        self.resizes: list[tuple[int, int]] = []
        self.shown = 0
        self.output_paused = False
        self.input_producer: IPushProducer | None = None
        self.closed = False

    def send_control(self, message: control.Message) -> None:
        self.control.append(message)

    def send_input(self, data: bytes) -> None:
        self.stdin.append(data)

    def send_resize(self, cols: int, rows: int) -> None:
        self.resizes.append((cols, rows))

    def register_input_producer(self, producer: IPushProducer) -> None:
        self.input_producer = producer

    def shown_output(self, count: int) -> None:
        self.shown += count

    def pause_output(self) -> None:
        self.output_paused = True

    def resume_output(self) -> None:
        self.output_paused = False

    def close(self) -> None:
        self.closed = True


def _client() -> tuple[
    MemoryReactorClock, TerminalClient, MemoryTerminal, MemoryChannels, list[str]
]:
    clock = MemoryReactorClock()
    terminal = MemoryTerminal()
    errors: list[str] = []
    client = TerminalClient(
        clock,
        terminal,
        SID,
        "team1",
        "tok",
        write_error=errors.append,
        heartbeat_interval=5,
        heartbeat_timeout=15,
    )
    channels = MemoryChannels()
    client.attach(channels)
    client.start()
    return clock, client, terminal, channels, errors


def test_open_request_carries_size_term_group_token_and_epoch() -> None:
    clock = MemoryReactorClock()
    terminal = MemoryTerminal()
    client = TerminalClient(clock, terminal, SID, "team1", "tok", term="xterm-kitty")
    request = client.open_request(epoch=9, resume_offset=100)
    assert request == control.Open(SID, "team1", "xterm-kitty", 120, 40, "tok", 100, epoch=9)


def test_each_keyboard_read_is_one_stdin_object() -> None:
    _, _, terminal, channels, _ = _client()
    reads = [b"a", b"\x1b[A", b"\x1b[200~pasted\ntext\x1b[201~", b"\x03", b"\x1b"]
    for data in reads:
        terminal.type(data)
    assert channels.stdin == reads


def test_output_is_written_untouched_and_acknowledged() -> None:
    _, client, terminal, channels, _ = _client()
    client.control_received(OpenAck(SID))
    chunks = [bytes(range(256)), b"\xe6\x97", b"\xa5 \x1b[?2004h", b"\x1b[3"]
    for chunk in chunks:
        client.output_received(chunk)
    assert bytes(terminal.output) == b"".join(chunks)
    assert channels.shown == client.output_offset == sum(map(len, chunks))
    assert client.state is State.OPEN


def test_remote_exit_ends_with_its_exit_code() -> None:
    _, client, terminal, channels, _ = _client()
    client.control_received(OpenAck(SID))
    client.control_received(Close(SID, "remote_exit", exit_code=3))
    assert client.finished.called
    assert client.outcome is not None
    assert client.outcome.exit_code == 3
    assert "status 3" in client.outcome.message
    assert channels.closed and terminal.stopped
    client.output_received(b"late")
    assert b"late" not in terminal.output


def test_remote_killed_by_signal_exits_128_plus_signal() -> None:
    _, client, _, _, _ = _client()
    client.control_received(Close(SID, "remote_exit", signal=9))
    assert client.outcome is not None
    assert client.outcome.exit_code == 137
    assert "SIGKILL" in client.outcome.message


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (Close(SID, "refused", message="the token has expired"), EXIT_REFUSED, "expired"),
        (control.Error("refused", "no token was presented"), EXIT_REFUSED, "no token"),
        (Close(SID, "server_shutdown"), EXIT_CONNECTION, "server_shutdown"),
    ],
)
def test_refusals_and_shutdowns_say_why(message: control.Message, code: int, words: str) -> None:
    _, client, _, _, _ = _client()
    client.control_received(message)
    assert client.outcome is not None
    assert client.outcome.exit_code == code
    assert words in client.outcome.message


def test_network_loss_ends_the_session() -> None:
    _, client, _, _channels, _ = _client()
    client.connection_lost("the connection closed")
    assert client.outcome is not None
    assert client.outcome.exit_code == EXIT_CONNECTION
    assert client.outcome.reason == "network_error"


def test_heartbeat_answers_pings_and_times_out_a_silent_bot() -> None:
    clock, client, _, channels, _ = _client()
    client.control_received(OpenAck(SID))
    client.control_received(Ping(4, 1.0))
    assert Pong(4, 1.0) in channels.control
    clock.advance(15)
    assert client.outcome is not None
    assert client.outcome.reason == "heartbeat_timeout"
    closes = [m for m in channels.control if isinstance(m, Close)]
    assert closes and closes[0].reason == "heartbeat_timeout"


def test_window_changes_send_coalesced_resizes() -> None:
    clock, client, terminal, channels, _ = _client()
    for cols in range(121, 140):
        terminal.cols = cols
        client.window_changed()
    clock.advance(1)
    assert channels.resizes[0] == (121, 40)
    assert channels.resizes[-1] == (139, 40)
    assert len(channels.resizes) <= 2


def test_saturated_stdin_track_pauses_the_keyboard_and_shows_why() -> None:
    _, _, terminal, channels, _ = _client()
    assert channels.input_producer is not None
    channels.input_producer.pauseProducing()
    assert terminal.paused
    assert b"\x1b]2;pibridge: connection slow" in terminal.output
    channels.input_producer.resumeProducing()
    assert not terminal.paused


def test_slow_local_terminal_pauses_output_track() -> None:
    _, _, terminal, channels, _ = _client()
    assert terminal.output_producer is not None
    terminal.output_producer.pauseProducing()
    assert channels.output_paused
    terminal.output_producer.resumeProducing()
    assert not channels.output_paused


def test_status_never_lands_inside_an_escape_sequence_and_restores_title() -> None:
    _, client, terminal, _, _ = _client()
    client.output_received(b"\x1b]0;pi - project\x07hello \x1b[3")
    client.control_received(Status("slow", SID, "2 s behind"))
    assert terminal.output.endswith(b"\x1b[3"), "nothing injected mid-sequence"
    client.output_received(b"1mred")
    assert terminal.output.endswith(b"\x1b[31mred\x1b]2;pibridge: connection slow (2 s behind)\x07")
    client.control_received(Status("ok", SID))
    assert terminal.output.endswith(b"\x1b]2;pi - project\x07")


def test_local_signal_closes_with_user_exit() -> None:
    _, client, _, channels, _ = _client()
    client.control_received(OpenAck(SID))
    client.close(signum=15)
    assert client.outcome is not None
    assert client.outcome.exit_code == 143
    assert isinstance(channels.control[-1], Close)
    assert channels.control[-1].reason == "user_exit"
