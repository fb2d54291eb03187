"""A program that writes as fast as it can: every byte arrives, and Ctrl-C still works."""

from __future__ import annotations

import re
import time

from tests.e2e.bot import Bot
from tests.e2e.conftest import user_environment
from tests.e2e.pty_driver import PtyRun
from tests.e2e.test_parity import PROMPT

FLOOD_BYTES = 8_000_000


def attach(bot: Bot) -> PtyRun:
    return PtyRun(bot.attach_argv(bot.token()), env=user_environment(), stderr_pipe=True)


def read_for(run: PtyRun, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and run.pump(0.05):
        pass


def test_a_full_speed_flood_arrives_whole(shell_bot: Bot) -> None:
    client = attach(shell_bot)
    try:
        client.expect(PROMPT)
        client.send(f"stty raw -echo; head -c {FLOOD_BYTES} /dev/zero; exit 3\r".encode())
        status = client.finish(timeout=20)
        zeros = bytes(client.output).count(b"\0")
    finally:
        client.close()
    assert zeros == FLOOD_BYTES
    assert status == 3


def test_ctrl_c_stops_a_flood_and_gives_the_prompt_back(shell_bot: Bot) -> None:
    client = attach(shell_bot)
    try:
        client.expect(PROMPT)
        client.send(b"yes flood-line\r")
        client.expect(b"flood-line\r\nflood-line\r\n")
        read_for(client, 1.0)
        client.send(b"\x03")
        client.expect(re.compile(rb"\^C\s*(\x1b\[\?2004h)?bash-[0-9.]+# "), timeout=15)
        client.send(b"exit 4\r")
        assert client.finish(timeout=20) == 4
    finally:
        client.close()
