"""The draft-14 codec: hand-worked bytes, round trips, truncation and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pibridge.moq import draft14
from pibridge.moq.codec import codec_for_version
from pibridge.moq.draft14.control import (
    ControlStreamParser,
    decode_message,
    decode_payload,
    decode_token,
    encode_message,
    encode_payload,
    encode_token,
)
from pibridge.moq.draft14.data import (
    SubgroupStreamParser,
    SubgroupWriter,
    decode_subgroup_header,
    decode_subgroup_object,
    encode_subgroup_header,
)
from pibridge.moq.draft14.messages import (
    AliasType,
    AuthorizationToken,
    ClientSetup,
    ControlMessage,
    Fetch,
    FilterType,
    KeyValuePair,
    Location,
    ObjectStatus,
    Publish,
    PublishNamespace,
    SetupParameter,
    SubgroupHeader,
    SubgroupIdMode,
    SubgroupObject,
    Subscribe,
    SubscribeUpdate,
    TrackStatus,
)
from pibridge.moq.errors import ProtocolViolation, SessionErrorCode
from pibridge.moq.wire import Reader, encode_varint
from tests.moq.strategies import control_messages, subgroup_streams, varints

# -- hand-worked examples --------------------------------------------------------

RFC9000_VARINTS = [
    (bytes.fromhex("25"), 37),
    (bytes.fromhex("7bbd"), 15293),
    (bytes.fromhex("9d7f3e7d"), 494878333),
    (bytes.fromhex("c2197c5eff14e88c"), 151288809941952652),
]


@pytest.mark.parametrize(("encoded", "value"), RFC9000_VARINTS)
def test_rfc9000_varint_examples(encoded: bytes, value: int) -> None:
    assert Reader(encoded).varint() == value
    assert encode_varint(value) == encoded


def test_non_minimal_varint_decodes() -> None:
    """RFC 9000 notes 0x4025 is also 37: receivers accept longer encodings."""
    assert Reader(bytes.fromhex("4025")).varint() == 37


def test_client_setup_by_hand() -> None:
    message = ClientSetup(
        versions=(0xFF00000E,),
        parameters=(
            KeyValuePair(SetupParameter.PATH, b"/moq"),
            KeyValuePair(SetupParameter.MAX_REQUEST_ID, 100),
        ),
    )
    expected = bytes.fromhex(
        "20 0013"  # type CLIENT_SETUP, length 19
        "01 c0000000ff00000e"  # one version, 0xff00000e as an 8-byte varint
        "02"  # two parameters
        "01 04 2f6d6f71"  # PATH (odd: length-prefixed) "/moq"
        "02 4064"  # MAX_REQUEST_ID (even: varint) 100
    )
    assert encode_message(message) == expected
    assert decode_message(expected) == (message, len(expected))


def test_subscribe_by_hand() -> None:
    message = Subscribe(
        request_id=0,
        namespace=(b"pibridge", b"s1"),
        track_name=b"stdout",
        filter_type=FilterType.ABSOLUTE_START,
        start=Location(5, 0),
    )
    expected = bytes.fromhex(
        "03 001c"  # type SUBSCRIBE, length 28
        "00"  # request id 0
        "02 08 7069627269646765 02 7331"  # namespace ("pibridge", "s1")
        "06 7374646f7574"  # track name "stdout"
        "80 01 01"  # priority 128, ascending, forward
        "03 05 00"  # AbsoluteStart at {5, 0}
        "00"  # no parameters
    )
    assert encode_message(message) == expected
    assert decode_message(expected) == (message, len(expected))


def test_subgroup_example_from_the_draft() -> None:
    """The draft's "Sending a subgroup on one stream" example (type 0x14)."""
    stream = bytes.fromhex("14 02 00 00 0000 04 6162636400 04 65666768")
    parser = SubgroupStreamParser()
    objects = parser.feed(stream)
    parser.end()
    assert parser.header == SubgroupHeader(
        track_alias=2,
        group_id=0,
        subgroup_id=0,
        subgroup_id_mode=SubgroupIdMode.EXPLICIT,
        publisher_priority=0,
    )
    assert objects == [SubgroupObject(0, b"abcd"), SubgroupObject(1, b"efgh")]


