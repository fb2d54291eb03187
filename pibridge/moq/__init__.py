"""MoQ Transport (draft-ietf-moq-transport-14) for Twisted, over the QUIC adapter.

The codec is versioned (:func:`codec_for_version`); a :class:`MoqSession` is
the QUIC connection handler; local tracks are :class:`TrackPublisher`
transports; remote tracks arrive through :class:`Subscription` transports.
"""

from pibridge.moq.codec import DRAFT_14, SUPPORTED_VERSIONS, codec_for_version
from pibridge.moq.endpoint import (
    ALPN,
    MoqServerService,
    connectMoq,
    listenMoq,
    moqSessionFactory,
)
from pibridge.moq.errors import (
    ProtocolViolation,
    PublishDoneCode,
    SessionErrorCode,
    SubscribeErrorCode,
)
from pibridge.moq.filters import AbsoluteRange, AbsoluteStart, LargestObject, NextGroupStart
from pibridge.moq.publisher import Refusal, SubscribeRequest, TrackPublisher, TrackRegistry
from pibridge.moq.session import GoingAway, MoqSession, NamespaceAnnouncement, SessionState
from pibridge.moq.subscriber import (
    SessionClosed,
    SubscribeRefused,
    Subscription,
    TrackEnded,
    Unsubscribed,
)

__all__ = [
    "ALPN",
    "DRAFT_14",
    "SUPPORTED_VERSIONS",
    "AbsoluteRange",
    "AbsoluteStart",
    "GoingAway",
    "LargestObject",
    "MoqServerService",
    "MoqSession",
    "NamespaceAnnouncement",
    "NextGroupStart",
    "ProtocolViolation",
    "PublishDoneCode",
    "Refusal",
    "SessionClosed",
    "SessionErrorCode",
    "SessionState",
    "SubscribeErrorCode",
    "SubscribeRefused",
    "SubscribeRequest",
    "Subscription",
    "TrackEnded",
    "TrackPublisher",
    "TrackRegistry",
    "Unsubscribed",
    "codec_for_version",
    "connectMoq",
    "listenMoq",
    "moqSessionFactory",
]
