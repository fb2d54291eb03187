"""What the remote program has switched on in the local terminal, read from its output.

The attach client writes the remote bytes untouched, but it must still know
two things about them: whether the stream is between escape sequences (only
there may the client inject its own status sequence), and which terminal modes
the program turned on, so that a session ending abruptly (network loss, kill)
still leaves the user's shell usable. pi turns on bracketed paste, the kitty
keyboard protocol (one push), xterm modifyOtherKeys, synchronized output and
a hidden cursor, and sets the title and a progress indicator.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs
from attrs import define

ESC: Final = 0x1B
ESC_BYTE: Final = b"\x1b"
BEL: Final = 0x07
CAN: Final = b"\x18"
STRING_TERMINATOR: Final = b"\x1b\\"
_MAX_SEQUENCE: Final = 512
#: DEC private modes worth undoing if the program left them on.
_TRACKED_PRIVATE_MODES: Final = frozenset(
    {"25", "1000", "1002", "1003", "1004", "1006", "1015", "1049", "2004", "2026"}
)


class _State(enum.Enum):
    GROUND = enum.auto()
    ESCAPE = enum.auto()
    CSI = enum.auto()
    OSC = enum.auto()
    STRING = enum.auto()  # DCS, SOS, PM, APC: ignored until ST
    STRING_ESCAPE = enum.auto()
    OSC_ESCAPE = enum.auto()


@define(eq=False)
class ScreenState:
    """Feeds on output bytes; answers where it is safe to inject and what to reset."""

    kitty_keyboard_depth: int = 0
    modify_other_keys: bool = False
    private_modes: dict[str, bool] = attrs.field(factory=dict)
    title: str | None = None
    progress_active: bool = False
    _state: _State = _State.GROUND
    _sequence: bytearray = attrs.field(factory=bytearray)
    _utf8_remaining: int = 0

    @property
    def at_boundary(self) -> bool:
        """True between sequences and characters: a whole sequence may be inserted here."""
        return self._state is _State.GROUND and self._utf8_remaining == 0

    def feed(self, data: bytes) -> None:
        # Plain text is most of any output: between escapes only the UTF-8
        # position matters, so runs without ESC are skipped at C speed.
        index, size = 0, len(data)
        while index < size:
            if self._state is _State.GROUND:
                escape = data.find(ESC_BYTE, index)
                end = size if escape < 0 else escape
                if end > index:
                    self._ground_run(data, index, end)
                if escape < 0:
                    return
                index = escape
            self._step(data[index])
            index += 1

    def _ground_run(self, data: bytes, start: int, end: int) -> None:
        """The UTF-8 state after ``data[start:end]`` (no ESC in it), as stepping would leave it.

        A byte that is not a continuation byte sets the state regardless of what
        came before, and four continuation bytes in a row end any sequence, so
        only the tail needs stepping.
        """
        last = end - 1
        limit = max(start, end - 4)
        while last >= limit and 0x80 <= data[last] < 0xC0:
            last -= 1
        if last >= limit:
            tail = data[last:end]
        elif end - start <= 4:
            tail = data[start:end]
        else:
            self._utf8_remaining = 0
            return
        for byte in tail:
            self._step(byte)

    def _step(self, byte: int) -> None:
        state = self._state
        if state is _State.GROUND:
            if byte == ESC:
                self._utf8_remaining = 0
                self._state = _State.ESCAPE
            elif self._utf8_remaining and 0x80 <= byte < 0xC0:
                self._utf8_remaining -= 1
            elif 0xC2 <= byte < 0xE0:
                self._utf8_remaining = 1
            elif 0xE0 <= byte < 0xF0:
                self._utf8_remaining = 2
            elif 0xF0 <= byte < 0xF5:
                self._utf8_remaining = 3
            else:
                self._utf8_remaining = 0
        elif state is _State.ESCAPE:
            self._sequence.clear()
            if byte == ord("["):
                self._state = _State.CSI
            elif byte == ord("]"):
                self._state = _State.OSC
            elif byte in b"PX^_":
                self._state = _State.STRING
            elif byte == ESC:
                self._state = _State.ESCAPE
            elif 0x20 <= byte < 0x30:
                pass  # intermediate bytes of a short escape such as ESC ( B
            else:
                self._state = _State.GROUND
        elif state is _State.CSI:
            if 0x40 <= byte <= 0x7E:
                self._csi(bytes(self._sequence), chr(byte))
                self._state = _State.GROUND
            elif byte == ESC:
                self._state = _State.ESCAPE
            elif byte in (0x18, 0x1A):
                self._state = _State.GROUND
            elif len(self._sequence) < _MAX_SEQUENCE:
                self._sequence.append(byte)
        elif state is _State.OSC:
            if byte == BEL:
                self._osc(bytes(self._sequence))
                self._state = _State.GROUND
            elif byte == ESC:
                self._state = _State.OSC_ESCAPE
            elif byte in (0x18, 0x1A):
                self._state = _State.GROUND
            elif len(self._sequence) < _MAX_SEQUENCE:
                self._sequence.append(byte)
        elif state is _State.OSC_ESCAPE:
            if byte == ord("\\"):
                self._osc(bytes(self._sequence))
                self._state = _State.GROUND
            else:
                self._state = _State.ESCAPE
                self._step(byte)
        elif state is _State.STRING:
            if byte == ESC:
                self._state = _State.STRING_ESCAPE
            elif byte in (0x18, 0x1A):
                self._state = _State.GROUND
        elif state is _State.STRING_ESCAPE:
            self._state = _State.GROUND if byte == ord("\\") else _State.STRING

    def _csi(self, parameters: bytes, final: str) -> None:
        text = parameters.decode("ascii", "replace")
        if text.startswith("?") and final in "hl":
            for mode in text[1:].split(";"):
                if mode in _TRACKED_PRIVATE_MODES:
                    self.private_modes[mode] = final == "h"
        elif final == "u" and text.startswith(">"):
            self.kitty_keyboard_depth += 1
        elif final == "u" and text.startswith("<"):
            count = int(text[1:]) if text[1:].isdigit() else 1
            self.kitty_keyboard_depth = max(0, self.kitty_keyboard_depth - max(1, count))
        elif final == "m" and text.startswith(">4"):
            values = text[1:].split(";")
            self.modify_other_keys = len(values) > 1 and values[1] not in ("", "0")

    def _osc(self, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        command, _, rest = text.partition(";")
        if command in ("0", "2"):
            self.title = rest
        elif command == "9" and rest.startswith("4;"):
            self.progress_active = not rest.startswith("4;0")

    def interrupt_sequence(self) -> bytes:
        """Bytes that end an unfinished sequence so what follows is read afresh."""
        if self._state in (_State.OSC, _State.OSC_ESCAPE, _State.STRING, _State.STRING_ESCAPE):
            return STRING_TERMINATOR
        if self._state is not _State.GROUND or self._utf8_remaining:
            return CAN
        return b""

    def reset_sequence(self) -> bytes:
        """Undo every mode the program may have left on, so the shell works afterwards.

        The unconditional resets are harmless when a mode is already off; the
        kitty keyboard stack is popped exactly as deep as the program pushed,
        because popping further would undo the user's own terminal set-up.
        """
        parts = [self.interrupt_sequence()]
        if self.private_modes.get("1049"):
            parts.append(b"\x1b[?1049l")
        for mode in ("1000", "1002", "1003", "1004", "1006", "1015"):
            if self.private_modes.get(mode):
                parts.append(b"\x1b[?" + mode.encode() + b"l")
        parts.append(b"\x1b[?2026l\x1b[?2004l\x1b[?25h\x1b[0m")
        if self.kitty_keyboard_depth:
            parts.append(b"\x1b[<%du" % self.kitty_keyboard_depth)
        if self.modify_other_keys:
            parts.append(b"\x1b[>4;0m")
        if self.progress_active:
            parts.append(b"\x1b]9;4;0;\x07")
        return b"".join(parts)
