"""Subgroup data streams of draft-14: header, objects with id deltas, and a parser.

Object fields on a subgroup stream::

    Object ID Delta (i),
    [Extension Headers Length (i), Extension headers (..)],
    Object Payload Length (i),
    [Object Status (i)],          -- only when the payload length is zero
    Object Payload (..)

The first object's id is its delta; each later id is previous + delta + 1.
"""

from __future__ import annotations

import attrs

from pibridge.moq.draft14.control import decode_key_value_pair, encode_key_value_pairs
from pibridge.moq.draft14.messages import (
    ObjectStatus,
    Parameters,
    SubgroupHeader,
    SubgroupIdMode,
    SubgroupObject,
)
from pibridge.moq.errors import ProtocolViolation, Truncated
from pibridge.moq.wire import Reader, encode_varint

SUBGROUP_STREAM_TYPES = frozenset(
    t for t in range(0x10, 0x1E) if (t >> 1) & 0x3 != 0x3
)  # 0x10-0x15, 0x18-0x1D
FETCH_HEADER_STREAM_TYPE = 0x05
DEFAULT_MAX_OBJECT_SIZE = 4 * 1024 * 1024


def encode_subgroup_header(header: SubgroupHeader) -> bytes:
    out = (
        encode_varint(header.stream_type)
        + encode_varint(header.track_alias)
        + encode_varint(header.group_id)
    )
    if header.subgroup_id_mode == SubgroupIdMode.EXPLICIT:
        assert header.subgroup_id is not None
        out += encode_varint(header.subgroup_id)
    return out + bytes((header.publisher_priority,))


def decode_subgroup_header(reader: Reader) -> SubgroupHeader:
    stream_type = reader.varint()
    if stream_type not in SUBGROUP_STREAM_TYPES:
        raise ProtocolViolation(f"unknown data stream type {stream_type:#x}")
    mode = SubgroupIdMode((stream_type >> 1) & 0x3)
    alias = reader.varint()
    group = reader.varint()
    subgroup: int | None = 0 if mode == SubgroupIdMode.ZERO else None
    if mode == SubgroupIdMode.EXPLICIT:
        subgroup = reader.varint()
    return SubgroupHeader(
        track_alias=alias,
        group_id=group,
        subgroup_id=subgroup,
        publisher_priority=reader.uint8(),
        subgroup_id_mode=mode,
        extensions_present=bool(stream_type & 0x01),
        end_of_group=bool(stream_type & 0x08),
    )


def encode_subgroup_object(
    obj: SubgroupObject, previous_object_id: int | None, extensions_present: bool
) -> bytes:
    """Encode one object; ``previous_object_id`` is that of the object before it on the stream."""
    if previous_object_id is None:
        delta = obj.object_id
    else:
        delta = obj.object_id - previous_object_id - 1
        if delta < 0:
            raise ValueError(f"object id {obj.object_id} does not follow {previous_object_id}")
    out = bytearray(encode_varint(delta))
    if extensions_present:
        extensions = encode_key_value_pairs(obj.extensions)
        out += encode_varint(len(extensions)) + extensions
    elif obj.extensions:
        raise ValueError("extensions on a stream type without extensions")
    out += encode_varint(len(obj.payload))
    if obj.payload:
        out += obj.payload
    else:
        out += encode_varint(obj.status)
    return bytes(out)


def _decode_extensions(block: bytes) -> Parameters:
    reader = Reader(block)
    pairs = []
    while not reader.at_end():
        try:
            pairs.append(decode_key_value_pair(reader))
        except Truncated:
            raise ProtocolViolation("extension header overruns its length") from None
    return tuple(pairs)


def decode_subgroup_object(
    reader: Reader,
    previous_object_id: int | None,
    extensions_present: bool,
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
) -> SubgroupObject:
    delta = reader.varint()
    object_id = delta if previous_object_id is None else previous_object_id + delta + 1
    extensions: Parameters = ()
    if extensions_present:
        length = reader.varint()
        if length > max_object_size:
            raise ProtocolViolation(f"extension headers of {length} bytes exceed the limit")
        extensions = _decode_extensions(reader.take(length))
    length = reader.varint()
    if length > max_object_size:
        raise ProtocolViolation(f"object of {length} bytes exceeds {max_object_size}")
    if length == 0:
        raw_status = reader.varint()
        if raw_status not in tuple(ObjectStatus):
            raise ProtocolViolation(f"unknown object status {raw_status}")
        status = ObjectStatus(raw_status)
        if status == ObjectStatus.DOES_NOT_EXIST and extensions:
            raise ProtocolViolation("a non-existent object carries extension headers")
        if object_id > (1 << 62) - 1:
            raise ProtocolViolation("object id overflows")
        return SubgroupObject(object_id, b"", status, extensions)
    payload = reader.take(length)
    if object_id > (1 << 62) - 1:
        raise ProtocolViolation("object id overflows")
    return SubgroupObject(object_id, payload, ObjectStatus.NORMAL, extensions)


@attrs.define(eq=False)
class SubgroupWriter:
    """Encodes the objects of one subgroup stream, keeping track of id deltas."""

    header: SubgroupHeader
    _previous: int | None = None

    def header_bytes(self) -> bytes:
        return encode_subgroup_header(self.header)

    @property
    def next_object_id(self) -> int:
        return 0 if self._previous is None else self._previous + 1

    def object_bytes(self, obj: SubgroupObject) -> bytes:
        encoded = encode_subgroup_object(obj, self._previous, self.header.extensions_present)
        self._previous = obj.object_id
        return encoded

    def payload_bytes(self, payload: bytes) -> bytes:
        """Encode the next object (id previous + 1) carrying ``payload``."""
        return self.object_bytes(SubgroupObject(self.next_object_id, payload))


@attrs.define(eq=False)
class SubgroupStreamParser:
    """Feed a subgroup stream's bytes; get its header once, then objects in order.

    Buffers at most one object (bounded by ``max_object_size``).
    """

    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    header: SubgroupHeader | None = None
    _buffer: bytearray = attrs.field(factory=bytearray)
    _previous: int | None = None
    _wanted: int = 0

    def feed(self, data: bytes) -> list[SubgroupObject]:
        """Return the objects completed by ``data``; read ``header`` once it is set."""
        self._buffer += data
        if len(self._buffer) < self._wanted:
            return []
        buffer = bytes(self._buffer)
        reader = Reader(buffer)
        consumed = 0
        objects: list[SubgroupObject] = []
        try:
            if self.header is None:
                self.header = decode_subgroup_header(reader)
                consumed = reader.offset
            while not reader.at_end():
                obj = decode_subgroup_object(
                    reader, self._previous, self.header.extensions_present, self.max_object_size
                )
                consumed = reader.offset
                self._previous = obj.object_id
                objects.append(obj)
        except Truncated as short:
            self._wanted = (short.needed or 0) - consumed
        else:
            self._wanted = 0
        del self._buffer[:consumed]
        return objects

    def end(self) -> None:
        """The stream ended with FIN: anything left over is a cut-short object."""
        if self._buffer or self.header is None:
            raise ProtocolViolation("subgroup stream ended inside a header or object")
