"""Reading a counter program's output: every line once, in order."""

from __future__ import annotations

import itertools
import re

import attrs

LINE = re.compile(rb"n=(\d{9}) ")


def numbers(output: bytes) -> list[int]:
    return [int(found.group(1)) for found in LINE.finditer(output)]


def assert_contiguous(found: list[int], *, first: int = 1) -> None:
    """Every number from ``first`` on, each exactly once, nothing skipped or repeated."""
    assert found, "no counter lines at all"
    assert found[0] == first, f"starts at {found[0]}, not {first}"
    for before, after in itertools.pairwise(found):
        assert after == before + 1, f"after {before} came {after}"


@attrs.define(eq=False)
class CounterCheck:
    """Checks a counter's output as it streams, keeping only an unfinished line."""

    expected: int = 1
    pending: bytearray = attrs.field(factory=bytearray)
    bytes_seen: int = 0

    def feed(self, data: bytes) -> None:
        self.bytes_seen += len(data)
        self.pending += data
        end = self.pending.rfind(b"\n") + 1
        for found in LINE.finditer(self.pending, 0, end):
            number = int(found.group(1))
            assert number == self.expected, f"expected line {self.expected}, got {number}"
            self.expected += 1
        del self.pending[:end]
