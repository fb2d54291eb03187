"""The reattach buffer: the last few MiB of a session's output, by absolute offset.

A client that loses its connection remembers how many output bytes it has
shown. On reattach the bot sends exactly the bytes after that offset, or, when
they were already overwritten, says so with a `Gap` so the caller can send a
notice and make the program redraw (a resize does that for full-screen
programs and for pi).
"""

from __future__ import annotations

import mmap
from typing import Final

import attrs
from attrs import define, frozen

DEFAULT_CAPACITY: Final = 2 * 1024 * 1024


class OffsetBeyondEnd(ValueError):
    """A client claimed to have seen output that was never produced."""


@frozen
class Gap:
    """The bytes from ``requested`` up to ``available_from`` are gone."""

    requested: int
    available_from: int

    @property
    def lost(self) -> int:
        return self.available_from - self.requested


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive")


@define(eq=False)
class OutputRing:
    """A bounded circular store of output bytes addressed by absolute offset."""

    capacity: int = attrs.field(default=DEFAULT_CAPACITY, validator=_positive)
    _storage: mmap.mmap = attrs.field(init=False)
    _end: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        # Anonymous pages, not a bytearray: the allocator keeps freed heap
        # memory, but unmapped pages go back to the system when a session ends.
        self._storage = mmap.mmap(-1, self.capacity)

    @property
    def end_offset(self) -> int:
        """Total bytes ever appended: the offset the next byte will have."""
        return self._end

    @property
    def start_offset(self) -> int:
        """Offset of the oldest byte still held."""
        return max(0, self._end - self.capacity)

    def append(self, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if size >= self.capacity:
            tail = data[size - self.capacity :]
            self._end += size
            self._place(self._end - self.capacity, tail)
            return
        self._place(self._end, data)
        self._end += size

    def read_from(self, offset: int) -> bytes | Gap:
        """Every byte from ``offset`` to the end, or a `Gap` if some were overwritten."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        if offset > self._end:
            raise OffsetBeyondEnd(f"offset {offset} is beyond the end of output ({self._end})")
        if offset < self.start_offset:
            return Gap(requested=offset, available_from=self.start_offset)
        return self._slice(offset, self._end)

    def _place(self, offset: int, data: bytes) -> None:
        position = offset % self.capacity
        first = min(len(data), self.capacity - position)
        self._storage[position : position + first] = data[:first]
        if first < len(data):
            self._storage[: len(data) - first] = data[first:]

    def _slice(self, start: int, end: int) -> bytes:
        length = end - start
        if length == 0:
            return b""
        position = start % self.capacity
        first = min(length, self.capacity - position)
        head = bytes(self._storage[position : position + first])
        if first == length:
            return head
        return head + bytes(self._storage[: length - first])
