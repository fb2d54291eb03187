"""Two bots share one relay: every client reaches the bot it pinned, never the other."""

# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted

from pibridge.bot.server import client_namespace
from tests.relay.harness import (
    FixedRelay,
    attach_through,
    open_request,
    start_relay_bot,
)


def named(name: str) -> tuple[str, ...]:
    """A program that says which bot runs it, and says so again for every line typed."""
    return (
        sys.executable,
        "-c",
        f"import sys\nprint('I am {name}', flush=True)\n"
        f"for line in sys.stdin: print('{name} heard ' + line.strip(), flush=True)\n",
    )


@pytest_twisted.inlineCallbacks
def test_each_client_reaches_its_own_bot_and_the_other_leaves_it_alone(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    amber = start_relay_bot(relay, tmp_path, named("amber"), name="amber")
    birch = start_relay_bot(relay, tmp_path, named("birch"), name="birch")
    clients = []
    try:
        yield amber.connected()
        yield birch.connected()
        to_amber = open_request(amber.token())
        to_birch = open_request(birch.token())
        for_amber = yield attach_through(relay, tmp_path, amber.public_key, to_amber)
        clients.append(for_amber)
        for_birch = yield attach_through(relay, tmp_path, birch.public_key, to_birch)
        clients.append(for_birch)
        yield for_amber.until(lambda c: b"I am amber" in c.output)
        yield for_birch.until(lambda c: b"I am birch" in c.output)
        for_amber.link.send_input(b"one\r")
        for_birch.link.send_input(b"two\r")
        yield for_amber.until(lambda c: b"amber heard one" in c.output)
        yield for_birch.until(lambda c: b"birch heard two" in c.output)

        assert b"birch" not in for_amber.output
        assert b"amber" not in for_birch.output
        # Each bot saw the other's client on the relay, and did nothing with it.
        assert client_namespace(to_birch.session_id) in amber.bot.heard
        assert client_namespace(to_amber.session_id) in birch.bot.heard
        assert set(amber.bot.sessions) == {to_amber.session_id}
        assert set(birch.bot.sessions) == {to_birch.session_id}
        assert amber.bot.refusals == {}
        assert birch.bot.refusals == {}
        assert {a.session_id for a in amber.bot.attachments} == {to_amber.session_id}
        assert {a.session_id for a in birch.bot.attachments} == {to_birch.session_id}
        # Nothing reached either client that failed to open (no word from the other bot).
        assert for_amber.link.seal.failures == 0
        assert for_birch.link.seal.failures == 0
        assert not for_amber.lost and not for_birch.lost
    finally:
        for client in clients:
            client.leave()
        yield amber.stop()
        yield birch.stop()
