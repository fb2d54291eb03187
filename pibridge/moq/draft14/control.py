"""Encoding and decoding of draft-14 control messages, plus the stream parser.

Framing: ``Message Type (i), Message Length (16), Message Payload (..)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pibridge.moq.draft14.messages import (
    MAX_FULL_TRACK_NAME_LENGTH,
    MAX_GOAWAY_URI_LENGTH,
    MAX_KEY_VALUE_LENGTH,
    MAX_NAMESPACE_FIELDS,
    MAX_REASON_PHRASE_LENGTH,
    AliasType,
    AuthorizationToken,
    ClientSetup,
    ControlMessage,
    Fetch,
    FetchError,
    FilterType,
    GoAway,
    GroupOrder,
    KeyValuePair,
    Location,
    MaxRequestId,
    Namespace,
    Parameters,
    Publish,
    PublishDone,
    PublishError,
    PublishNamespace,
    PublishNamespaceCancel,
    PublishNamespaceDone,
    PublishNamespaceError,
    PublishNamespaceOk,
    RequestsBlocked,
    ServerSetup,
    Subscribe,
    SubscribeError,
    SubscribeNamespace,
    SubscribeNamespaceError,
    SubscribeNamespaceOk,
    SubscribeOk,
    SubscribeUpdate,
    TrackStatus,
    TrackStatusError,
    Unsubscribe,
    UnsubscribeNamespace,
    check_full_track_name,
    check_namespace,
    check_namespace_prefix,
)
from pibridge.moq.errors import ProtocolViolation, SessionErrorCode, Truncated
from pibridge.moq.wire import Reader, encode_varint

MAX_CONTROL_PAYLOAD = 0xFFFF

# -- field helpers --------------------------------------------------------------


def encode_bytes(value: bytes) -> bytes:
    return encode_varint(len(value)) + value


def encode_namespace(namespace: Namespace) -> bytes:
    return encode_varint(len(namespace)) + b"".join(encode_bytes(field) for field in namespace)


def decode_namespace(reader: Reader) -> Namespace:
    count = reader.varint()
    if not 1 <= count <= MAX_NAMESPACE_FIELDS:
        raise ProtocolViolation(f"namespace has {count} fields, must be 1..{MAX_NAMESPACE_FIELDS}")
    fields = tuple(
        reader.length_prefixed(MAX_FULL_TRACK_NAME_LENGTH, "namespace field") for _ in range(count)
    )
    problem = check_namespace(fields)
    if problem is not None:
        raise ProtocolViolation(problem)
    return fields


def decode_namespace_prefix(reader: Reader) -> Namespace:
    count = reader.varint()
    if count > MAX_NAMESPACE_FIELDS:
        raise ProtocolViolation(f"namespace prefix has {count} fields, at most 32")
    fields = tuple(
        reader.length_prefixed(MAX_FULL_TRACK_NAME_LENGTH, "namespace field") for _ in range(count)
    )
    problem = check_namespace_prefix(fields)
    if problem is not None:
        raise ProtocolViolation(problem)
    return fields


def encode_key_value_pairs(pairs: Parameters) -> bytes:
    """Encode pairs without a count (as extension headers are)."""
    out = bytearray()
    for pair in pairs:
        out += encode_varint(pair.type)
        if isinstance(pair.value, int):
            out += encode_varint(pair.value)
        else:
            out += encode_bytes(pair.value)
    return bytes(out)


def decode_key_value_pair(reader: Reader) -> KeyValuePair:
    kind = reader.varint()
    if kind % 2 == 0:
        return KeyValuePair(kind, reader.varint())
    length = reader.varint()
    if length > MAX_KEY_VALUE_LENGTH:
        raise ProtocolViolation(f"key-value pair of type {kind} has length {length} > 65535")
    return KeyValuePair(kind, reader.take(length))


def encode_parameters(parameters: Parameters) -> bytes:
    return encode_varint(len(parameters)) + encode_key_value_pairs(parameters)


def decode_parameters(reader: Reader) -> Parameters:
    count = reader.varint()
    # Each pair takes at least two bytes, so a count beyond that is a lie.
    if count * 2 > reader.remaining:
        raise Truncated(f"{count} parameters cannot fit in {reader.remaining} bytes")
    return tuple(decode_key_value_pair(reader) for _ in range(count))


def encode_reason(reason: str) -> bytes:
    return encode_bytes(reason.encode("utf-8"))


def decode_reason(reader: Reader) -> str:
    raw = reader.length_prefixed(MAX_REASON_PHRASE_LENGTH, "reason phrase")
    return raw.decode("utf-8", errors="replace")


def encode_location(location: Location) -> bytes:
    return encode_varint(location.group) + encode_varint(location.object)


def decode_location(reader: Reader) -> Location:
    return Location(reader.varint(), reader.varint())


def _flag(reader: Reader, what: str) -> bool:
    value = reader.uint8()
    if value > 1:
        raise ProtocolViolation(f"{what} must be 0 or 1, got {value}")
    return value == 1


def encode_token(token: AuthorizationToken) -> bytes:
    """Serialise the Token structure that is an AUTHORIZATION TOKEN value."""
    out = encode_varint(token.alias_type)
    if token.alias is not None:
        out += encode_varint(token.alias)
    if token.token_type is not None and token.value is not None:
        out += encode_varint(token.token_type) + token.value
    return out


def decode_token(value: bytes) -> AuthorizationToken:
    """Parse a Token structure; failures are KEY_VALUE_FORMATTING_ERROR per the draft."""
    try:
        reader = Reader(value)
        alias_type = reader.varint()
        if alias_type not in tuple(AliasType):
            raise ProtocolViolation(
                f"unknown token alias type {alias_type}",
                SessionErrorCode.KEY_VALUE_FORMATTING_ERROR,
            )
        kind = AliasType(alias_type)
        alias = reader.varint() if kind != AliasType.USE_VALUE else None
        if kind in (AliasType.REGISTER, AliasType.USE_VALUE):
            token_type = reader.varint()
            return AuthorizationToken(kind, alias, token_type, reader.take(reader.remaining))
        if not reader.at_end():
            raise ProtocolViolation("trailing bytes after token alias")
        return AuthorizationToken(kind, alias)
    except ProtocolViolation as error:
        raise ProtocolViolation(error.reason, SessionErrorCode.KEY_VALUE_FORMATTING_ERROR) from None


# -- per-message codecs ---------------------------------------------------------


def _enc_client_setup(m: ClientSetup) -> bytes:
    return (
        encode_varint(len(m.versions))
        + b"".join(encode_varint(v) for v in m.versions)
        + encode_parameters(m.parameters)
    )


def _dec_client_setup(r: Reader) -> ClientSetup:
    count = r.varint()
    if count == 0:
        raise ProtocolViolation("CLIENT_SETUP offers no version")
    if count > r.remaining:
        raise Truncated(f"{count} versions cannot fit")
    versions = tuple(r.varint() for _ in range(count))
    if any(v > 0xFFFF_FFFF for v in versions):
        raise ProtocolViolation("version does not fit 32 bits")
    return ClientSetup(versions, decode_parameters(r))


def _enc_server_setup(m: ServerSetup) -> bytes:
    return encode_varint(m.version) + encode_parameters(m.parameters)


def _dec_server_setup(r: Reader) -> ServerSetup:
    version = r.varint()
    if version > 0xFFFF_FFFF:
        raise ProtocolViolation("version does not fit 32 bits")
    return ServerSetup(version, decode_parameters(r))


def _enc_goaway(m: GoAway) -> bytes:
    return encode_bytes(m.new_session_uri)


def _dec_goaway(r: Reader) -> GoAway:
    return GoAway(r.length_prefixed(MAX_GOAWAY_URI_LENGTH, "GOAWAY URI"))


def _enc_subscribe(m: Subscribe) -> bytes:
    out = (
        encode_varint(m.request_id)
        + encode_namespace(m.namespace)
        + encode_bytes(m.track_name)
        + bytes((m.subscriber_priority, m.group_order, int(m.forward)))
        + encode_varint(m.filter_type)
    )
    if m.start is not None:
        out += encode_location(m.start)
    if m.end_group is not None:
        out += encode_varint(m.end_group)
    return out + encode_parameters(m.parameters)


def _dec_subscribe(r: Reader) -> Subscribe:
    request_id = r.varint()
    namespace = decode_namespace(r)
    name = r.length_prefixed(MAX_FULL_TRACK_NAME_LENGTH, "track name")
    problem = check_full_track_name(namespace, name)
    if problem is not None:
        raise ProtocolViolation(problem)
    priority = r.uint8()
    order = r.uint8()
    if order > GroupOrder.DESCENDING:
        raise ProtocolViolation(f"group order {order} is not 0..2")
    forward = _flag(r, "Forward")
    raw_filter = r.varint()
    if raw_filter not in tuple(FilterType):
        raise ProtocolViolation(f"unknown filter type {raw_filter}")
    filter_type = FilterType(raw_filter)
    start = end = None
    if filter_type in (FilterType.ABSOLUTE_START, FilterType.ABSOLUTE_RANGE):
        start = decode_location(r)
    if filter_type == FilterType.ABSOLUTE_RANGE:
        end = r.varint()
        if start is not None and end < start.group:
            raise ProtocolViolation("End Group before Start group")
    return Subscribe(
        request_id,
        namespace,
        name,
        filter_type,
        start,
        end,
        priority,
        GroupOrder(order),
        forward,
        decode_parameters(r),
    )


def _enc_subscribe_ok(m: SubscribeOk) -> bytes:
    out = (
        encode_varint(m.request_id)
        + encode_varint(m.track_alias)
        + encode_varint(m.expires)
        + bytes((m.group_order, 0 if m.largest_location is None else 1))
    )
    if m.largest_location is not None:
        out += encode_location(m.largest_location)
    return out + encode_parameters(m.parameters)


def _dec_subscribe_ok(r: Reader) -> SubscribeOk:
    request_id = r.varint()
    alias = r.varint()
    expires = r.varint()
    order = r.uint8()
    if order not in (GroupOrder.ASCENDING, GroupOrder.DESCENDING):
        raise ProtocolViolation(f"SUBSCRIBE_OK group order {order} is not 1 or 2")
    largest = decode_location(r) if _flag(r, "Content Exists") else None
    return SubscribeOk(request_id, alias, expires, GroupOrder(order), largest, decode_parameters(r))


def _enc_request_error(
    m: SubscribeError | PublishNamespaceError | SubscribeNamespaceError,
) -> bytes:
    return encode_varint(m.request_id) + encode_varint(m.error_code) + encode_reason(m.reason)


def _dec_request_error(cls: type[Any]) -> Callable[[Reader], Any]:
    def decode(r: Reader) -> Any:
        return cls(r.varint(), r.varint(), decode_reason(r))

    return decode


def _enc_request_id(
    m: Unsubscribe | PublishNamespaceOk | SubscribeNamespaceOk | MaxRequestId,
) -> bytes:
    return encode_varint(m.request_id)


def _enc_publish_done(m: PublishDone) -> bytes:
    return (
        encode_varint(m.request_id)
        + encode_varint(m.status_code)
        + encode_varint(m.stream_count)
        + encode_reason(m.reason)
    )


def _dec_publish_done(r: Reader) -> PublishDone:
    return PublishDone(r.varint(), r.varint(), r.varint(), decode_reason(r))


def _enc_publish_namespace(m: PublishNamespace) -> bytes:
    return (
        encode_varint(m.request_id)
        + encode_namespace(m.namespace)
        + encode_parameters(m.parameters)
    )


def _dec_publish_namespace(r: Reader) -> PublishNamespace:
    return PublishNamespace(r.varint(), decode_namespace(r), decode_parameters(r))


def _enc_publish_namespace_cancel(m: PublishNamespaceCancel) -> bytes:
    return encode_namespace(m.namespace) + encode_varint(m.error_code) + encode_reason(m.reason)


def _dec_publish_namespace_cancel(r: Reader) -> PublishNamespaceCancel:
    return PublishNamespaceCancel(decode_namespace(r), r.varint(), decode_reason(r))


def _enc_subscribe_namespace(m: SubscribeNamespace) -> bytes:
    return (
        encode_varint(m.request_id)
        + encode_namespace(m.namespace_prefix)
        + encode_parameters(m.parameters)
    )


def _dec_subscribe_namespace(r: Reader) -> SubscribeNamespace:
    return SubscribeNamespace(r.varint(), decode_namespace_prefix(r), decode_parameters(r))


def _enc_opaque(m: SubscribeUpdate | TrackStatus | Fetch | Publish) -> bytes:
    return encode_varint(m.request_id) + m.body


def _dec_opaque(
    cls: type[SubscribeUpdate] | type[TrackStatus] | type[Fetch] | type[Publish],
) -> Callable[[Reader], Any]:
    def decode(r: Reader) -> Any:
        return cls(r.varint(), r.take(r.remaining))

    return decode


_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    SubscribeUpdate: _enc_opaque,
    TrackStatus: _enc_opaque,
    Fetch: _enc_opaque,
    Publish: _enc_opaque,
    TrackStatusError: _enc_request_error,
    FetchError: _enc_request_error,
    PublishError: _enc_request_error,
    ClientSetup: _enc_client_setup,
    ServerSetup: _enc_server_setup,
    GoAway: _enc_goaway,
    MaxRequestId: _enc_request_id,
    RequestsBlocked: lambda m: encode_varint(m.maximum_request_id),
    Subscribe: _enc_subscribe,
    SubscribeOk: _enc_subscribe_ok,
    SubscribeError: _enc_request_error,
    Unsubscribe: _enc_request_id,
    PublishDone: _enc_publish_done,
    PublishNamespace: _enc_publish_namespace,
    PublishNamespaceOk: _enc_request_id,
    PublishNamespaceError: _enc_request_error,
    PublishNamespaceDone: lambda m: encode_namespace(m.namespace),
    PublishNamespaceCancel: _enc_publish_namespace_cancel,
    SubscribeNamespace: _enc_subscribe_namespace,
    SubscribeNamespaceOk: _enc_request_id,
    SubscribeNamespaceError: _enc_request_error,
    UnsubscribeNamespace: lambda m: encode_namespace(m.namespace_prefix),
}

_DECODERS: dict[int, Callable[[Reader], ControlMessage]] = {
    SubscribeUpdate.MESSAGE_TYPE: _dec_opaque(SubscribeUpdate),
    TrackStatus.MESSAGE_TYPE: _dec_opaque(TrackStatus),
    Fetch.MESSAGE_TYPE: _dec_opaque(Fetch),
    Publish.MESSAGE_TYPE: _dec_opaque(Publish),
    TrackStatusError.MESSAGE_TYPE: _dec_request_error(TrackStatusError),
    FetchError.MESSAGE_TYPE: _dec_request_error(FetchError),
    PublishError.MESSAGE_TYPE: _dec_request_error(PublishError),
    ClientSetup.MESSAGE_TYPE: _dec_client_setup,
    ServerSetup.MESSAGE_TYPE: _dec_server_setup,
    GoAway.MESSAGE_TYPE: _dec_goaway,
    MaxRequestId.MESSAGE_TYPE: lambda r: MaxRequestId(r.varint()),
    RequestsBlocked.MESSAGE_TYPE: lambda r: RequestsBlocked(r.varint()),
    Subscribe.MESSAGE_TYPE: _dec_subscribe,
    SubscribeOk.MESSAGE_TYPE: _dec_subscribe_ok,
    SubscribeError.MESSAGE_TYPE: _dec_request_error(SubscribeError),
    Unsubscribe.MESSAGE_TYPE: lambda r: Unsubscribe(r.varint()),
    PublishDone.MESSAGE_TYPE: _dec_publish_done,
    PublishNamespace.MESSAGE_TYPE: _dec_publish_namespace,
    PublishNamespaceOk.MESSAGE_TYPE: lambda r: PublishNamespaceOk(r.varint()),
    PublishNamespaceError.MESSAGE_TYPE: _dec_request_error(PublishNamespaceError),
    PublishNamespaceDone.MESSAGE_TYPE: lambda r: PublishNamespaceDone(decode_namespace(r)),
    PublishNamespaceCancel.MESSAGE_TYPE: _dec_publish_namespace_cancel,
    SubscribeNamespace.MESSAGE_TYPE: _dec_subscribe_namespace,
    SubscribeNamespaceOk.MESSAGE_TYPE: lambda r: SubscribeNamespaceOk(r.varint()),
    SubscribeNamespaceError.MESSAGE_TYPE: _dec_request_error(SubscribeNamespaceError),
    UnsubscribeNamespace.MESSAGE_TYPE: lambda r: UnsubscribeNamespace(decode_namespace_prefix(r)),
}


def encode_payload(message: ControlMessage) -> bytes:
    """The message payload alone, without type and length."""
    return _ENCODERS[type(message)](message)


def encode_message(message: ControlMessage) -> bytes:
    """A framed control message ready for the control stream."""
    payload = encode_payload(message)
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"control message payload of {len(payload)} bytes exceeds 65535")
    return encode_varint(message.MESSAGE_TYPE) + len(payload).to_bytes(2, "big") + payload


def decode_payload(message_type: int, payload: bytes) -> ControlMessage:
    """Decode one payload; it must be consumed exactly, or the message is malformed."""
    decoder = _DECODERS.get(message_type)
    if decoder is None:
        raise ProtocolViolation(f"unknown control message type {message_type:#x}")
    reader = Reader(payload)
    try:
        message = decoder(reader)
    except ValueError as error:
        raise ProtocolViolation(str(error)) from None
    if not reader.at_end():
        raise ProtocolViolation(
            f"message {message_type:#x} has {reader.remaining} bytes beyond its fields"
        )
    return message


def decode_message(data: bytes) -> tuple[ControlMessage, int]:
    """Decode one framed message from the start of ``data``; return it and its size."""
    reader = Reader(data)
    message_type = reader.varint()
    length = reader.uint16()
    payload = reader.take(length)
    return decode_payload(message_type, payload), reader.offset


class ControlStreamParser:
    """Feed control stream bytes, get whole messages; buffers at most one message."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        self._buffer += data
        messages: list[ControlMessage] = []
        offset = 0
        buffer = bytes(self._buffer)
        while True:
            reader = Reader(buffer, offset)
            try:
                message_type = reader.varint()
                length = reader.uint16()
            except Truncated:
                break
            if message_type not in _DECODERS:
                raise ProtocolViolation(f"unknown control message type {message_type:#x}")
            if reader.remaining < length:
                break
            payload = reader.take(length)
            messages.append(decode_payload(message_type, payload))
            offset = reader.offset
        del self._buffer[:offset]
        return messages

    @property
    def buffered(self) -> int:
        return len(self._buffer)
