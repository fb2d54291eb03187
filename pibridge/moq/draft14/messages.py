"""Value types for draft-ietf-moq-transport-14 control messages and objects.

Every message is a frozen attrs class whose ``MESSAGE_TYPE`` is its wire type.
Construction validates the ranges the wire format can carry, so an instance
can always be encoded; decoders check the same limits and raise
:class:`~pibridge.moq.errors.ProtocolViolation` instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any, ClassVar

import attrs

from pibridge.moq.wire import MAX_VARINT

VERSION = 0xFF00000E

MAX_NAMESPACE_FIELDS = 32
MAX_FULL_TRACK_NAME_LENGTH = 4096
MAX_REASON_PHRASE_LENGTH = 1024
MAX_GOAWAY_URI_LENGTH = 8192
MAX_KEY_VALUE_LENGTH = 0xFFFF

Namespace = tuple[bytes, ...]


class SetupParameter(IntEnum):
    """Setup parameter types (a namespace shared by all versions)."""

    PATH = 0x01
    MAX_REQUEST_ID = 0x02
    AUTHORIZATION_TOKEN = 0x03
    MAX_AUTH_TOKEN_CACHE_SIZE = 0x04
    AUTHORITY = 0x05
    IMPLEMENTATION = 0x07


class VersionParameter(IntEnum):
    """Version-specific parameter types of draft-14 (non-setup messages)."""

    DELIVERY_TIMEOUT = 0x02
    AUTHORIZATION_TOKEN = 0x03
    MAX_CACHE_DURATION = 0x04


class FilterType(IntEnum):
    NEXT_GROUP_START = 0x1
    LARGEST_OBJECT = 0x2
    ABSOLUTE_START = 0x3
    ABSOLUTE_RANGE = 0x4


class GroupOrder(IntEnum):
    PUBLISHER = 0x0
    ASCENDING = 0x1
    DESCENDING = 0x2


class ObjectStatus(IntEnum):
    NORMAL = 0x0
    DOES_NOT_EXIST = 0x1
    END_OF_GROUP = 0x3
    END_OF_TRACK = 0x4


class AliasType(IntEnum):
    """How an AUTHORIZATION TOKEN value is to be interpreted."""

    DELETE = 0x0
    REGISTER = 0x1
    USE_ALIAS = 0x2
    USE_VALUE = 0x3


def _varint(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{attribute.name}={value} does not fit a varint")


def _uint8(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{attribute.name}={value} does not fit 8 bits")


def _reason(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if len(value.encode("utf-8")) > MAX_REASON_PHRASE_LENGTH:
        raise ValueError(f"{attribute.name} longer than {MAX_REASON_PHRASE_LENGTH} bytes")


def check_namespace(namespace: Namespace) -> str | None:
    """Why ``namespace`` is not a valid Track Namespace tuple, or ``None``."""
    if not 1 <= len(namespace) <= MAX_NAMESPACE_FIELDS:
        return f"namespace has {len(namespace)} fields, must be 1..{MAX_NAMESPACE_FIELDS}"
    if sum(len(field) for field in namespace) > MAX_FULL_TRACK_NAME_LENGTH:
        return f"namespace longer than {MAX_FULL_TRACK_NAME_LENGTH} bytes"
    return None


def check_namespace_prefix(prefix: Namespace) -> str | None:
    """Why ``prefix`` is not a usable namespace prefix, or ``None``.

    The draft asks for 1..32 fields here too, but deployed relays (moq-rs)
    send an empty prefix to mean "every namespace"; refusing it would end the
    session with them, so 0 fields are accepted for prefixes only.
    """
    if len(prefix) > MAX_NAMESPACE_FIELDS:
        return f"namespace prefix has {len(prefix)} fields, at most {MAX_NAMESPACE_FIELDS}"
    if sum(len(field) for field in prefix) > MAX_FULL_TRACK_NAME_LENGTH:
        return f"namespace prefix longer than {MAX_FULL_TRACK_NAME_LENGTH} bytes"
    return None


def check_full_track_name(namespace: Namespace, name: bytes) -> str | None:
    """Why (namespace, name) is not a valid Full Track Name, or ``None``."""
    problem = check_namespace(namespace)
    if problem is not None:
        return problem
    if sum(len(field) for field in namespace) + len(name) > MAX_FULL_TRACK_NAME_LENGTH:
        return f"full track name longer than {MAX_FULL_TRACK_NAME_LENGTH} bytes"
    return None


def _namespace(_instance: Any, _attribute: attrs.Attribute[Any], value: Namespace) -> None:
    problem = check_namespace(value)
    if problem is not None:
        raise ValueError(problem)


def _namespace_prefix(_instance: Any, _attribute: attrs.Attribute[Any], value: Namespace) -> None:
    problem = check_namespace_prefix(value)
    if problem is not None:
        raise ValueError(problem)


def _to_namespace(value: Any) -> Namespace:
    return tuple(
        field.encode("utf-8") if isinstance(field, str) else bytes(field) for field in value
    )


@attrs.frozen(order=True)
class Location:
    """A position in a track: (group, object), ordered as the draft orders them."""

    group: int = attrs.field(validator=_varint)
    object: int = attrs.field(validator=_varint)


@attrs.frozen
class KeyValuePair:
    """A parameter or extension header: even types carry a varint, odd types bytes."""

    type: int = attrs.field(validator=_varint)
    value: int | bytes = attrs.field()

    @value.validator
    def _check_value(self, _attribute: attrs.Attribute[Any], value: int | bytes) -> None:
        if self.type % 2 == 0:
            if not isinstance(value, int) or not 0 <= value <= MAX_VARINT:
                raise ValueError(f"even type {self.type} needs a varint value")
        elif not isinstance(value, bytes) or len(value) > MAX_KEY_VALUE_LENGTH:
            raise ValueError(f"odd type {self.type} needs bytes of at most 65535")


Parameters = tuple[KeyValuePair, ...]


def _to_parameters(value: Iterable[KeyValuePair]) -> Parameters:
    return tuple(value)


def _to_versions(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen
class AuthorizationToken:
    """The Token structure carried by an AUTHORIZATION TOKEN parameter."""

    alias_type: AliasType = attrs.field(converter=AliasType)
    alias: int | None = None
    token_type: int | None = None
    value: bytes | None = None

    @classmethod
    def use_value(cls, value: bytes, token_type: int = 0) -> AuthorizationToken:
        """A token sent in full, not registered (the simple, stateless form)."""
        return cls(AliasType.USE_VALUE, None, token_type, value)

    def __attrs_post_init__(self) -> None:
        has_alias = self.alias_type != AliasType.USE_VALUE
        has_value = self.alias_type in (AliasType.REGISTER, AliasType.USE_VALUE)
        if (self.alias is not None) != has_alias:
            raise ValueError(f"{self.alias_type.name} {'needs' if has_alias else 'has no'} alias")
        if (self.token_type is not None) != has_value or (self.value is not None) != has_value:
            raise ValueError(f"{self.alias_type.name} {'needs' if has_value else 'has no'} value")


# -- control messages ---------------------------------------------------------


@attrs.frozen
class ClientSetup:
    MESSAGE_TYPE: ClassVar[int] = 0x20
    versions: tuple[int, ...] = attrs.field(converter=_to_versions)
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)

    @versions.validator
    def _check_versions(self, _attribute: attrs.Attribute[Any], value: tuple[int, ...]) -> None:
        if not value:
            raise ValueError("CLIENT_SETUP offers no version")
        for version in value:
            if not 0 <= version <= 0xFFFF_FFFF:
                raise ValueError(f"version {version} does not fit 32 bits")


@attrs.frozen
class ServerSetup:
    MESSAGE_TYPE: ClassVar[int] = 0x21
    version: int = attrs.field()
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)

    @version.validator
    def _check_version(self, _attribute: attrs.Attribute[Any], value: int) -> None:
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"version {value} does not fit 32 bits")


@attrs.frozen
class GoAway:
    MESSAGE_TYPE: ClassVar[int] = 0x10
    new_session_uri: bytes = attrs.field(default=b"")

    @new_session_uri.validator
    def _check_uri(self, _attribute: attrs.Attribute[Any], value: bytes) -> None:
        if len(value) > MAX_GOAWAY_URI_LENGTH:
            raise ValueError("GOAWAY URI too long")


@attrs.frozen
class MaxRequestId:
    MESSAGE_TYPE: ClassVar[int] = 0x15
    request_id: int = attrs.field(validator=_varint)


@attrs.frozen
class RequestsBlocked:
    MESSAGE_TYPE: ClassVar[int] = 0x1A
    maximum_request_id: int = attrs.field(validator=_varint)


@attrs.frozen
class Subscribe:
    MESSAGE_TYPE: ClassVar[int] = 0x03
    request_id: int = attrs.field(validator=_varint)
    namespace: Namespace = attrs.field(converter=_to_namespace, validator=_namespace)
    track_name: bytes = attrs.field()
    filter_type: FilterType = attrs.field(converter=FilterType)
    start: Location | None = None
    end_group: int | None = None
    subscriber_priority: int = attrs.field(default=128, validator=_uint8)
    group_order: GroupOrder = attrs.field(default=GroupOrder.ASCENDING, converter=GroupOrder)
    forward: bool = True
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)

    def __attrs_post_init__(self) -> None:
        problem = check_full_track_name(self.namespace, self.track_name)
        if problem is not None:
            raise ValueError(problem)
        needs_start = self.filter_type in (FilterType.ABSOLUTE_START, FilterType.ABSOLUTE_RANGE)
        if (self.start is not None) != needs_start:
            raise ValueError(
                f"{self.filter_type.name} {'needs' if needs_start else 'has no'} start"
            )
        needs_end = self.filter_type == FilterType.ABSOLUTE_RANGE
        if (self.end_group is not None) != needs_end:
            raise ValueError(f"{self.filter_type.name} {'needs' if needs_end else 'has no'} end")
        if self.end_group is not None:
            _varint(self, attrs.fields(Subscribe).end_group, self.end_group)
            if self.start is not None and self.end_group < self.start.group:
                raise ValueError("end group before start group")


@attrs.frozen
class SubscribeOk:
    MESSAGE_TYPE: ClassVar[int] = 0x04
    request_id: int = attrs.field(validator=_varint)
    track_alias: int = attrs.field(validator=_varint)
    expires: int = attrs.field(default=0, validator=_varint)
    group_order: GroupOrder = attrs.field(default=GroupOrder.ASCENDING, converter=GroupOrder)
    largest_location: Location | None = None
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)

    def __attrs_post_init__(self) -> None:
        if self.group_order == GroupOrder.PUBLISHER:
            raise ValueError("SUBSCRIBE_OK must name a concrete group order")


@attrs.frozen
class SubscribeError:
    MESSAGE_TYPE: ClassVar[int] = 0x05
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class Unsubscribe:
    MESSAGE_TYPE: ClassVar[int] = 0x0A
    request_id: int = attrs.field(validator=_varint)


@attrs.frozen
class PublishDone:
    MESSAGE_TYPE: ClassVar[int] = 0x0B
    request_id: int = attrs.field(validator=_varint)
    status_code: int = attrs.field(validator=_varint)
    stream_count: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class PublishNamespace:
    MESSAGE_TYPE: ClassVar[int] = 0x06
    request_id: int = attrs.field(validator=_varint)
    namespace: Namespace = attrs.field(converter=_to_namespace, validator=_namespace)
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)


@attrs.frozen
class PublishNamespaceOk:
    MESSAGE_TYPE: ClassVar[int] = 0x07
    request_id: int = attrs.field(validator=_varint)


@attrs.frozen
class PublishNamespaceError:
    MESSAGE_TYPE: ClassVar[int] = 0x08
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class PublishNamespaceDone:
    MESSAGE_TYPE: ClassVar[int] = 0x09
    namespace: Namespace = attrs.field(converter=_to_namespace, validator=_namespace)


@attrs.frozen
class PublishNamespaceCancel:
    MESSAGE_TYPE: ClassVar[int] = 0x0C
    namespace: Namespace = attrs.field(converter=_to_namespace, validator=_namespace)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class SubscribeNamespace:
    MESSAGE_TYPE: ClassVar[int] = 0x11
    request_id: int = attrs.field(validator=_varint)
    namespace_prefix: Namespace = attrs.field(converter=_to_namespace, validator=_namespace_prefix)
    parameters: Parameters = attrs.field(default=(), converter=_to_parameters)


@attrs.frozen
class SubscribeNamespaceOk:
    MESSAGE_TYPE: ClassVar[int] = 0x12
    request_id: int = attrs.field(validator=_varint)


@attrs.frozen
class SubscribeNamespaceError:
    MESSAGE_TYPE: ClassVar[int] = 0x13
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class UnsubscribeNamespace:
    MESSAGE_TYPE: ClassVar[int] = 0x14
    namespace_prefix: Namespace = attrs.field(converter=_to_namespace, validator=_namespace_prefix)


@attrs.frozen
class SubscribeUpdate:
    """SUBSCRIBE_UPDATE; we keep its Request ID and carry the rest opaque."""

    MESSAGE_TYPE: ClassVar[int] = 0x02
    request_id: int = attrs.field(validator=_varint)
    body: bytes = b""


@attrs.frozen
class TrackStatus:
    """TRACK_STATUS (laid out as SUBSCRIBE); answered with TRACK_STATUS_ERROR."""

    MESSAGE_TYPE: ClassVar[int] = 0x0D
    request_id: int = attrs.field(validator=_varint)
    body: bytes = b""


@attrs.frozen
class Fetch:
    """FETCH; pibridge keeps no history to fetch from, so it answers FETCH_ERROR."""

    MESSAGE_TYPE: ClassVar[int] = 0x16
    request_id: int = attrs.field(validator=_varint)
    body: bytes = b""


@attrs.frozen
class Publish:
    """PUBLISH (a publisher-initiated subscription); answered with PUBLISH_ERROR."""

    MESSAGE_TYPE: ClassVar[int] = 0x1D
    request_id: int = attrs.field(validator=_varint)
    body: bytes = b""


@attrs.frozen
class TrackStatusError:
    MESSAGE_TYPE: ClassVar[int] = 0x0F
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class FetchError:
    MESSAGE_TYPE: ClassVar[int] = 0x19
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


@attrs.frozen
class PublishError:
    MESSAGE_TYPE: ClassVar[int] = 0x1F
    request_id: int = attrs.field(validator=_varint)
    error_code: int = attrs.field(validator=_varint)
    reason: str = attrs.field(default="", validator=_reason)


#: Requests outside pibridge's subset that still take a Request ID and get refused.
UnsupportedRequest = SubscribeUpdate | TrackStatus | Fetch | Publish

ControlMessage = (
    ClientSetup
    | ServerSetup
    | GoAway
    | MaxRequestId
    | RequestsBlocked
    | Subscribe
    | SubscribeOk
    | SubscribeError
    | Unsubscribe
    | PublishDone
    | PublishNamespace
    | PublishNamespaceOk
    | PublishNamespaceError
    | PublishNamespaceDone
    | PublishNamespaceCancel
    | SubscribeNamespace
    | SubscribeNamespaceOk
    | SubscribeNamespaceError
    | UnsubscribeNamespace
    | SubscribeUpdate
    | TrackStatus
    | Fetch
    | Publish
    | TrackStatusError
    | FetchError
    | PublishError
)

#: Messages that open a new request and so take a fresh Request ID.
REQUEST_MESSAGES = (Subscribe, PublishNamespace, SubscribeNamespace)


# -- data streams -------------------------------------------------------------


class SubgroupIdMode(IntEnum):
    """Where a SUBGROUP_HEADER's Subgroup ID comes from (bits 1-2 of its type)."""

    ZERO = 0
    FIRST_OBJECT_ID = 1
    EXPLICIT = 2


