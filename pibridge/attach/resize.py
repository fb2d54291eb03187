"""SIGWINCH to resize messages: coalesced, but the final size is always sent.

A window being dragged produces dozens of SIGWINCH per second; each resize
makes pi redraw everything. At most one resize goes out per ``interval``;
changes in between are folded into one that carries the size at the time it
is sent, so the program always ends at the size the user ended at.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
from attrs import define
from twisted.internet.interfaces import IDelayedCall, IReactorTime

DEFAULT_INTERVAL: Final = 0.03

Size = tuple[int, int]


@define(eq=False)
class ResizeCoalescer:
    clock: IReactorTime
    current_size: Callable[[], Size]
    send: Callable[[int, int], None]
    interval: float = DEFAULT_INTERVAL
    last_sent: Size | None = None
    _last_sent_at: float | None = attrs.field(init=False, default=None)
    _pending: IDelayedCall | None = attrs.field(init=False, default=None)

    def changed(self) -> None:
        """The window changed (SIGWINCH); send now or fold into the scheduled send."""
        if self._pending is not None:
            return
        now = self.clock.seconds()
        if self._last_sent_at is None or now - self._last_sent_at >= self.interval:
            self._send_current()
        else:
            self._pending = self.clock.callLater(
                self._last_sent_at + self.interval - now, self._fire
            )

    def stop(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _fire(self) -> None:
        self._pending = None
        self._send_current()

    def _send_current(self) -> None:
        size = self.current_size()
        if size == self.last_sent:
            return
        self.last_sent = size
        self._last_sent_at = self.clock.seconds()
        self.send(*size)
