"""The channel protocols: each MoQ track of a terminal session is one Twisted protocol.

A subscribed track calls ``dataReceived`` once per object, so a protocol here
sees whole objects: one JSON message on control and resize, one local read on
stdin, one piece of PTY output on stdout.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure


class PayloadChannel(Protocol):
    """Hands each object's payload to a callback; says when the track ends."""

    def __init__(self, received: Callable[[bytes], None], lost: Callable[[Failure], None]) -> None:
        self.received = received
        self.lost = lost

    def dataReceived(self, data: bytes) -> None:
        self.received(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost(reason if reason is not None else Failure(ConnectionError("track ended")))


class ControlChannel(PayloadChannel):
    """The control track: one JSON control message per object."""
