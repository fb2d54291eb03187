"""Terminal sessions over real MoQ on loopback: output, input, resize, exit, refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest_twisted

from pibridge.terminal.control import OpenAck, Status
from tests.bot.loopback import attach, start_bot

SHELLISH = (
    sys.executable,
    "-c",
    "import sys, os, signal\n"
    "def winch(*_):\n"
    "    size = os.get_terminal_size()\n"
    "    os.write(1, b'winch %dx%d\\r\\n' % (size.columns, size.lines))\n"
    "signal.signal(signal.SIGWINCH, winch)\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    line = line.strip()\n"
    "    if line.startswith('exit'): sys.exit(int(line.split()[1]))\n"
    "    else: print('echo:' + line, flush=True)\n",
)


@pytest_twisted.inlineCallbacks
def test_type_see_output_resize_and_exit_code(tmp_path: Path) -> None:
    bot = start_bot(tmp_path, SHELLISH)
    try:
        client = yield attach(bot, tmp_path)
        yield client.until(lambda c: b"ready" in c.output)
        assert isinstance(client.controls[0], OpenAck)
        client.link.send_input(b"hello\r")
        yield client.until(lambda c: b"echo:hello" in c.output)
        client.link.send_resize(120, 40)
        yield client.until(lambda c: b"winch 120x40" in c.output)
        client.link.send_input(b"exit 7\r")
        yield client.until(lambda c: c.close is not None)
        assert client.close.reason == "remote_exit"
        assert client.close.exit_code == 7
    finally:
        yield bot.bot.stop()
        yield bot.port.stopListening()


@pytest_twisted.inlineCallbacks
def test_forged_token_is_refused_with_a_reason(tmp_path: Path) -> None:
    bot = start_bot(tmp_path, SHELLISH)
    try:
        client = yield attach(bot, tmp_path, token="not-a-token")
        yield client.until(lambda c: c.close is not None)
        assert client.close.reason == "refused"
        assert "malformed" in (client.close.message or "")
        assert not bot.bot.sessions
    finally:
        yield bot.bot.stop()
        yield bot.port.stopListening()


FLOOD = (sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('y' * 4096)")


@pytest_twisted.inlineCallbacks
def test_held_back_output_is_reported_slow_and_bounded(tmp_path: Path) -> None:
    """A client that stops showing output gets a window's worth, and a "slow" status."""
    bot = start_bot(tmp_path, FLOOD)
    try:
        client = yield attach(bot, tmp_path)
        client.acking = False
        yield client.until(
            lambda c: any(isinstance(m, Status) and m.state == "slow" for m in c.controls)
        )
        [session] = bot.bot.sessions.values()
        assert session.gate is not None and session.gate.paused
        window = session.gate.window
        # Bounded: the program blocks instead of output piling up anywhere.
        assert len(client.output) <= window + 64 * 1024
        client.resume_acking()
        yield client.until(
            lambda c: any(isinstance(m, Status) and m.state == "ok" for m in c.controls)
        )
        assert len(client.output) > window
    finally:
        yield bot.bot.stop()
        yield bot.port.stopListening()


LAST_WORDS = (
    sys.executable,
    "-c",
    "import os\nfor _ in range(64): os.write(1, b'x' * 16384)\nos.write(1, b'LAST-WORDS')\n",
)


@pytest_twisted.inlineCallbacks
def test_the_last_output_of_a_program_that_exits_while_held_back_arrives(
    tmp_path: Path,
) -> None:
    bot = start_bot(tmp_path, LAST_WORDS)
    try:
        client = yield attach(bot, tmp_path)
        client.acking = False
        yield client.until(lambda c: len(c.output) > 0)
        [session] = bot.bot.sessions.values()
        yield client.until(lambda c: session.gate is not None and session.gate.paused)
        client.resume_acking()
        client.acking = True
        yield client.until(lambda c: c.close is not None)
        assert client.output.endswith(b"LAST-WORDS")
    finally:
        yield bot.bot.stop()
        yield bot.port.stopListening()
