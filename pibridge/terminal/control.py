"""Control and resize messages of a terminal session (``pibridge/1``).

Every object on a control or resize track is one UTF-8 JSON message with a
``type``. Parsing is strict about types and ranges, because the values end up
in ioctls, environment variables and session tables; it is lenient about
unknown keys, so a newer peer can add fields without breaking an older one.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from typing import Any, ClassVar, Final

import attrs
import cattrs
from attrs import frozen

#: Largest control object accepted or produced.
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Largest credential carried in an ``open``.
MAX_TOKEN_CHARS: Final = 8 * 1024
MIN_DIMENSION: Final = 1
MAX_DIMENSION: Final = 1000
SERVER_VERSION: Final = 1

_TERM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_REASON_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ParseError(ValueError):
    """A control object that is not a valid message; the text says what is wrong."""


class CloseReason(enum.StrEnum):
    """Why a session closed; peers may send reasons newer than this list."""

    USER_EXIT = "user_exit"
    NETWORK_ERROR = "network_error"
    REMOTE_EXIT = "remote_exit"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    REFUSED = "refused"
    SERVER_SHUTDOWN = "server_shutdown"
    GRACE_EXPIRED = "grace_expired"
    REPLACED = "replaced"
    PROTOCOL_ERROR = "protocol_error"


class StatusState(enum.StrEnum):
    OK = "ok"
    SLOW = "slow"
    RECONNECTING = "reconnecting"


def _session_id(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{attribute.name} must be a UUID") from None
    if len(value) != 36 or str(parsed) != value.lower():
        raise ValueError(f"{attribute.name} must be a UUID in 8-4-4-4-12 form")


def _dimension(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not MIN_DIMENSION <= value <= MAX_DIMENSION:
        raise ValueError(f"{attribute.name} must be in {MIN_DIMENSION}..{MAX_DIMENSION}")


def _matches(pattern: re.Pattern[str], what: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if not pattern.fullmatch(value):
            raise ValueError(f"{attribute.name} must be {what}")

    return check


def _bounded_text(limit: int, *, allow_empty: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if not allow_empty and not value:
            raise ValueError(f"{attribute.name} must not be empty")
        if len(value) > limit:
            raise ValueError(f"{attribute.name} must be at most {limit} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(f"{attribute.name} must not contain control characters")

    return check


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


def _finite(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number")


@frozen
class Open:
    """Client asks to start, or reattach to, a session."""

    TYPE: ClassVar[str] = "open"
    session_id: str = attrs.field(validator=_session_id)
    agent_group_id: str = attrs.field(validator=_bounded_text(256))
    term: str = attrs.field(validator=_matches(_TERM_PATTERN, "a terminal type name"))
    cols: int = attrs.field(validator=_dimension)
    rows: int = attrs.field(validator=_dimension)
    token: str = attrs.field(validator=_bounded_text(MAX_TOKEN_CHARS, allow_empty=True), repr=False)
    #: For a reattach: the absolute output offset the client has already shown.
    resume_offset: int | None = attrs.field(default=None, validator=_non_negative)
    #: The attach epoch: the MoQ group both ends write this attach's objects in.
    epoch: int = attrs.field(default=0, validator=_non_negative)


@frozen
class OpenAck:
    """Bot accepted the open; output starts at ``output_offset``."""

    TYPE: ClassVar[str] = "open_ack"
    session_id: str = attrs.field(validator=_session_id)
    server_version: int = SERVER_VERSION
    output_offset: int | None = attrs.field(default=None, validator=_non_negative)
    #: True when the reattach could not be served from the buffer (a redraw follows).
    output_gap: bool | None = None


@frozen
class Close:
    """Either side ends the session and says why."""

    TYPE: ClassVar[str] = "close"
    session_id: str = attrs.field(validator=_session_id)
    reason: str = attrs.field(validator=_matches(_REASON_PATTERN, "a snake_case reason"))
    exit_code: int | None = attrs.field(default=None)
    signal: int | None = attrs.field(default=None, validator=_non_negative)
    message: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_bounded_text(1024))
    )


@frozen
class Ping:
    TYPE: ClassVar[str] = "ping"
    seq: int = attrs.field(validator=_non_negative)
    t: float = attrs.field(validator=_finite)


@frozen
class Pong:
    TYPE: ClassVar[str] = "pong"
    seq: int = attrs.field(validator=_non_negative)
    t: float = attrs.field(validator=_finite)


@frozen
class Error:
    TYPE: ClassVar[str] = "error"
    code: str = attrs.field(validator=_matches(_CODE_PATTERN, "a snake_case code"))
    message: str = attrs.field(validator=_bounded_text(1024, allow_empty=True))
    session_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_session_id)
    )


@frozen
class Status:
    """A condition the user should see, such as a slow connection."""

    TYPE: ClassVar[str] = "status"
    state: str = attrs.field(validator=_matches(_REASON_PATTERN, "a snake_case state"))
    session_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_session_id)
    )
    detail: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_bounded_text(1024))
    )


@frozen
class Resize:
    TYPE: ClassVar[str] = "resize"
    session_id: str = attrs.field(validator=_session_id)
    cols: int = attrs.field(validator=_dimension)
    rows: int = attrs.field(validator=_dimension)


@frozen
class Ack:
    """Client has shown all output before ``offset``; the bot may send more.

    The bot keeps at most a window of unacknowledged output in flight, so a
    terminal that renders slowly never sits behind seconds of queued bytes
    (what would make Ctrl-C slow under a flood).
    """

    TYPE: ClassVar[str] = "ack"
    offset: int = attrs.field(validator=_non_negative)


Message = Open | OpenAck | Close | Ping | Pong | Error | Status | Resize | Ack

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.TYPE: cls for cls in (Open, OpenAck, Close, Ping, Pong, Error, Status, Resize, Ack)
}


def _strict_int(value: object, _: type) -> int:
    if type(value) is not int:
        raise TypeError("expected an integer")
    return value


def _strict_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _strict_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string contains a lone surrogate") from None
    return value


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    return converter


_converter = _make_converter()


def parse(payload: bytes, *, expect: tuple[type[Message], ...] | None = None) -> Message:
    """Decode one control object; raise `ParseError` saying precisely what is wrong.

    ``expect`` restricts which message types are acceptable on this track.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ParseError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParseError(f"message is not UTF-8 (byte {e.start})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as e:
        raise ParseError(f"message is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise ParseError("message must be a JSON object")
    kind = document.get("type")
    if not isinstance(kind, str):
        raise ParseError("message has no string 'type'")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ParseError(f"unknown message type {kind[:32]!r}")
    if expect is not None and cls not in expect:
        raise ParseError(f"message type {kind!r} is not allowed here")
    fields = {k: v for k, v in document.items() if k != "type"}
    try:
        return _converter.structure(fields, cls)
    except cattrs.ClassValidationError as e:
        details = "; ".join(cattrs.transform_error(e, path=kind, format_exception=_describe))
        raise ParseError(f"invalid {kind} message: {details}") from None
    except (ValueError, TypeError) as e:
        raise ParseError(f"invalid {kind} message: {e}") from None


def _describe(exc: BaseException, expected: type | None) -> str:
    """Say what was wrong with a field; our validators' own words when they raised."""
    if type(exc) is ValueError and exc.args:
        return str(exc)
    return cattrs.v.format_exception(exc, expected)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def serialize(message: Message) -> bytes:
    """Encode one message as a control object; absent optional fields are omitted."""
    body: dict[str, Any] = {"type": message.TYPE}
    for key, value in _converter.unstructure(message).items():
        if value is not None:
            body[key] = value
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES} bytes")
    return data
