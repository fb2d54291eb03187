"""Put the local terminal in raw mode and give it back intact on every way out.

Ways out: the ``with`` block ending (normal exit, remote exit, refusal,
network loss), an exception, SIGTERM, SIGHUP, SIGINT sent from elsewhere, and
interpreter exit (``atexit``). Restoring means: the saved termios settings,
the saved file status flags (the event loop makes stdin and stdout
non-blocking, and that flag is shared with the shell), and the reset
sequences for the modes the remote program left on (see `ScreenState`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import termios
import tty
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final

import attrs
from attrs import define

from pibridge.attach.screen_state import ScreenState

#: Signals after which the terminal must be restored before the process goes.
RESTORING_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)
#: Push the window title on entry and pop it on exit (xterm; ignored elsewhere).
TITLE_PUSH: Final = b"\x1b[22;0t"
TITLE_POP: Final = b"\x1b[23;0t"


def _write_all(fd: int, data: bytes) -> None:
    """Write everything even on a non-blocking fd; used only on the way out."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return
        view = view[written:]


@define(eq=False)
class RawTerminal:
    """Raw mode for ``input_fd`` with guaranteed restoration.

    When one of `RESTORING_SIGNALS` arrives, ``on_signal`` runs after the
    line discipline is restored (for instance to send a close, flush and stop
    the reactor, then leave the ``with`` block, which writes the resets);
    without it the terminal is restored at once and the process exits with
    ``128 + signal``.
    """

    input_fd: int = 0
    output_fd: int = 1
    screen: ScreenState = attrs.field(factory=ScreenState)
    on_signal: Callable[[int], None] | None = None
    _saved_attributes: list[Any] | None = attrs.field(init=False, default=None)
    _saved_flags: dict[int, int] = attrs.field(init=False, factory=dict)
    _saved_handlers: dict[int, Any] = attrs.field(init=False, factory=dict)
    _active: bool = attrs.field(init=False, default=False)
    _line_restored: bool = attrs.field(init=False, default=False)

    @property
    def active(self) -> bool:
        return self._active

    def enter(self) -> None:
        if self._active:
            return
        self._saved_attributes = termios.tcgetattr(self.input_fd)
        for fd in {self.input_fd, self.output_fd}:
            self._saved_flags[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
        self._active = True
        self._line_restored = False
        atexit.register(self.restore)
        for signum in RESTORING_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._signalled)
        tty.setraw(self.input_fd, termios.TCSANOW)
        _write_all(self.output_fd, TITLE_PUSH)

    def restore(self) -> None:
        """Give the terminal back as it was; safe to call any number of times."""
        if not self._active:
            return
        self._active = False
        self.restore_line_discipline()
        for fd, flags in self._saved_flags.items():
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        _write_all(self.output_fd, self.screen.reset_sequence() + TITLE_POP)
        for signum, handler in self._saved_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._saved_handlers.clear()
        atexit.unregister(self.restore)

    def restore_line_discipline(self) -> None:
        """Only the termios settings: echo, line editing and Ctrl-C work again at once."""
        if self._saved_attributes is None or self._line_restored:
            return
        self._line_restored = True
        with contextlib.suppress(termios.error):
            termios.tcsetattr(self.input_fd, termios.TCSADRAIN, self._saved_attributes)

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if self.on_signal is not None:
            # The graceful path flushes the program's last output, then calls
            # `restore`; the resets must come after that output, not before.
            self.restore_line_discipline()
            self.on_signal(signum)
            return
        self.restore()
        os._exit(128 + signum)

    def __enter__(self) -> RawTerminal:
        self.enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.restore()