@attrs.frozen
class SubgroupHeader:
    """The header that opens a subgroup stream (stream types 0x10-0x1D)."""

    track_alias: int = attrs.field(validator=_varint)
    group_id: int = attrs.field(validator=_varint)
    subgroup_id: int | None = 0
    publisher_priority: int = attrs.field(default=128, validator=_uint8)
    subgroup_id_mode: SubgroupIdMode = attrs.field(
        default=SubgroupIdMode.ZERO, converter=SubgroupIdMode
    )
    extensions_present: bool = False
    end_of_group: bool = False

    def __attrs_post_init__(self) -> None:
        if self.subgroup_id_mode == SubgroupIdMode.EXPLICIT:
            if self.subgroup_id is None:
                raise ValueError("explicit subgroup id missing")
            _varint(self, attrs.fields(SubgroupHeader).subgroup_id, self.subgroup_id)
        elif self.subgroup_id_mode == SubgroupIdMode.ZERO and self.subgroup_id != 0:
            raise ValueError("subgroup id mode ZERO needs subgroup_id 0")
        elif (
            self.subgroup_id_mode == SubgroupIdMode.FIRST_OBJECT_ID and self.subgroup_id is not None
        ):
            raise ValueError("subgroup id comes from the first object; pass None")

    @property
    def stream_type(self) -> int:
        return (
            0x10
            | (0x01 if self.extensions_present else 0)
            | (self.subgroup_id_mode << 1)
            | (0x08 if self.end_of_group else 0)
        )


@attrs.frozen
class SubgroupObject:
    """One object on a subgroup stream: a payload, or a status with no payload."""

    object_id: int = attrs.field(validator=_varint)
    payload: bytes = b""
    status: ObjectStatus = attrs.field(default=ObjectStatus.NORMAL, converter=ObjectStatus)
    extensions: Parameters = attrs.field(default=(), converter=_to_parameters)

    def __attrs_post_init__(self) -> None:
        if self.status != ObjectStatus.NORMAL and self.payload:
            raise ValueError("an object with a status carries no payload")
        if self.status == ObjectStatus.DOES_NOT_EXIST and self.extensions:
            raise ValueError("a non-existent object carries no extensions")
