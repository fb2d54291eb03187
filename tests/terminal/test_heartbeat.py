"""Heartbeat: pings on schedule, a silent peer times out, round trips measured."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from pibridge.terminal.control import Ping, Pong
from pibridge.terminal.heartbeat import Heartbeat


def _heartbeat() -> tuple[MemoryReactorClock, Heartbeat, list[Ping], list[str]]:
    clock = MemoryReactorClock()
    pings: list[Ping] = []
    timeouts: list[str] = []
    beat = Heartbeat(clock, pings.append, timeouts.append, interval=5, timeout=15)
    return clock, beat, pings, timeouts


def test_pings_every_interval() -> None:
    clock, beat, pings, _ = _heartbeat()
    beat.start()
    assert [p.seq for p in pings] == [1]
    clock.advance(5)
    clock.advance(5)
    assert [p.seq for p in pings] == [1, 2, 3]
    assert pings[2].t == 10


def test_silent_peer_times_out_with_reason() -> None:
    clock, beat, pings, timeouts = _heartbeat()
    beat.start()
    for _ in range(14):
        clock.advance(1)
    assert timeouts == []
    clock.advance(1)
    assert timeouts == ["heartbeat_timeout"]
    sent = len(pings)
    clock.advance(60)
    assert len(pings) == sent, "a timed-out heartbeat stops pinging"
    assert timeouts == ["heartbeat_timeout"]


def test_any_traffic_keeps_the_session_alive() -> None:
    clock, beat, _, timeouts = _heartbeat()
    beat.start()
    for _ in range(10):
        clock.advance(10)
        beat.heard()
    assert timeouts == []
    clock.advance(15)
    assert timeouts == ["heartbeat_timeout"]


def test_round_trip_is_measured_from_pongs() -> None:
    clock, beat, pings, timeouts = _heartbeat()
    beat.start()
    clock.advance(0.25)
    beat.pong_received(Pong(seq=pings[0].seq, t=pings[0].t))
    assert beat.latest_rtt == 0.25
    assert beat.smoothed_rtt == 0.25
    clock.advance(4.75)
    clock.advance(1.25)
    beat.pong_received(Pong(seq=pings[1].seq, t=pings[1].t))
    assert beat.latest_rtt == 1.25
    assert beat.smoothed_rtt == 0.25 + 0.125 * 1.0
    beat.pong_received(Pong(seq=999, t=0))
    assert beat.latest_rtt == 1.25
    assert timeouts == []


def test_answers_peer_pings_and_stop_cancels_timers() -> None:
    clock, beat, _, timeouts = _heartbeat()
    beat.start()
    assert beat.ping_received(Ping(seq=7, t=3.5)) == Pong(seq=7, t=3.5)
    beat.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert timeouts == []
