"""Look up the wire codec of a MoQ Transport version.

Callers go through :func:`codec_for_version` so a later draft can be added
beside draft-14 without touching them.
"""

from __future__ import annotations

from types import ModuleType

from pibridge.moq import draft14
from pibridge.moq.errors import ProtocolViolation, SessionErrorCode

DRAFT_14 = draft14.VERSION

_CODECS: dict[int, ModuleType] = {DRAFT_14: draft14}

SUPPORTED_VERSIONS: tuple[int, ...] = tuple(_CODECS)


def codec_for_version(version: int) -> ModuleType:
    """The codec module for ``version``; an unknown version fails negotiation."""
    try:
        return _CODECS[version]
    except KeyError:
        raise ProtocolViolation(
            f"unsupported MoQ Transport version {version:#x}",
            SessionErrorCode.VERSION_NEGOTIATION_FAILED,
        ) from None
