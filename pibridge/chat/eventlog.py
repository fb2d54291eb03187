"""A bounded per-session log of chat events with monotonic ids.

Clients that reconnect name the last id they saw; what is still in the log is
replayed, and when older events were already dropped the reader learns it
through :class:`~pibridge.chat.events.Gap` instead of silently missing text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from pibridge.chat.events import Gap

DEFAULT_LOG_EVENTS = 4096


@attrs.frozen
class LoggedEvent:
    id: int
    kind: str
    data: dict[str, Any]


Listener = Callable[[LoggedEvent], None]


@attrs.frozen
class Replay:
    gap: Gap | None
    events: tuple[LoggedEvent, ...]


@attrs.define(eq=False)
class EventLog:
    """Keeps the newest ``limit`` events; ids keep counting from ``first_id``."""

    limit: int = DEFAULT_LOG_EVENTS
    first_id: int = 1
    _events: deque[LoggedEvent] = attrs.field(init=False)
    _next_id: int = attrs.field(init=False)
    _listeners: list[Listener] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self._events = deque(maxlen=self.limit)
        self._next_id = self.first_id

    @property
    def last_id(self) -> int:
        """The id of the newest event, or ``first_id - 1`` before any."""
        return self._next_id - 1

    def append(self, kind: str, data: dict[str, Any]) -> LoggedEvent:
        event = LoggedEvent(self._next_id, kind, data)
        self._next_id += 1
        self._events.append(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def since(self, last_seen: int) -> Replay:
        """Events after ``last_seen``, and a gap when some of them are gone."""
        if last_seen >= self.last_id:
            return Replay(None, ())
        oldest = self._events[0].id if self._events else self._next_id
        gap = None
        if last_seen + 1 < oldest:
            gap = Gap(
                first_available=oldest,
                last_seen=last_seen,
                message=(
                    f"events {last_seen + 1} to {oldest - 1} are no longer kept; "
                    "fetch the history to catch up"
                ),
            )
        return Replay(gap, tuple(event for event in self._events if event.id > last_seen))

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for each new event until the returned function is called."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop

    @property
    def listener_count(self) -> int:
        return len(self._listeners)
