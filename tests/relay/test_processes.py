"""The real processes through the relay: ``twistd pibridge --relay`` and
``pibridge-attach --relay`` under tmux, as a person runs them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.bot import ATTACH, BOT_KEY_LINE, SHELL, Bot
from tests.e2e.conftest import user_environment
from tests.e2e.tmux import SHELL_PROMPT, TmuxTerminal
from tests.relay.harness import FixedRelay, start_relay
from tests.servers import ServerProcess


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[FixedRelay]:
    rust = start_relay(tmp_path)
    yield rust
    rust.stop()


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[TmuxTerminal]:
    terminal = TmuxTerminal(tmp_path / "tmux.sock", env=user_environment())
    terminal.start(tmp_path)
    try:
        yield terminal
    finally:
        terminal.kill()


@contextmanager
def relay_bot(tmp_path: Path, relay: FixedRelay) -> Iterator[Bot]:
    """``twistd pibridge --relay``: a bot that listens nowhere and meets clients at the relay."""
    workspace = tmp_path / "workspace"
    state = tmp_path / "state"
    workspace.mkdir(parents=True)
    server = ServerProcess(
        [
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--workspace",
            str(workspace),
            "--state-dir",
            str(state),
            "--pi-command",
            SHELL,
            "--relay",
            f"moqt://127.0.0.1:{relay.port}",
            "--relay-fingerprint",
            relay.fingerprint,
        ],
        cwd=tmp_path,
        env=dict(os.environ),
    )
    bot = Bot(server, state, workspace)
    try:
        bot.bot_key = server.wait_for(BOT_KEY_LINE).group(1).decode()
        bot.wait_for_log("serving terminal sessions through the relay")
        yield bot
    finally:
        if server.process.poll() is None:
            server.stop()


def relay_attach_argv(bot: Bot, relay: FixedRelay, tmp: Path) -> str:
    token_file = tmp / "token"
    token_file.write_text(bot.token())
    return " ".join(
        [
            ATTACH,
            "--relay",
            f"moqt://127.0.0.1:{relay.port}",
            "--bot-key",
            bot.bot_key,
            "--fingerprint",
            relay.fingerprint,
            "--known-hosts",
            str(tmp / "client_known_hosts"),
            "--token-file",
            str(token_file),
        ]
    )


def test_twistd_and_pibridge_attach_through_the_relay(
    relay: FixedRelay, tmux: TmuxTerminal, tmp_path: Path
) -> None:
    with relay_bot(tmp_path / "bot", relay) as bot:
        tmux.run(relay_attach_argv(bot, relay, tmp_path))
        tmux.run("echo through-the-relay-$((6*7))")
        tmux.wait_for("through-the-relay-42")
        tmux.resize(91, 27)
        tmux.run("stty size")
        tmux.wait_for(r"27 91")
        tmux.run("exit 5")
        tmux.wait_for(lambda s: s.rstrip().endswith(SHELL_PROMPT.rstrip()), timeout=15)
        tmux.run("echo EXIT=$?")
        screen = tmux.wait_for(r"EXIT=\d+")
        assert re.search(r"EXIT=5", screen)
