"""The reattach buffer returns exactly what a client missed, or says it cannot."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pibridge.terminal.ring import Gap, OffsetBeyondEnd, OutputRing


@given(
    capacity=st.integers(1, 64),
    chunks=st.lists(st.binary(max_size=100), max_size=30),
    data=st.data(),
)
def test_read_from_matches_a_model_of_all_output(
    capacity: int, chunks: list[bytes], data: st.DataObject
) -> None:
    ring = OutputRing(capacity)
    everything = b""
    for chunk in chunks:
        ring.append(chunk)
        everything += chunk
        offset = data.draw(st.integers(0, len(everything)))
        result = ring.read_from(offset)
        oldest = max(0, len(everything) - capacity)
        if offset >= oldest:
            assert result == everything[offset:]
        else:
            assert result == Gap(requested=offset, available_from=oldest)
            assert ring.read_from(oldest) == everything[oldest:]
    assert ring.end_offset == len(everything)


def test_reattach_within_buffer_gets_exactly_the_missing_bytes() -> None:
    ring = OutputRing(10)
    ring.append(b"hello ")
    ring.append(b"world")
    assert ring.read_from(6) == b"world"
    assert ring.read_from(11) == b""
    assert ring.read_from(0) == Gap(0, 1)
    assert ring.read_from(0).lost == 1  # type: ignore[union-attr]


def test_offset_beyond_end_is_an_error() -> None:
    ring = OutputRing(10)
    ring.append(b"abc")
    with pytest.raises(OffsetBeyondEnd):
        ring.read_from(4)


def test_memory_is_bounded_by_capacity() -> None:
    ring = OutputRing(1024)
    for _ in range(1000):
        ring.append(b"y\n" * 4096)
    assert ring.end_offset == 1000 * 8192
    assert ring.read_from(ring.end_offset - 1024) == (b"y\n" * 512)
    assert isinstance(ring.read_from(ring.end_offset - 1025), Gap)
