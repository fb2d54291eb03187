"""JSON log lines for log shippers: one object per line, already redacted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import IO, Any

import attrs
from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer


@implementer(ILogObserver)
@attrs.define(eq=False)
class JsonLinesObserver:
    """``{"time", "level", "namespace", "message"}`` per event, plus a traceback if any."""

    stream: IO[str]

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0.0), UTC).isoformat(),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()
