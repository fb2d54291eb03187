"""Translating recorded ``pi --mode rpc`` output into chat events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pibridge.chat.events import (
    ChatError,
    ChatEvent,
    Delta,
    Done,
    PiEventTranslator,
    ToolEnd,
    ToolStart,
    event_data,
)
from pibridge.chat.framing import FramingError, JsonLineSplitter, JsonRecord

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> list[dict[str, Any]]:
    splitter = JsonLineSplitter()
    frames = splitter.feed((FIXTURES / f"{name}.jsonl").read_bytes())
    assert all(isinstance(frame, JsonRecord) for frame in frames)
    return [frame.value for frame in frames if isinstance(frame, JsonRecord)]


def translate(name: str) -> list[ChatEvent]:
    translator = PiEventTranslator()
    return [event for record in recorded(name) for event in translator.translate(record)]


def deltas(events: list[ChatEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, Delta))


def test_text_reply_streams_only_new_text_and_ends_with_done() -> None:
    events = translate("text")
    assert isinstance(events[-1], Done)
    assert [type(event) for event in events[:-1]] == [Delta] * (len(events) - 1)
    expected = "Offline model here. You said: hello there, line\u2028separator and \u2029 too"
    assert deltas(events) == expected
    assert events[-1].text == expected
    assert events[-1].stop_reason == "stop"
    assert events[-1].usage["output"] > 0


def test_forwarded_bytes_are_a_small_fraction_of_what_pi_wrote() -> None:
    raw = (FIXTURES / "text.jsonl").read_bytes()
    sent = sum(len(json.dumps(event_data(event))) for event in translate("text"))
    assert sent * 10 < len(raw)


def test_tool_call_reports_start_and_end_then_the_reply() -> None:
    events = translate("tool")
    starts = [event for event in events if isinstance(event, ToolStart)]
    ends = [event for event in events if isinstance(event, ToolEnd)]
    assert starts == [ToolStart("call_1", "bash", {"command": "echo hi-from-tool"})]
    assert ends == [ToolEnd("call_1", "bash", is_error=False, summary="hi-from-tool\n")]
    assert events.index(starts[0]) < events.index(ends[0])
    assert isinstance(events[-1], Done)
    assert "hi-from-tool" in events[-1].text
    assert [event for event in events if isinstance(event, Done | ChatError)] == [events[-1]]


def test_model_error_ends_the_turn_with_an_error_carrying_the_message() -> None:
    events = translate("model_error")
    assert events == [ChatError("model_error", "the model failed: 500 the upstream model broke")]


def test_failure_mid_reply_keeps_the_partial_text_and_ends_with_error() -> None:
    events = translate("fail_mid")
    assert deltas(events) == "Offline model here. You "
    assert events[-1] == ChatError("model_error", "the model failed: cut off halfway")


def test_abort_ends_the_turn_with_an_aborted_error() -> None:
    events = translate("abort")
    assert deltas(events) == "Offline model here. You said: "
    assert isinstance(events[-1], ChatError)
    assert events[-1].code == "aborted"


def test_partial_messages_without_delta_events_are_reduced_to_the_new_text() -> None:
    translator = PiEventTranslator()

    def update(text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": [{"type": "text", "text": text}]}
        return {"type": "message_update", "message": message}

    start = {"type": "message_start", "message": {"role": "assistant", "content": []}}
    got = translator.translate(start)
    for text in ("Hel", "Hello", "Hello", "Hello world"):
        got += translator.translate(update(text))
    assert got == [Delta("Hel"), Delta("lo"), Delta(" world")]


def test_redaction_reaches_every_string_of_an_event() -> None:
    event = ToolStart("id", "bash", {"command": "echo sk-SECRET", "nested": ["sk-SECRET"]})
    data = event_data(event, lambda text: text.replace("sk-SECRET", "[redacted]"))
    assert "sk-SECRET" not in json.dumps(data)


def test_splitter_keeps_unicode_line_separators_inside_records() -> None:
    splitter = JsonLineSplitter()
    line = json.dumps({"text": "a\u2028b\u2029c\x85d"}, ensure_ascii=False).encode() + b"\r\n"
    frames = splitter.feed(line[:5]) + splitter.feed(line[5:])
    assert frames == [JsonRecord({"text": "a\u2028b\u2029c\x85d"})]


def test_an_oversized_line_is_one_error_and_the_next_line_still_parses() -> None:
    splitter = JsonLineSplitter(max_line=100)
    frames = splitter.feed(b'{"a": "' + b"x" * 150)
    frames += splitter.feed(b"y" * 1000)
    frames += splitter.feed(b'"}\n{"ok": 1}\n')
    assert [type(frame) for frame in frames] == [FramingError, JsonRecord]
    assert isinstance(frames[0], FramingError) and frames[0].reason == "line_too_long"
    assert frames[1] == JsonRecord({"ok": 1})


def test_bad_lines_are_errors_not_exceptions() -> None:
    frames = JsonLineSplitter().feed(b"not json\n[1]\n\xff\n")
    reasons = [frame.reason for frame in frames if isinstance(frame, FramingError)]
    assert reasons == ["bad_json", "not_an_object", "bad_utf8"]


@given(st.lists(st.dictionaries(st.text(), st.text()), max_size=5), st.integers(1, 50))
def test_any_chunking_yields_the_same_records(records: list[dict[str, str]], size: int) -> None:
    data = b"".join(json.dumps(record).encode() + b"\n" for record in records)
    splitter = JsonLineSplitter()
    frames = []
    for start in range(0, len(data), size):
        frames += splitter.feed(data[start : start + size])
    assert frames == [JsonRecord(record) for record in records]
