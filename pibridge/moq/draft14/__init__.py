"""draft-ietf-moq-transport-14: messages, control codec and subgroup streams."""

from __future__ import annotations

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
    encode_subgroup_object,
)
from pibridge.moq.draft14.messages import VERSION

__all__ = [
    "VERSION",
    "ControlStreamParser",
    "SubgroupStreamParser",
    "SubgroupWriter",
    "decode_message",
    "decode_payload",
    "decode_subgroup_header",
    "decode_subgroup_object",
    "decode_token",
    "encode_message",
    "encode_payload",
    "encode_subgroup_header",
    "encode_subgroup_object",
    "encode_token",
]
