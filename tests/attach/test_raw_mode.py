"""Raw mode is restored on every exit path, checked on a real PTY."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

PROGRAM = Path(__file__).with_name("raw_mode_program.py")


def _read_until(master: int, marker: bytes, collected: bytearray, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while marker not in collected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{marker!r} not seen; got {bytes(collected)!r}")
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            collected += chunk


def _drain(master: int, collected: bytearray, timeout: float = 15) -> None:
    """Read until the PTY reports that every slave side is closed."""
    _read_until(master, b"\0never\0", collected, timeout)


@pytest.mark.parametrize(
    ("path", "returncode"),
    [
        ("normal", 0),
        ("exception", 1),
        ("exit", 3),
        ("sigterm", 128 + signal.SIGTERM),
        ("sighup", 128 + signal.SIGHUP),
        ("reactor-sigterm", 0),
    ],
)
def test_terminal_settings_are_restored(path: str, returncode: int) -> None:
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    flags_before = fcntl.fcntl(slave, fcntl.F_GETFL)
    assert before[3] & termios.ICANON

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, str(PROGRAM), path],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    collected = bytearray()
    try:
        _read_until(master, b"RAW", collected)
        during = termios.tcgetattr(slave)
        assert not during[3] & termios.ICANON, "raw mode was entered"
        assert not during[3] & termios.ECHO
        if path in ("sigterm", "reactor-sigterm"):
            process.send_signal(signal.SIGTERM)
        elif path == "sighup":
            process.send_signal(signal.SIGHUP)
        else:
            os.write(master, b"x")
        assert process.wait(timeout=15) == returncode
        after = termios.tcgetattr(slave)
        flags_after = fcntl.fcntl(slave, fcntl.F_GETFL)
        os.close(slave)
        slave = -1
        _drain(master, collected)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert after == before
    assert flags_after == flags_before, "O_NONBLOCK left on the shared terminal"
    tail = bytes(collected[collected.index(b"RAW") :])
    assert b"\x1b[?2004l" in tail
    assert b"\x1b[?25h" in tail
    assert b"\x1b[?2026l" in tail
    assert tail.count(b"\x1b[<1u") == 1, "the kitty keyboard push is popped exactly once"
    assert b"\x1b[23;0t" in tail
    if path == "reactor-sigterm":
        assert b"STOPPED" in tail
    else:
        assert b"\x18" in tail, "the unfinished sequence was cancelled first"