def test_subgroup_with_extensions_and_status_by_hand() -> None:
    header = SubgroupHeader(
        track_alias=2, group_id=7, publisher_priority=0, extensions_present=True
    )
    writer = SubgroupWriter(header)
    encoded = (
        writer.header_bytes()
        + writer.object_bytes(SubgroupObject(0, b"abcd", extensions=(KeyValuePair(4, 2186796243),)))
        + writer.object_bytes(SubgroupObject(3, status=ObjectStatus.END_OF_GROUP))
    )
    assert encoded == bytes.fromhex(
        "11 02 07 00"  # type 0x11 (subgroup 0, extensions), alias 2, group 7, priority 0
        "00 09 04 c00000008257dcd3 04 61626364"  # id 0, 9 bytes of extensions, "abcd"
        "02 00 00 03"  # delta 2 -> id 3, no extensions, empty, status END_OF_GROUP
    )


def test_codec_lookup() -> None:
    assert codec_for_version(0xFF00000E) is draft14
    with pytest.raises(ProtocolViolation) as caught:
        codec_for_version(0xFF00000D)
    assert caught.value.code == SessionErrorCode.VERSION_NEGOTIATION_FAILED


# -- round trips -----------------------------------------------------------------


@given(varints)
@settings(deadline=None)
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    reader = Reader(encoded)
    assert reader.varint() == value
    assert reader.at_end()


@given(control_messages)
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_control_message_round_trip(message: ControlMessage) -> None:
    encoded = encode_message(message)
    assert decode_message(encoded) == (message, len(encoded))


@given(st.lists(control_messages, min_size=1, max_size=5), st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=50, deadline=None)
def test_control_stream_parser_in_pieces(
    messages: list[ControlMessage], data: st.DataObject
) -> None:
    stream = b"".join(encode_message(message) for message in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    parser = ControlStreamParser()
    received: list[ControlMessage] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        received += parser.feed(stream[start:cut])
        start = cut
    assert received == messages
    assert parser.buffered == 0


@given(subgroup_streams(), st.data())
@settings(deadline=None)
def test_subgroup_stream_round_trip(
    stream: tuple[SubgroupHeader, list[SubgroupObject]], data: st.DataObject
) -> None:
    header, objects = stream
    writer = SubgroupWriter(header)
    encoded = writer.header_bytes() + b"".join(writer.object_bytes(obj) for obj in objects)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=5)))
    parser = SubgroupStreamParser()
    received: list[SubgroupObject] = []
    start = 0
    for cut in [*cuts, len(encoded)]:
        received += parser.feed(encoded[start:cut])
        start = cut
    parser.end()
    assert parser.header == header
    assert received == objects


# -- truncation --------------------------------------------------------------------


@given(control_messages)
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60, deadline=None)
def test_truncated_control_message_fails_cleanly_at_every_offset(message: ControlMessage) -> None:
    # Requests outside the subset keep their body opaque, so only their framing can be short.
    opaque = isinstance(message, SubscribeUpdate | TrackStatus | Fetch | Publish)
    encoded = encode_message(message)
    for end in range(len(encoded)):
        with pytest.raises(ProtocolViolation):
            decode_message(encoded[:end])
    if opaque:
        return
    payload = encode_payload(message)
    for end in range(len(payload)):
        with pytest.raises(ProtocolViolation):
            decode_payload(message.MESSAGE_TYPE, payload[:end])
    with pytest.raises(ProtocolViolation):
        decode_payload(message.MESSAGE_TYPE, payload + b"\x00")


@given(subgroup_streams())
@settings(max_examples=60, deadline=None)
def test_truncated_subgroup_stream_fails_cleanly_at_every_offset(
    stream: tuple[SubgroupHeader, list[SubgroupObject]],
) -> None:
    header, objects = stream
    writer = SubgroupWriter(header)
    pieces = [writer.header_bytes()] + [writer.object_bytes(obj) for obj in objects]
    encoded = b"".join(pieces)
    boundaries = set()
    total = 0
    for piece in pieces:
        total += len(piece)
        boundaries.add(total)
    for end in range(len(encoded)):
        parser = SubgroupStreamParser()
        parser.feed(encoded[:end])
        if end in boundaries:
            parser.end()  # a stream may end between objects
        else:
            with pytest.raises(ProtocolViolation):
                parser.end()


# -- malformed input -----------------------------------------------------------------


