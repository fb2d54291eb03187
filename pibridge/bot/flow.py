"""When the PTY may be read: output is only produced as fast as a client takes it.

Reading the PTY stops for any of three reasons, and resumes when none holds:

- the client has not acknowledged ``window`` bytes (it shows output slower
  than the link carries it: a terminal renders a few MB/s, so a deep queue
  would make Ctrl-C wait behind seconds of output);
- the QUIC stream under the stdout track is above its high-water mark;
- no client is attached and the reattach buffer holds all it can keep
  without losing bytes the client has not acknowledged.

When reading stops the program blocks in ``write``; nothing is dropped.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IPushProducer

#: Unacknowledged output allowed in flight to an attached client.
DEFAULT_WINDOW = 64 * 1024


@attrs.define(eq=False)
class OutputGate:
    producer: IPushProducer
    window: int = DEFAULT_WINDOW
    detached_limit: int = 1024 * 1024
    produced: int = 0
    acknowledged: int = 0
    attached: bool = False
    link_paused: bool = False
    paused: bool = attrs.field(default=False, init=False)
    #: How often reading stopped: a sign of slow clients or slow links.
    pauses: int = attrs.field(default=0, init=False)

    @property
    def in_flight(self) -> int:
        return self.produced - self.acknowledged

    def should_pause(self) -> bool:
        limit = self.window if self.attached else self.detached_limit
        return self.in_flight >= limit or (self.attached and self.link_paused)

    def update(self) -> None:
        wanted = self.should_pause()
        if wanted and not self.paused:
            self.paused = True
            self.pauses += 1
            self.producer.pauseProducing()
        elif not wanted and self.paused:
            self.paused = False
            self.producer.resumeProducing()

    def output(self, count: int) -> None:
        self.produced += count
        self.update()

    def acknowledge(self, offset: int) -> None:
        """The client has shown everything before ``offset`` (stale acks are ignored)."""
        if self.acknowledged < offset <= self.produced:
            self.acknowledged = offset
            self.update()

    def attach(self, resume_offset: int) -> None:
        self.attached = True
        self.link_paused = False
        self.acknowledged = max(self.acknowledged, min(resume_offset, self.produced))
        self.update()

    def detach(self) -> None:
        self.attached = False
        self.link_paused = False
        self.update()

    def link_pause(self) -> None:
        self.link_paused = True
        self.update()

    def link_resume(self) -> None:
        self.link_paused = False
        self.update()
