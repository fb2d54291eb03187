"""/metrics reports what an operator watches: sessions, bytes, refusals, pauses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest_twisted

from pibridge.metrics import build_registry, metrics_text
from tests.bot.loopback import attach, start_bot

ECHO = (sys.executable, "-c", "import sys\nfor line in sys.stdin: print('echo', line.strip())")


def sample(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text.decode()}")


@pytest_twisted.inlineCallbacks
def test_terminal_metrics_follow_sessions_bytes_and_refusals(tmp_path: Path) -> None:
    bot = start_bot(tmp_path, ECHO)
    registry = build_registry(bot.bot)
    try:
        client = yield attach(bot, tmp_path)
        client.link.send_input(b"hello\r")
        yield client.until(lambda c: b"echo hello" in c.output)
        refused = yield attach(bot, tmp_path, token="forged")
        yield refused.until(lambda c: c.close is not None)
        text = metrics_text(registry)
        assert sample(text, "pibridge_terminal_sessions") == 1
        assert sample(text, "pibridge_terminal_attached_clients") == 1
        assert sample(text, 'pibridge_terminal_bytes_total{direction="input"}') == 6
        assert sample(text, 'pibridge_terminal_bytes_total{direction="output"}') >= 12
        assert sample(text, 'pibridge_refusals_total{reason="malformed"}') == 1
        assert sample(text, "pibridge_terminal_attaches_total") == 1
    finally:
        yield bot.bot.stop()
        yield bot.port.stopListening()
    text = metrics_text(registry)
    assert sample(text, "pibridge_terminal_sessions") == 0
    assert sample(text, "pibridge_terminal_program_exits_total") == 1
