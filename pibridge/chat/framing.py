"""JSON lines from pi's RPC mode, split on ``\\n`` only.

pi's JSON strings may hold U+2028, U+2029 or other characters that
``str.splitlines`` treats as line ends, so records are split on the LF byte
alone, before decoding. A record longer than the limit is reported once and
skipped up to its end, so one oversized line never grows memory without bound.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

DEFAULT_MAX_LINE = 16 * 1024 * 1024


@attrs.frozen
class JsonRecord:
    """One decoded JSON object from a line."""

    value: dict[str, Any]


@attrs.frozen
class FramingError:
    """A line that could not be used: too long, not UTF-8, not JSON or not an object."""

    reason: str
    detail: str


Frame = JsonRecord | FramingError


@attrs.define(eq=False)
class JsonLineSplitter:
    """Feed bytes in, get whole records out; keeps at most ``max_line`` bytes buffered."""

    max_line: int = DEFAULT_MAX_LINE
    _pending: bytearray = attrs.field(factory=bytearray, init=False)
    _discarding: bool = attrs.field(default=False, init=False)

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._buffer(data[start:], frames)
                return frames
            if self._discarding:
                self._discarding = False
                self._pending.clear()
            else:
                self._pending += data[start:end]
                if len(self._pending) > self.max_line:
                    frames.append(self._too_long())
                else:
                    frames.append(decode_line(bytes(self._pending)))
                self._pending.clear()
            start = end + 1

    def _buffer(self, tail: bytes, frames: list[Frame]) -> None:
        if self._discarding or not tail:
            return
        self._pending += tail
        if len(self._pending) > self.max_line:
            frames.append(self._too_long())
            self._pending.clear()
            self._discarding = True

    def _too_long(self) -> FramingError:
        return FramingError("line_too_long", f"a line from pi exceeded {self.max_line} bytes")


def decode_line(line: bytes) -> Frame:
    """Decode one record; a trailing CR is accepted, blank lines are reported."""
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return FramingError("bad_utf8", str(error))
    try:
        value = json.loads(text)
    except ValueError as error:
        return FramingError("bad_json", str(error))
    if not isinstance(value, dict):
        return FramingError("not_an_object", type(value).__name__)
    return JsonRecord(value)


def encode_command(command: dict[str, Any]) -> bytes:
    """One command as a JSON line; ``ensure_ascii`` keeps U+2028 escaped on the wire."""
    return json.dumps(command, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
