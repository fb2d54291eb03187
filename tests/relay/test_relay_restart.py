"""The relay restarts mid-session: bot and client come back and no output is lost."""

# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from tests.relay.harness import eventually, real_client, start_relay, start_relay_bot

LINES = 400


COUNTER = (
    sys.executable,
    "-c",
    "import os, sys, time, termios\n"
    "attributes = termios.tcgetattr(0)\n"
    "attributes[3] &= ~termios.ECHO\n"
    "termios.tcsetattr(0, termios.TCSANOW, attributes)\n"
    f"for n in range({LINES}):\n"
    "    os.write(1, b'count %d\\n' % n)\n"
    "    time.sleep(0.01)\n"
    "sys.stdin.readline()\n"
    "sys.exit(3)\n",
)


def counted(output: bytes | bytearray) -> list[int]:
    return [int(n) for n in re.findall(rb"count (\d+)\r\n", output)]


@pytest_twisted.inlineCallbacks
def test_relay_restart_mid_session_loses_no_output(tmp_path: Path) -> Generator[Any, Any, None]:
    relay = start_relay(tmp_path)
    bot = start_relay_bot(relay, tmp_path, COUNTER)
    attachment = None
    try:
        yield bot.connected()
        token = bot.token()
        attachment, client, terminal = real_client(
            relay, tmp_path, bot, token, "0b5e3c1e-3f7d-4a53-9b59-3f1d2a0c6e11"
        )
        yield attachment.connect()
        yield eventually(lambda: len(counted(attachment.remote_output)) >= 30)
        first_link = attachment.link
        first_relay_session = bot.connector.moq

        relay = relay.restarted()

        yield eventually(
            lambda: (
                attachment.link is not first_link
                and bot.connector.moq is not None
                and bot.connector.moq is not first_relay_session
            ),
            timeout=60,
        )
        yield eventually(lambda: len(counted(attachment.remote_output)) >= LINES, timeout=60)
        assert counted(attachment.remote_output) == list(range(LINES))
        # One drop, one reattach: no storm of parallel attaches.
        assert attachment.attaches == 2
        assert terminal.typed is not None
        terminal.typed(b"\r")
        outcome = yield client.finished.addTimeout(15, reactor)
        assert outcome.exit_code == 3
    finally:
        if attachment is not None:
            attachment.cancel()
        yield bot.stop()
        relay.stop()
