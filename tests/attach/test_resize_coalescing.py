"""SIGWINCH storms become few resizes, and the last size always arrives."""

from __future__ import annotations

import itertools

from twisted.internet.testing import MemoryReactorClock

from pibridge.attach.resize import ResizeCoalescer


def _coalescer() -> tuple[
    MemoryReactorClock, ResizeCoalescer, list[tuple[int, int]], list[tuple[int, int]]
]:
    clock = MemoryReactorClock()
    size = [(80, 24)]
    sent: list[tuple[int, int]] = []
    coalescer = ResizeCoalescer(clock, lambda: size[0], lambda c, r: sent.append((c, r)), 0.03)
    return clock, coalescer, size, sent


def test_single_change_is_sent_at_once() -> None:
    _, coalescer, size, sent = _coalescer()
    size[0] = (100, 30)
    coalescer.changed()
    assert sent == [(100, 30)]


def test_storm_is_coalesced_and_ends_at_the_final_size() -> None:
    clock, coalescer, size, sent = _coalescer()
    for step in range(100):
        size[0] = (80 + step, 24 + step % 7)
        coalescer.changed()
        clock.advance(0.001)
    clock.advance(1)
    assert sent[0] == (80, 24)
    assert sent[-1] == (179, 24 + 99 % 7)
    assert len(sent) <= 100 * 0.001 / 0.03 + 2


def test_sends_are_at_least_an_interval_apart() -> None:
    clock, coalescer, size, _sent = _coalescer()
    times: list[float] = []
    coalescer.send = lambda c, r: times.append(clock.seconds())
    for step in range(50):
        size[0] = (10 + step, 10)
        coalescer.changed()
        clock.advance(0.007)
    clock.advance(1)
    assert len(times) >= 5
    assert all(b - a >= 0.03 - 1e-9 for a, b in itertools.pairwise(times))


def test_unchanged_size_is_not_resent_and_stop_cancels() -> None:
    clock, coalescer, size, sent = _coalescer()
    coalescer.changed()
    coalescer.changed()
    clock.advance(1)
    assert sent == [(80, 24)]
    size[0] = (90, 24)
    coalescer.changed()
    assert sent == [(80, 24), (90, 24)]
    size[0] = (91, 24)
    coalescer.changed()
    coalescer.stop()
    clock.advance(1)
    assert sent == [(80, 24), (90, 24)]
    assert clock.getDelayedCalls() == []
