"""QUIC variable-length integers (RFC 9000 section 16) and a bounds-checked reader.

These are shared by every MoQ Transport version; everything version specific
lives in a ``draftNN`` package.
"""

from __future__ import annotations

from pibridge.moq.errors import ProtocolViolation, SessionErrorCode, Truncated

MAX_VARINT = (1 << 62) - 1


def encode_varint(value: int) -> bytes:
    """Encode ``value`` in the shortest QUIC varint form."""
    if value < 0x40:
        if value < 0:
            raise ValueError(f"varint must not be negative: {value}")
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= MAX_VARINT:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"varint too large: {value}")


def varint_length(value: int) -> int:
    """How many bytes :func:`encode_varint` uses for ``value``."""
    if value < 0x40:
        return 1
    if value < 0x4000:
        return 2
    if value < 0x4000_0000:
        return 4
    return 8


class Reader:
    """Reads fields from a byte string, raising :class:`Truncated` past its end."""

    __slots__ = ("_data", "_end", "offset")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._end = len(self._data)
        self.offset = offset

    @property
    def remaining(self) -> int:
        return self._end - self.offset

    def at_end(self) -> bool:
        return self.offset >= self._end

    def varint(self) -> int:
        data = self._data
        offset = self.offset
        if offset >= self._end:
            raise Truncated("varint missing")
        first = data[offset]
        size = 1 << (first >> 6)
        if offset + size > self._end:
            raise Truncated("varint cut short")
        value = first & 0x3F
        for index in range(offset + 1, offset + size):
            value = (value << 8) | data[index]
        self.offset = offset + size
        return value

    def uint8(self) -> int:
        if self.offset >= self._end:
            raise Truncated("8-bit field missing")
        value = self._data[self.offset]
        self.offset += 1
        return value

    def uint16(self) -> int:
        if self.offset + 2 > self._end:
            raise Truncated("16-bit field cut short")
        value = int.from_bytes(self._data[self.offset : self.offset + 2], "big")
        self.offset += 2
        return value

    def take(self, length: int) -> bytes:
        if self.offset + length > self._end:
            raise Truncated(f"needed {length} bytes, {self.remaining} left", self.offset + length)
        value = self._data[self.offset : self.offset + length]
        self.offset += length
        return value

    def length_prefixed(self, limit: int, what: str) -> bytes:
        """Read ``Length (i)`` then that many bytes; a length over ``limit`` is a violation."""
        length = self.varint()
        if length > limit:
            raise ProtocolViolation(
                f"{what} length {length} exceeds {limit}", SessionErrorCode.PROTOCOL_VIOLATION
            )
        return self.take(length)
