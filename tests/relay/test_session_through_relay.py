"""A terminal session through the real moq-rs relay, sealed end to end."""

# mypy: disable-error-code="untyped-decorator"

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest_twisted

from pibridge.terminal.control import OpenAck
from tests.bot.test_moq_terminal import SHELLISH
from tests.relay.harness import (
    FixedRelay,
    attach_through,
    open_request,
    start_relay_bot,
)


@pytest_twisted.inlineCallbacks
def test_type_see_output_resize_and_exit_code_through_the_relay(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    bot = start_relay_bot(relay, tmp_path, SHELLISH)
    try:
        yield bot.connected()
        client = yield attach_through(relay, tmp_path, bot.public_key, open_request(bot.token()))
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
        client.leave()
    finally:
        yield bot.stop()


@pytest_twisted.inlineCallbacks
def test_a_client_that_arrives_before_the_bot_is_served_once_the_bot_dials_in(
    relay: FixedRelay, tmp_path: Path
) -> Generator[Any, Any, None]:
    probe = start_relay_bot(relay, tmp_path, SHELLISH)
    probe.connector.stopService()  # only its key and token authority are used here
    client = yield attach_through(relay, tmp_path, probe.public_key, open_request(probe.token()))
    bot = start_relay_bot(relay, tmp_path, SHELLISH, identity=probe.bot.identity)
    try:
        yield client.until(lambda c: b"ready" in c.output)
        client.link.send_input(b"exit 3\r")
        yield client.until(lambda c: c.close is not None)
        assert client.close.exit_code == 3
        client.leave()
    finally:
        yield bot.stop()
