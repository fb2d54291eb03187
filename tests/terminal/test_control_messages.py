"""Control messages: round trips and precise refusals of malformed objects."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pibridge.terminal import control
from pibridge.terminal.control import (
    Close,
    CloseReason,
    Error,
    Open,
    OpenAck,
    ParseError,
    Ping,
    Pong,
    Resize,
    Status,
    parse,
    serialize,
)

SID = "123e4567-e89b-12d3-a456-426614174000"


def _open(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "type": "open",
        "session_id": SID,
        "agent_group_id": "team1",
        "term": "xterm-256color",
        "cols": 180,
        "rows": 46,
        "token": "abc",
    }
    body.update(overrides)
    return json.dumps(body).encode()


EXAMPLES = [
    Open(SID, "team1", "xterm-256color", 180, 46, "tok"),
    Open(SID, "team1", "xterm", 1, 1000, "tok", resume_offset=12345),
    OpenAck(SID),
    OpenAck(SID, output_offset=7, output_gap=True),
    Close(SID, CloseReason.REMOTE_EXIT, exit_code=3),
    Close(SID, CloseReason.REMOTE_EXIT, signal=9),
    Close(SID, "user_exit"),
    Ping(1, 12.5),
    Pong(1, 12.5),
    Error("refused", "no token"),
    Status("slow", SID, "queue 3 MiB"),
    Resize(SID, 200, 55),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: control.Message) -> None:
    assert parse(serialize(message)) == message


def test_spec_examples_parse_verbatim() -> None:
    """The JSON shapes from the terminal spec are accepted as written."""
    resize = parse(
        b'{ "type": "resize", "session_id": "%s", "cols": 200, "rows": 55 }' % SID.encode()
    )
    assert resize == Resize(SID, 200, 55)
    ack = parse(b'{"type":"open_ack","session_id":"%s","server_version":1}' % SID.encode())
    assert ack == OpenAck(SID, 1)
    close = parse(
        b'{"type":"close","session_id":"%s","reason":"remote_exit","exit_code":0}' % SID.encode()
    )
    assert close == Close(SID, "remote_exit", exit_code=0)


def test_serialized_open_omits_absent_fields() -> None:
    body = json.loads(serialize(Open(SID, "g", "xterm", 80, 24, "t")))
    assert body["type"] == "open"
    assert "resume_offset" not in body


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    assert parse(_open(future_field=[1, 2])) == Open(SID, "team1", "xterm-256color", 180, 46, "abc")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"cols": 1}', "no string 'type'"),
        (b'{"type": 7}', "no string 'type'"),
        (b'{"type": "launch"}', "unknown message type"),
        (_open(cols="80"), "open.cols"),
        (_open(cols=80.0), "open.cols"),
        (_open(cols=True), "open.cols"),
        (_open(cols=0), "cols must be in 1..1000"),
        (_open(rows=1001), "rows must be in 1..1000"),
        (_open(session_id="not-a-uuid"), "session_id must be a UUID"),
        (_open(session_id="123e4567e89b12d3a456426614174000"), "8-4-4-4-12"),
        (_open(term="xterm; rm -rf /"), "term must be a terminal type name"),
        (_open(agent_group_id=""), "agent_group_id must not be empty"),
        (_open(agent_group_id="a\nb"), "control characters"),
        (_open(token=None), "open.token"),
        (_open(token="x" * 9000), "token must be at most"),
        (_open(resume_offset=-1), "resume_offset must not be negative"),
        (b'{"type":"ping","seq":1,"t":NaN}', "NaN is not allowed"),
        (_open(agent_group_id="\ud800"), "lone surrogate"),
        (b'{"type":"ping","seq":1,"t":1e999}', "finite"),
        (b'{"type":"resize","session_id":"%s","cols":80}' % SID.encode(), "resize.rows"),
        (b'{"type":"close","session_id":"%s","reason":"Bad Reason"}' % SID.encode(), "snake_case"),
    ],
)
def test_malformed_messages_are_refused_precisely(payload: bytes, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(payload)
    assert fragment in str(info.value)


def test_token_never_appears_in_errors_or_repr() -> None:
    secret = "s3cr3t-token-value"
    with pytest.raises(ParseError) as info:
        parse(_open(token=secret, cols=0))
    assert secret not in str(info.value)
    assert secret not in repr(Open(SID, "g", "xterm", 80, 24, secret))


def test_oversized_message_is_refused_before_decoding() -> None:
    payload = b'{"type":"error","code":"x","message":"' + b"a" * control.MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(ParseError, match="exceeds"):
        parse(payload)


def test_track_restriction() -> None:
    with pytest.raises(ParseError, match="not allowed here"):
        parse(_open(), expect=(Resize,))


@given(
    cols=st.integers(1, 1000),
    rows=st.integers(1, 1000),
    offset=st.none() | st.integers(0, 2**53),
    group=st.text(
        st.characters(min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)),
        min_size=1,
        max_size=256,
    ),
)
def test_open_round_trip_property(cols: int, rows: int, offset: int | None, group: str) -> None:
    message = Open(SID, group, "xterm-256color", cols, rows, "t", resume_offset=offset)
    assert parse(serialize(message)) == message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(payload: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(payload)