def _frame(message_type: int, payload: bytes) -> bytes:
    return encode_varint(message_type) + len(payload).to_bytes(2, "big") + payload


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(_frame(0x40, b""), SessionErrorCode.PROTOCOL_VIOLATION, id="unknown-type"),
        pytest.param(
            _frame(0x06, b"\x00\x00\x00"), SessionErrorCode.PROTOCOL_VIOLATION, id="empty-namespace"
        ),
        pytest.param(
            _frame(0x06, b"\x00\x21" + b"\x00" * 33 + b"\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="33-field-namespace",
        ),
        pytest.param(
            _frame(
                0x03,
                b"\x00\x01\x40\x10"
                + b"n" * 16
                + b"\x4f\xf1"
                + b"t" * 4081
                + b"\x80\x01\x01\x02\x00",
            ),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="full-track-name-over-4096",
        ),
        pytest.param(
            _frame(0x03, b"\x00\x01\x01n\x01t\x80\x01\x01\x05\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="unknown-filter",
        ),
        pytest.param(
            _frame(0x03, b"\x00\x01\x01n\x01t\x80\x01\x02\x02\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="forward-2",
        ),
        pytest.param(
            _frame(0x03, b"\x00\x01\x01n\x01t\x80\x03\x01\x02\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="group-order-3",
        ),
        pytest.param(
            _frame(0x05, b"\x00\x00\x44\x01" + b"r" * 1025),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="reason-over-1024",
        ),
        pytest.param(
            _frame(0x20, b"\x01\x01\x01\x01\x80\x01\x00\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="parameter-over-65535",
        ),
        pytest.param(
            _frame(0x04, b"\x00\x00\x00\x01\x02\x00"),
            SessionErrorCode.PROTOCOL_VIOLATION,
            id="content-exists-2",
        ),
    ],
)
def test_malformed_control_messages(frame: bytes, code: SessionErrorCode) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        ControlStreamParser().feed(frame)
    assert caught.value.code == code


@pytest.mark.parametrize("stream_type", [0x00, 0x05, 0x0F, 0x16, 0x17, 0x1E, 0x1F, 0x20])
def test_unknown_data_stream_type(stream_type: int) -> None:
    with pytest.raises(ProtocolViolation):
        decode_subgroup_header(Reader(encode_varint(stream_type) + b"\x00\x00\x00\x00"))


def test_unknown_object_status() -> None:
    with pytest.raises(ProtocolViolation):
        decode_subgroup_object(Reader(b"\x00\x00\x02"), None, False)


def test_non_existent_object_with_extensions() -> None:
    with pytest.raises(ProtocolViolation):
        decode_subgroup_object(Reader(b"\x00\x02\x02\x05\x00\x01"), None, True)


def test_oversized_object_is_refused_before_buffering() -> None:
    parser = SubgroupStreamParser(max_object_size=1000)
    with pytest.raises(ProtocolViolation):
        parser.feed(encode_subgroup_header(SubgroupHeader(1, 0)) + b"\x00" + encode_varint(1001))


def test_subgroup_id_from_first_object() -> None:
    header = SubgroupHeader(1, 0, None, subgroup_id_mode=SubgroupIdMode.FIRST_OBJECT_ID)
    assert header.stream_type == 0x12
    assert decode_subgroup_header(Reader(encode_subgroup_header(header))) == header


@pytest.mark.parametrize(
    "token",
    [
        AuthorizationToken.use_value(b"secret"),
        AuthorizationToken(AliasType.REGISTER, 7, 0, b"secret"),
        AuthorizationToken(AliasType.USE_ALIAS, 7),
        AuthorizationToken(AliasType.DELETE, 7),
    ],
)
def test_authorization_token_round_trip(token: AuthorizationToken) -> None:
    assert decode_token(encode_token(token)) == token


@pytest.mark.parametrize("raw", [b"", b"\x09", b"\x02", b"\x02\x07\x00", b"\x01\x07"])
def test_malformed_token_is_a_key_value_formatting_error(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        decode_token(raw)
    assert caught.value.code == SessionErrorCode.KEY_VALUE_FORMATTING_ERROR


def test_namespace_given_as_text_is_utf8() -> None:
    assert PublishNamespace(0, ("pibridge", "é")).namespace == (b"pibridge", "é".encode())


# -- fuzz ----------------------------------------------------------------------------


@given(st.binary(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_random_bytes_never_crash_the_control_parser(data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        ControlStreamParser().feed(data)


@given(st.binary(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_random_bytes_never_crash_the_subgroup_parser(data: bytes) -> None:
    parser = SubgroupStreamParser()
    try:
        parser.feed(data)
        parser.end()
    except ProtocolViolation:
        pass


@given(st.integers(0x10, 0x1D), st.binary(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_random_objects_after_a_valid_stream_type_never_crash(
    stream_type: int, data: bytes
) -> None:
    parser = SubgroupStreamParser()
    try:
        parser.feed(encode_varint(stream_type) + data)
        parser.end()
    except ProtocolViolation:
        pass


@given(st.sampled_from(sorted(t for t in range(0x40) if t != 0x01)), st.binary(max_size=120))
@settings(max_examples=2000, deadline=None)
def test_random_payloads_for_every_message_type(message_type: int, payload: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        decode_payload(message_type, payload)
