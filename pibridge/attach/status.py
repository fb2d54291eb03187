"""Telling the user about the connection without touching pi's screen.

pi draws inline (no alternate screen) and keeps its own idea of where the
cursor is, so any byte the client adds to the grid (a status row, even a
save/restore-cursor dance) can shift or overwrite its drawing. Two channels
are safe instead:

* while the session runs, the window title (OSC 2). It is not part of the
  grid, and it is written only between whole sequences of the remote stream
  (`ScreenState.at_boundary`), never inside one. When the condition clears,
  the program's own last title is put back;
* when the session ends, after the terminal is restored, one plain line on
  stderr saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
from attrs import define

from pibridge.attach.screen_state import ScreenState

TITLE_PREFIX: Final = "pibridge: "
_MAX_TITLE: Final = 200


def title_sequence(text: str) -> bytes:
    clean = "".join(c for c in text if c.isprintable())[:_MAX_TITLE]
    return b"\x1b]2;" + clean.encode("utf-8") + b"\x07"


@define(eq=False)
class StatusLine:
    write_raw: Callable[[bytes], object]
    screen: ScreenState
    write_error: Callable[[str], object]
    shown: str | None = attrs.field(init=False, default=None)
    _wanted: str | None = attrs.field(init=False, default=None)
    _dirty: bool = attrs.field(init=False, default=False)

    def show(self, text: str) -> None:
        """Show a condition (slow, reconnecting) until `clear`."""
        if text != self._wanted:
            self._wanted = text
            self._dirty = True
            self.flush()

    def clear(self) -> None:
        if self._wanted is not None:
            self._wanted = None
            self._dirty = True
            self.flush()

    def flush(self) -> None:
        """Write the pending change if the remote stream is between sequences."""
        if not self._dirty or not self.screen.at_boundary:
            return
        self._dirty = False
        if self._wanted is None:
            self.write_raw(title_sequence(self.screen.title or ""))
        else:
            self.write_raw(title_sequence(TITLE_PREFIX + self._wanted))
        self.shown = self._wanted

    def final(self, text: str) -> None:
        """The last word, for after the terminal is restored: one line on stderr."""
        self.write_error(f"\r\npibridge-attach: {text}\n")
