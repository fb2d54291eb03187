"""Keeping secret values out of log output.

``AgentRuntime.redact`` is applied where pibridge puts pi's stderr or error
text into a message; ``RedactingLogObserver`` is the backstop for a log sink:
wrap the observers that write logs out (file, stdout, journald) and every
event reaches them already formatted and redacted, tracebacks included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer


@implementer(ILogObserver)
@attrs.define(eq=False)
class RedactingLogObserver:
    """Pass each event on with its text (and any traceback) redacted.

    The event handed on is a copy whose ``log_format`` is the redacted,
    already formatted message; a ``log_failure`` becomes its redacted
    traceback text in ``log_traceback``, so nothing unredacted is left to
    render.
    """

    observer: ILogObserver
    redact: Callable[[str], str]

    def __call__(self, event: dict[str, Any]) -> None:
        text = self.redact(formatEvent(event))
        redacted: dict[str, Any] = {
            key: value
            for key, value in event.items()
            if key.startswith("log_") and key not in ("log_format", "log_failure", "log_io")
        }
        redacted["log_format"] = "{log_redacted_text}"
        redacted["log_redacted_text"] = text
        failure = event.get("log_failure")
        if failure is not None:
            redacted["log_redacted_text"] = (
                text + "\n" + self.redact(failure.getTraceback())
            ).rstrip("\n")
        self.observer(redacted)
