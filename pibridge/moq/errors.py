"""Error codes of MoQ Transport and the typed error every decoder raises.

The codes are those of draft-ietf-moq-transport-14, section "Error Codes".
A decoder never lets ``IndexError`` or ``struct.error`` escape: malformed,
truncated or oversized input becomes a :class:`ProtocolViolation` carrying
the session termination code the session closes the connection with.
"""

from __future__ import annotations

from enum import IntEnum


class SessionErrorCode(IntEnum):
    """Codes carried in the QUIC CONNECTION_CLOSE that terminates a session."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    UNAUTHORIZED = 0x2
    PROTOCOL_VIOLATION = 0x3
    INVALID_REQUEST_ID = 0x4
    DUPLICATE_TRACK_ALIAS = 0x5
    KEY_VALUE_FORMATTING_ERROR = 0x6
    TOO_MANY_REQUESTS = 0x7
    INVALID_PATH = 0x8
    MALFORMED_PATH = 0x9
    GOAWAY_TIMEOUT = 0x10
    CONTROL_MESSAGE_TIMEOUT = 0x11
    DATA_STREAM_TIMEOUT = 0x12
    AUTH_TOKEN_CACHE_OVERFLOW = 0x13
    DUPLICATE_AUTH_TOKEN_ALIAS = 0x14
    VERSION_NEGOTIATION_FAILED = 0x15
    MALFORMED_AUTH_TOKEN = 0x16
    UNKNOWN_AUTH_TOKEN_ALIAS = 0x17
    EXPIRED_AUTH_TOKEN = 0x18
    INVALID_AUTHORITY = 0x19
    MALFORMED_AUTHORITY = 0x1A


class SubscribeErrorCode(IntEnum):
    """Codes of SUBSCRIBE_ERROR."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    TRACK_DOES_NOT_EXIST = 0x4
    INVALID_RANGE = 0x5
    MALFORMED_AUTH_TOKEN = 0x10
    EXPIRED_AUTH_TOKEN = 0x12


class PublishDoneCode(IntEnum):
    """Status codes of PUBLISH_DONE."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TRACK_ENDED = 0x2
    SUBSCRIPTION_ENDED = 0x3
    GOING_AWAY = 0x4
    EXPIRED = 0x5
    TOO_FAR_BEHIND = 0x6
    MALFORMED_TRACK = 0x7


class PublishNamespaceErrorCode(IntEnum):
    """Codes of PUBLISH_NAMESPACE_ERROR and PUBLISH_NAMESPACE_CANCEL."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    UNINTERESTED = 0x4
    MALFORMED_AUTH_TOKEN = 0x10
    EXPIRED_AUTH_TOKEN = 0x12


class SubscribeNamespaceErrorCode(IntEnum):
    """Codes of SUBSCRIBE_NAMESPACE_ERROR."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    NAMESPACE_PREFIX_UNKNOWN = 0x4
    NAMESPACE_PREFIX_OVERLAP = 0x5
    MALFORMED_AUTH_TOKEN = 0x10
    EXPIRED_AUTH_TOKEN = 0x12


class StreamResetCode(IntEnum):
    """Codes for RESET_STREAM / STOP_SENDING on data streams."""

    INTERNAL_ERROR = 0x0
    CANCELLED = 0x1
    DELIVERY_TIMEOUT = 0x2
    SESSION_CLOSED = 0x3


class ProtocolViolation(Exception):
    """The peer broke the protocol; the session must close with ``code``."""

    def __init__(
        self, reason: str, code: SessionErrorCode = SessionErrorCode.PROTOCOL_VIOLATION
    ) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.reason = reason
        self.code = code


class Truncated(ProtocolViolation):
    """Input ended inside a field.

    Incremental parsers catch this to wait for more bytes; anywhere else it is
    a plain protocol violation (a length that does not match its payload).
    """

    def __init__(
        self, reason: str = "input ended inside a field", needed: int | None = None
    ) -> None:
        super().__init__(reason, SessionErrorCode.PROTOCOL_VIOLATION)
        #: Total input length (from the reader's start) the field needs, when known.
        self.needed = needed
