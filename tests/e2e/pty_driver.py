"""Drive a program in a local PTY as a terminal would, and keep every byte it writes.

The same driver runs a program directly and ``pibridge-attach`` running it
remotely, so the two byte streams can be compared. Keys are sent only after
the output they answer has arrived (`expect`), so line-discipline echo lands
at the same place in both streams.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pibridge.attach.screen_state import ScreenState

#: What pibridge-attach writes around the remote program's own bytes.
TITLE_PUSH = b"\x1b[22;0t"
TITLE_POP = b"\x1b[23;0t"
#: The client's own window-title notices ("pibridge: connection lost, ...") and
#: the empty title it puts back when the condition clears.
CLIENT_TITLES = re.compile(rb"\x1b\]2;(?:pibridge: [^\x07]*)?\x07")


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@attrs.define(eq=False)
class PtyRun:
    """One program on a fresh PTY; its stderr may go to a pipe instead (`stderr_pipe`)."""

    argv: Sequence[str]
    cols: int = 80
    rows: int = 24
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stderr_pipe: bool = False
    output: bytearray = attrs.field(factory=bytearray, init=False)
    master: int = attrs.field(default=-1, init=False)
    #: The terminal's line discipline before the program ran, to compare after.
    initial_modes: list[Any] = attrs.field(factory=list, init=False)
    process: subprocess.Popen[bytes] = attrs.field(init=False)
    _cursor: int = attrs.field(default=0, init=False)
    _eof: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        self.master, slave = os.openpty()
        set_size(slave, self.cols, self.rows)
        self.initial_modes = termios.tcgetattr(slave)

        def take_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        try:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=slave,
                stdout=slave,
                stderr=subprocess.PIPE if self.stderr_pipe else slave,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=take_terminal,
            )
        finally:
            os.close(slave)
        os.set_blocking(self.master, False)

    def pump(self, wait: float) -> bool:
        """Read what is there (waiting at most ``wait``); False once the PTY is closed."""
        if self._eof:
            return False
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                return True
            except OSError:
                self._eof = True
                return False
            if not chunk:
                self._eof = True
                return False
            self.output += chunk

    def expect(self, needle: bytes | re.Pattern[bytes], timeout: float = 15.0) -> int:
        """Wait for ``needle`` after the previous match; return where it ends."""
        deadline = time.monotonic() + timeout
        open_ = True
        while True:
            if isinstance(needle, bytes):
                at = self.output.find(needle, self._cursor)
                end = -1 if at < 0 else at + len(needle)
            else:
                found = needle.search(self.output, self._cursor)
                end = -1 if found is None else found.end()
            if end >= 0:
                self._cursor = end
                return end
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not open_:
                tail = bytes(self.output[-400:])
                raise AssertionError(f"never saw {needle!r}; last output: {tail!r}")
            open_ = self.pump(min(remaining, 0.2))

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                select.select([], [self.master], [], 1.0)
                self.pump(0)
                continue
            view = view[written:]

    def resize(self, cols: int, rows: int) -> None:
        """As a terminal window does: the kernel signals the foreground group."""
        set_size(self.master, cols, rows)

    def modes(self) -> list[Any]:
        """The terminal's line discipline now."""
        return termios.tcgetattr(self.master)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 20.0) -> int:
        """Read to the end of the output and return the exit status."""
        deadline = time.monotonic() + timeout
        while self.pump(0.2):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"{self.argv[0]} did not end; output: {bytes(self.output[-400:])!r}"
                )
            if self.process.poll() is not None:
                # The child is gone; whatever it left is still readable.
                while self.pump(0.05):
                    pass
                break
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def stderr(self) -> str:
        if self.process.stderr is None:
            return ""
        return self.process.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def close(self) -> None:
        self.kill()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        if self.process.stderr is not None:
            self.process.stderr.close()


def as_attach_shows(program_output: bytes) -> bytes:
    """What pibridge-attach writes for a program that wrote ``program_output``.

    The client pushes the window title first and, at exit, resets exactly the
    modes the program left on (as its screen model says) and pops the title.
    """
    screen = ScreenState()
    screen.feed(program_output)
    return TITLE_PUSH + program_output + screen.reset_sequence() + TITLE_POP


def without_client_titles(attach_output: bytes) -> bytes:
    """Drop the client's own status notices, which travel as window titles."""
    return CLIENT_TITLES.sub(b"", attach_output)
