"""Terminal bytes never reach the log, except redacted and only in debug mode."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, formatEvent, globalLogPublisher

from pibridge.terminal.redaction import describe_bytes, log_io

SECRET = b"password=hunter2\x1b[31m"


def _capture(enabled: bool) -> list[str]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        log_io(Logger(), enabled, "pty input", SECRET)
    finally:
        globalLogPublisher.removeObserver(events.append)
    return [formatEvent(event) + repr(event) for event in events]


def test_nothing_is_logged_unless_debug_io_is_on() -> None:
    assert _capture(False) == []


def test_debug_io_logs_only_length_and_digest() -> None:
    (text,) = _capture(True)
    assert "len=21" in text
    assert describe_bytes(SECRET) in text
    assert "hunter2" not in text
    assert "password" not in text


def test_digest_distinguishes_streams_without_revealing_them() -> None:
    assert describe_bytes(b"a") != describe_bytes(b"b")
    assert describe_bytes(b"") == "len=0 sha256:e3b0c442"
