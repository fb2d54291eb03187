"""The output gate: the PTY is read only as fast as the client shows output."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from pibridge.bot.flow import OutputGate


@attrs.define
class RecordingProducer:
    events: list[str] = attrs.field(factory=list)

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


def test_pauses_when_the_window_is_unacknowledged_and_resumes_on_ack() -> None:
    producer = RecordingProducer()
    gate = OutputGate(producer, window=100, detached_limit=1000)
    gate.attach(0)
    gate.output(60)
    assert producer.events == []
    gate.output(40)
    assert producer.events == ["pause"]
    gate.acknowledge(50)
    assert producer.events == ["pause", "resume"]


def test_stale_or_impossible_acks_change_nothing() -> None:
    producer = RecordingProducer()
    gate = OutputGate(producer, window=100)
    gate.attach(0)
    gate.output(150)
    gate.acknowledge(200)  # beyond what was produced: a confused or hostile client
    gate.acknowledge(0)
    assert gate.acknowledged == 0
    assert producer.events == ["pause"]


def test_a_paused_link_pauses_the_pty_only_while_attached() -> None:
    producer = RecordingProducer()
    gate = OutputGate(producer, window=100)
    gate.attach(0)
    gate.link_pause()
    gate.link_resume()
    assert producer.events == ["pause", "resume"]


def test_detached_output_stops_before_the_ring_would_lose_unacknowledged_bytes() -> None:
    producer = RecordingProducer()
    gate = OutputGate(producer, window=100, detached_limit=1000)
    gate.attach(0)
    gate.output(50)
    gate.acknowledge(50)
    gate.detach()
    gate.output(949)
    assert producer.events == []
    gate.output(51)  # 1000 unacknowledged: all the ring can keep
    assert producer.events == ["pause"]
    gate.attach(50)  # reattach from the last acknowledged byte: window applies again
    assert producer.events == ["pause"]
    gate.acknowledge(1050)
    assert producer.events == ["pause", "resume"]


STEPS = st.lists(
    st.tuples(st.sampled_from(["out", "ack", "attach", "detach"]), st.integers(0, 300))
)


@given(STEPS)
def test_pause_and_resume_alternate_and_match_the_state(steps: list[tuple[str, int]]) -> None:
    producer = RecordingProducer()
    gate = OutputGate(producer, window=100, detached_limit=400)
    for action, amount in steps:
        if action == "out":
            gate.output(amount)
        elif action == "ack":
            gate.acknowledge(gate.acknowledged + amount)
        elif action == "attach":
            gate.attach(gate.acknowledged + amount)
        else:
            gate.detach()
        assert gate.paused == gate.should_pause()
    for earlier, later in zip(producer.events, producer.events[1:], strict=False):
        assert earlier != later
