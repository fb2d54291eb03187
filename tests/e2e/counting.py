"""Reading a counter program's output: every line once, in order."""

from __future__ import annotations

import itertools
import re

LINE = re.compile(rb"n=(\d{9}) ")


def numbers(output: bytes) -> list[int]:
    return [int(found.group(1)) for found in LINE.finditer(output)]


def assert_contiguous(found: list[int], *, first: int = 1) -> None:
    """Every number from ``first`` on, each exactly once, nothing skipped or repeated."""
    assert found, "no counter lines at all"
    assert found[0] == first, f"starts at {found[0]}, not {first}"
    for before, after in itertools.pairwise(found):
        assert after == before + 1, f"after {before} came {after}"
