"""The real stdin reader and stdout writer over pipes: one object per read, backpressure."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from pibridge.attach.local_terminal import StdioTerminal


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


@pytest.fixture
def pipes() -> Iterator[tuple[int, int, int, int]]:
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    yield stdin_read, stdin_write, stdout_read, stdout_write
    for fd in (stdin_read, stdin_write, stdout_read, stdout_write):
        with contextlib.suppress(OSError):
            os.close(fd)


async def _until(condition: Any, timeout: float = 5) -> None:
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not reached")
        await task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_reads_become_objects_and_pausing_stops_reading(
    pipes: tuple[int, int, int, int],
) -> None:
    stdin_read, stdin_write, _, stdout_write = pipes
    terminal = StdioTerminal(_reactor(), stdin_read, stdout_write)
    reads: list[bytes] = []
    closed = defer.Deferred[None]()
    terminal.start(reads.append, lambda: closed.callback(None))
    os.write(stdin_write, b"\x1b[A")
    await _until(lambda: reads == [b"\x1b[A"])
    terminal.pause_input()
    os.write(stdin_write, b"typed while paused")
    await task.deferLater(_reactor(), 0.1, lambda: None)
    assert reads == [b"\x1b[A"], "nothing is read while paused"
    terminal.resume_input()
    await _until(lambda: len(reads) == 2)
    assert reads[1] == b"typed while paused"
    os.close(stdin_write)
    await closed.addTimeout(5, _reactor())
    await terminal.when_closed().addTimeout(5, _reactor())


@pytest_twisted.ensureDeferred
async def test_slow_terminal_pauses_the_output_producer(
    pipes: tuple[int, int, int, int],
) -> None:
    stdin_read, _, stdout_read, stdout_write = pipes
    terminal = StdioTerminal(_reactor(), stdin_read, stdout_write)
    producer = Producer()
    terminal.register_output_producer(producer)
    terminal.start(lambda data: None, lambda: None)
    chunk = b"x" * 16384
    for _ in range(64):  # 1 MiB: far more than the pipe holds
        terminal.write_output(chunk)
        if producer.paused:
            break
    assert producer.paused == 1, "the writer asked the network to stop"
    os.set_blocking(stdout_read, False)
    drained = bytearray()

    def drain_and_check() -> bool:
        with contextlib.suppress(BlockingIOError):
            drained.extend(os.read(stdout_read, 1 << 20))
        return producer.resumed >= 1

    await _until(drain_and_check)
    assert producer.resumed == 1
    terminal.write_output(b"the end")
    terminal.stop()
    flushed = terminal.when_closed()
    await _until(lambda: drain_and_check() and flushed.called)
    assert drained.endswith(b"the end")
    assert set(drained[:-7]) == {ord("x")}


@pytest_twisted.ensureDeferred
async def test_output_goes_out_at_once_and_in_order_through_a_backlog(
    pipes: tuple[int, int, int, int],
) -> None:
    stdin_read, _, stdout_read, stdout_write = pipes
    terminal = StdioTerminal(_reactor(), stdin_read, stdout_write)
    terminal.start(lambda data: None, lambda: None)
    os.set_blocking(stdout_read, False)
    terminal.write_output(b"echo")
    # A keystroke's echo reaches the terminal in the same reactor turn.
    assert os.read(stdout_read, 100) == b"echo"

    pieces = [b"%06d:" % index + b"y" * 3000 for index in range(400)]  # ~1.2 MB: a backlog
    for piece in pieces:
        terminal.write_output(piece)
    drained = bytearray()
    expected = b"".join(pieces)

    def drain() -> bool:
        with contextlib.suppress(BlockingIOError):
            drained.extend(os.read(stdout_read, 1 << 20))
        if len(drained) == len(expected):
            terminal.write_output(b"|after")
        return len(drained) >= len(expected) + len(b"|after")

    await _until(drain)
    assert bytes(drained) == expected + b"|after"
    terminal.stop()
    await terminal.when_closed().addTimeout(5, _reactor())
