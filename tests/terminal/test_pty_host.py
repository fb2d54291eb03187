"""The PTY host with real PTYs: byte parity, size, input, exit, backpressure, termination."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import struct
import sys
import termios
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from ptyharness import process_state, processes_in_group, run_in_local_pty
from twisted.internet import defer, task
from twisted.internet.testing import MemoryReactorClock

from pibridge.terminal.pty_host import (
    INPUT_HIGH_WATER,
    ExitStatus,
    PtyHost,
    PtySpec,
)

COLS, ROWS = 97, 31
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp"}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class Sink:
    """Collects output and lets a test await a condition on it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0
        self._waiters: list[tuple[Callable[[bytes], bool], defer.Deferred[None]]] = []

    def __call__(self, chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        self.data += chunk
        self.writes += 1
        pending = []
        for predicate, waiter in self._waiters:
            if predicate(bytes(self.data)):
                waiter.callback(None)
            else:
                pending.append((predicate, waiter))
        self._waiters = pending

    def wait_for(
        self, predicate: Callable[[bytes], bool], timeout: float = 10
    ) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        if predicate(bytes(self.data)):
            waiter.callback(None)
        else:
            self._waiters.append((predicate, waiter))
        return waiter.addTimeout(timeout, _reactor())

    def contains(self, marker: bytes, timeout: float = 10) -> defer.Deferred[None]:
        return self.wait_for(lambda data: marker in data, timeout)


def _spawn(argv: list[str], tmp_path: Path, **kwargs: Any) -> tuple[PtyHost, Sink]:
    sink = Sink()
    spec = PtySpec(argv, str(tmp_path), "xterm-256color", COLS, ROWS, ENV)
    return PtyHost.spawn(_reactor(), spec, sink, **kwargs), sink


async def _run_to_end(argv: list[str], tmp_path: Path) -> tuple[bytes, ExitStatus]:
    host, sink = _spawn(argv, tmp_path)
    status = await host.when_ended().addTimeout(20, _reactor())
    return bytes(sink.data), status


def _python(source: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(source)]


def _direct(argv: list[str], tmp_path: Path) -> bytes:
    env = {**ENV, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
    output, _ = run_in_local_pty(argv, cols=COLS, rows=ROWS, env=env, cwd=str(tmp_path))
    return output


ALL_BYTES_SPLIT = _python(
    """
    import os, time
    text = "héllo wörld ✓ 日本語 🎉 ".encode()
    data = bytes(range(256)) + text * 40 + bytes(range(255, -1, -1))
    for start in range(0, len(data), 7):
        os.write(1, data[start:start + 7])
        if start % 91 == 0:
            time.sleep(0.001)
    """
)

CURSES_DRAWING = _python(
    """
    import curses
    def draw(screen):
        curses.start_color()
        curses.init_pair(1, curses.COLOR_RED, curses.COLOR_BLACK)
        screen.border()
        screen.addstr(2, 4, "pibridge parity", curses.color_pair(1) | curses.A_BOLD)
        screen.addstr(4, 4, "日本語 ✓ wide and narrow")
        height, width = screen.getmaxyx()
        screen.addstr(6, 4, f"{width}x{height}")
        screen.refresh()
    curses.wrapper(draw)
    """
)

PRINTF_ALL_BYTES = ["sh", "-c", "printf '" + "".join(f"\\{b:03o}" for b in range(256)) + "'"]


@pytest.mark.parametrize(
    "argv",
    [ALL_BYTES_SPLIT, PRINTF_ALL_BYTES, CURSES_DRAWING],
    ids=["bytes-and-split-utf8", "printf-0-255", "curses"],
)
@pytest_twisted.ensureDeferred
async def test_output_is_byte_identical_to_a_direct_run(argv: list[str], tmp_path: Path) -> None:
    expected = _direct(argv, tmp_path)
    assert len(expected) > 200
    output, status = await _run_to_end(argv, tmp_path)
    assert status == ExitStatus(0, None)
    assert output == expected


@pytest_twisted.ensureDeferred
async def test_program_starts_at_the_client_size_and_sees_resizes(tmp_path: Path) -> None:
    host, sink = _spawn(
        _python(
            """
            import os, signal, sys
            def report(*_):
                size = os.get_terminal_size(0)
                os.write(1, f"size {size.columns}x{size.lines}\\n".encode())
            signal.signal(signal.SIGWINCH, report)
            report()
            os.write(1, b"ready\\n")
            while True:
                signal.pause()
            """
        ),
        tmp_path,
    )
    await sink.contains(b"ready")
    assert f"size {COLS}x{ROWS}".encode() in sink.data
    host.resize(140, 50)
    await sink.contains(b"size 140x50")
    host.resize(20, 5)
    await sink.contains(b"size 20x5")
    status = await host.terminate(grace=0.5).addTimeout(10, _reactor())
    assert status.signal == signal.SIGHUP


@pytest_twisted.ensureDeferred
async def test_each_input_object_reaches_the_program_in_one_read(tmp_path: Path) -> None:
    host, sink = _spawn(
        _python(
            """
            import os, sys, tty
            tty.setraw(0)
            os.write(1, b"ready\\n")
            while True:
                chunk = os.read(0, 65536)
                os.write(1, b"got %d %s\\r\\n" % (len(chunk), chunk[:3].hex().encode()))
                if chunk == b"\\x04":
                    break
            """
        ),
        tmp_path,
    )
    await sink.contains(b"ready")
    host.write_input(b"\x1b[A")
    await sink.contains(b"got 3 1b5b41")
    paste = b"\x1b[200~" + b"x" * 2000 + b"\x1b[201~"
    host.write_input(paste)
    await sink.contains(b"got 2012 1b5b32")
    host.write_input(b"\x1b")
    await sink.contains(b"got 1 1b\r\n")
    host.write_input(b"\x04")
    status = await host.when_ended().addTimeout(10, _reactor())
    assert status == ExitStatus(0, None)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sh", "-c", "exit 7"], ExitStatus(7, None)),
        (["sh", "-c", "exit 0"], ExitStatus(0, None)),
        (["sh", "-c", "kill -TERM $$"], ExitStatus(None, signal.SIGTERM)),
        (["sh", "-c", "kill -KILL $$"], ExitStatus(None, signal.SIGKILL)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_exit_code_and_signal_are_reported(
    argv: list[str], expected: ExitStatus, tmp_path: Path
) -> None:
    _, status = await _run_to_end(argv, tmp_path)
    assert status == expected


async def _until(condition: Callable[[], bool], timeout: float = 10, step: float = 0.02) -> None:
    """Poll a condition that no event announces (the state of another process)."""
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not reached")
        await task.deferLater(reactor, step, lambda: None)


@pytest_twisted.ensureDeferred
async def test_paused_host_blocks_a_flood_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    host, sink = _spawn(["yes"], tmp_path)
    await sink.wait_for(lambda data: len(data) > 1024 * 1024)
    host.pauseProducing()

    samples: list[tuple[str, str, int]] = []

    def blocked_in_write() -> bool:
        samples.append((*process_state(host.pid), len(sink.data)))
        recent = samples[-5:]
        return len(recent) == 5 and all(
            state == "S" and call == "1" and size == recent[0][2] for state, call, size in recent
        )

    await _until(blocked_in_write)
    received_while_paused = len(sink.data)

    host.write_input(b"\x03")
    resumed_at = len(sink.data)
    host.resumeProducing()
    status = await host.when_ended().addTimeout(5, _reactor())
    assert status.signal == signal.SIGINT
    assert received_while_paused == resumed_at
    assert len(sink.data) - resumed_at < 512 * 1024, "the flood stopped promptly"


@pytest_twisted.ensureDeferred
async def test_terminate_escalates_and_reaps_a_program_that_ignores_signals(
    tmp_path: Path,
) -> None:
    stubborn = _python(
        """
        import os, signal, sys, time
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            while True:
                time.sleep(1)
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        while True:
            time.sleep(1)
        """
    )
    host, sink = _spawn(stubborn, tmp_path)
    await sink.contains(b"ready")
    group = host.pid
    assert len([p for p, state in processes_in_group(group) if state != "Z"]) == 2
    clock_start = _reactor().seconds()
    status = await host.terminate(grace=0.2).addTimeout(10, _reactor())
    assert status.signal == signal.SIGKILL
    assert _reactor().seconds() - clock_start >= 0.4
    with pytest.raises(ChildProcessError):
        os.waitpid(host.pid, os.WNOHANG)
    await _until(lambda: all(state == "Z" for _, state in processes_in_group(group)), timeout=5)
    own_zombies = [
        pid
        for pid, state in processes_in_group(group)
        if state == "Z" and _parent(pid) == os.getpid()
    ]
    assert own_zombies == []


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return -1
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@pytest_twisted.ensureDeferred
async def test_terminate_hangs_up_an_ordinary_program_at_once(tmp_path: Path) -> None:
    host, sink = _spawn(["sh", "-c", "echo ready; exec sleep 60"], tmp_path)
    await sink.contains(b"ready")
    status = await host.terminate(grace=5).addTimeout(4, _reactor())
    assert status.signal == signal.SIGHUP


class _Pushback:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_input_backlog_pauses_the_input_producer_in_order(tmp_path: Path) -> None:
    """A program that does not read makes writes queue; the feeder is paused, nothing lost."""
    host, sink = _spawn(
        _python(
            """
            import hashlib, os, signal, tty
            tty.setraw(0)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            os.write(1, b"ready\\n")
            signal.sigwait({signal.SIGUSR1})
            total = hashlib.sha256()
            count = 0
            while count < EXPECTED:
                chunk = os.read(0, 65536)
                total.update(chunk)
                count += len(chunk)
            os.write(1, b"done %d %s\\r\\n" % (count, total.hexdigest().encode()))
            """.replace("EXPECTED", str(300 * 1000))
        ),
        tmp_path,
    )
    feeder = _Pushback()
    host.registerProducer(feeder, True)
    await sink.contains(b"ready")

    # The program reads nothing until SIGUSR1, so the first writes fill the PTY.
    blocks = [bytes([65 + i % 26]) * 1000 for i in range(300)]
    for block in blocks:
        host.write_input(block)
    assert host.pending_input > INPUT_HIGH_WATER
    assert feeder.paused == 1
    digest = hashlib.sha256(b"".join(blocks)).hexdigest().encode()
    os.kill(host.pid, signal.SIGUSR1)
    await sink.contains(b"done 300000 " + digest, timeout=20)
    assert feeder.resumed == 1
    assert host.pending_input == 0
    await host.when_ended().addTimeout(10, _reactor())


class _FakeProcessTransport:
    pid = 4242
    connected = True
    disconnecting = False


class _RecordingReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.masters: list[int] = []

    def spawnProcess(
        self,
        protocol: Any,
        executable: Any,
        args: Any,
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: Any = False,
        childFDs: Any = None,
    ) -> Any:
        master, slave, name = usePTY
        self.masters.append(master)
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
        self.calls.append(
            dict(executable=executable, args=args, env=env, path=path, size=(cols, rows), name=name)
        )
        os.close(slave)
        transport = _FakeProcessTransport()
        protocol.makeConnection(transport)
        return transport


def test_spawn_sets_size_before_starting_and_passes_term_and_lang(tmp_path: Path) -> None:
    reactor = _RecordingReactor()
    spec = PtySpec(
        ["pi", "--flag"],
        str(tmp_path),
        "xterm-kitty",
        180,
        46,
        {"PATH": "/bin", "LANG": "de_DE.UTF-8"},
    )
    host = PtyHost.spawn(reactor, spec, lambda data: None)
    (call,) = reactor.calls
    assert call["size"] == (180, 46)
    assert call["args"] == ["pi", "--flag"]
    assert call["path"] == str(tmp_path)
    assert call["env"] == {"PATH": "/bin", "LANG": "de_DE.UTF-8", "TERM": "xterm-kitty"}
    assert call["name"].startswith("/dev/pts/")
    assert host.pid == 4242
    os.close(reactor.masters[0])
    assert PtySpec(["x"], "/", "xterm", 1, 1).environment() == {"LANG": "C.UTF-8", "TERM": "xterm"}


@pytest_twisted.ensureDeferred
async def test_terminate_reaps_a_flooding_program_while_output_is_paused(tmp_path: Path) -> None:
    host, sink = _spawn(["yes"], tmp_path)
    await sink.wait_for(lambda data: len(data) > 64 * 1024)
    host.pauseProducing()
    status = await host.terminate(grace=0.2).addTimeout(10, _reactor())
    assert status.signal in (signal.SIGHUP, signal.SIGTERM, signal.SIGKILL)
    assert [pid for pid, state in processes_in_group(host.pid) if state != "Z"] == []
    host.write_input(b"ignored after the end")
    host.resize(10, 10)
