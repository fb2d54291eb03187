"""Server-sent events: the wire format and a stream that follows a session's log.

Klein finishes a response at once when a route returns ``NOT_DONE_YET``, so a
stream is a Deferred that the route returns while events are written to the
request. When the client goes away Klein cancels that Deferred; the stream then
stops listening and costs nothing more, while the pi turn carries on and its
events stay in the session's log for a later reconnect.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IConsumer, IDelayedCall, IPushProducer, IReactorTime
from twisted.web.iweb import IRequest
from zope.interface import implementer

from pibridge.chat.eventlog import EventLog, LoggedEvent
from pibridge.chat.events import TERMINAL_KINDS, Gap, event_data

DEFAULT_KEEPALIVE = 15.0


def format_event(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    """One event; JSON without raw newlines, so ``data:`` is always one line."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n".encode()


KEEPALIVE_COMMENT = b": keep-alive\n\n"


def parse_last_event_id(value: bytes | str | None) -> int | None:
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    return int(text) if text.isdigit() else None


def start_event_stream(request: IRequest) -> None:
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", b"no-cache")
    request.setHeader(b"x-accel-buffering", b"no")


@implementer(IPushProducer)
@attrs.define(eq=False)
class LogFollower:
    """Writes a session's events to one SSE response.

    It replays what the log holds after ``after``, then writes new events as
    they come. With ``until_terminal`` it finishes after the first ``done`` or
    ``error``; otherwise it follows until the client leaves or ``close`` is called.

    It is a push producer for the response: when a slow client lets the
    transport's buffer fill, writing pauses and later resumes from the log, so
    a slow reader costs at most the log's bound, never an ever-growing buffer.
    """

    request: IRequest
    log: EventLog
    clock: IReactorTime
    keepalive: float = DEFAULT_KEEPALIVE
    until_terminal: bool = True
    finished: defer.Deferred[None] = attrs.field(init=False)
    _stop_listening: Any = attrs.field(default=None, init=False)
    _timer: IDelayedCall | None = attrs.field(default=None, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    _paused: bool = attrs.field(default=False, init=False)
    _written: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.finished = defer.Deferred(lambda _: self._cleanup())

    def write_first(self, event_id: int, kind: str, data: dict[str, Any]) -> None:
        """An event that is not in the log (the ``session`` header of a reconnect)."""
        self.request.write(format_event(event_id, kind, data))

    def start(self, after: int) -> defer.Deferred[None]:
        IConsumer(self.request).registerProducer(self, True)
        self._written = after
        self._catch_up()
        if not self._closed:
            self._stop_listening = self.log.listen(self._deliver)
            self._arm()
        return self.finished

    def _catch_up(self) -> None:
        replay = self.log.since(self._written)
        if replay.gap is not None:
            self._write_gap(replay.gap)
        for event in replay.events:
            self._deliver(event)
            if self._closed or self._paused:
                return

    # IPushProducer: the transport says when the client is not keeping up.
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused or self._closed:
            return
        self._paused = False
        self._catch_up()

    def stopProducing(self) -> None:
        if not self._closed:
            self._cleanup()

    def _write_gap(self, gap: Gap) -> None:
        # The gap carries the id just before the first kept event, so the
        # client's position moves to where the log resumes.
        self._written = gap.first_available - 1
        self.request.write(format_event(self._written, gap.kind, event_data(gap)))

    def _deliver(self, event: LoggedEvent) -> None:
        if self._closed or self._paused or event.id <= self._written:
            return
        self._written = event.id
        self.request.write(format_event(event.id, event.kind, event.data))
        self._arm()
        if self.until_terminal and event.kind in TERMINAL_KINDS:
            self.close()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.keepalive)
        else:
            self._timer = self.clock.callLater(self.keepalive, self._keep_alive)

    def _keep_alive(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._paused:
            self._arm()
            return
        self.request.write(KEEPALIVE_COMMENT)
        self._arm()

    def close(self) -> None:
        """Finish the response (the stream ended normally)."""
        if self._closed:
            return
        self._cleanup()
        self.finished.callback(None)

    def _cleanup(self) -> None:
        self._closed = True
        request: Any = self.request
        # After the connection is gone the request has no channel to unregister from.
        if getattr(request, "channel", None) is not None and request.producer is self:
            IConsumer(request).unregisterProducer()
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
