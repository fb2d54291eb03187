"""Heartbeats on the control track: notice a dead peer, measure round trips.

Either side runs one `Heartbeat`. It sends a ping every ``interval`` seconds
and declares the peer gone when nothing at all (a pong or any other object)
arrived for ``timeout`` seconds. Time comes from an injected clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

import attrs
from attrs import define
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from pibridge.terminal.control import CloseReason, Ping, Pong

DEFAULT_INTERVAL: Final = 5.0
DEFAULT_TIMEOUT: Final = 20.0
#: Outstanding pings remembered for round-trip measurement.
MAX_OUTSTANDING: Final = 16
#: Weight of the newest sample in the smoothed round trip (as in TCP's SRTT).
SMOOTHING: Final = 0.125


@define(eq=False)
class Heartbeat:
    clock: IReactorTime
    send_ping: Callable[[Ping], None]
    on_timeout: Callable[[str], None]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    latest_rtt: float | None = attrs.field(init=False, default=None)
    smoothed_rtt: float | None = attrs.field(init=False, default=None)
    _seq: int = attrs.field(init=False, default=0)
    _outstanding: OrderedDict[int, float] = attrs.field(init=False, factory=OrderedDict)
    _last_heard: float = attrs.field(init=False, default=0.0)
    _ping_call: IDelayedCall | None = attrs.field(init=False, default=None)
    _deadline_call: IDelayedCall | None = attrs.field(init=False, default=None)
    _running: bool = attrs.field(init=False, default=False)

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._last_heard = self.clock.seconds()
        self._send()
        self._deadline_call = self.clock.callLater(self.timeout, self._check_deadline)

    def stop(self) -> None:
        self._running = False
        for call in (self._ping_call, self._deadline_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._deadline_call = None

    def heard(self) -> None:
        """Any object from the peer proves it is alive."""
        self._last_heard = self.clock.seconds()

    def pong_received(self, pong: Pong) -> None:
        self.heard()
        sent = self._outstanding.pop(pong.seq, None)
        if sent is None:
            return
        rtt = max(0.0, self.clock.seconds() - sent)
        self.latest_rtt = rtt
        if self.smoothed_rtt is None:
            self.smoothed_rtt = rtt
        else:
            self.smoothed_rtt += SMOOTHING * (rtt - self.smoothed_rtt)

    def ping_received(self, ping: Ping) -> Pong:
        """The answer to send back for a peer's ping."""
        self.heard()
        return Pong(seq=ping.seq, t=ping.t)

    def _send(self) -> None:
        self._seq += 1
        now = self.clock.seconds()
        self._outstanding[self._seq] = now
        while len(self._outstanding) > MAX_OUTSTANDING:
            self._outstanding.popitem(last=False)
        self._ping_call = self.clock.callLater(self.interval, self._send)
        self.send_ping(Ping(seq=self._seq, t=now))

    def _check_deadline(self) -> None:
        self._deadline_call = None
        if not self._running:
            return
        silent_until = self._last_heard + self.timeout
        now = self.clock.seconds()
        if now >= silent_until:
            self.stop()
            self.on_timeout(CloseReason.HEARTBEAT_TIMEOUT)
            return
        self._deadline_call = self.clock.callLater(silent_until - now, self._check_deadline)
