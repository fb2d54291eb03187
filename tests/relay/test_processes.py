"""The real processes through the relay: ``twistd pibridge --relay`` and
``pibridge-attach --relay`` under tmux, as a person runs them."""

from __future__ import annotations

import os
import re
import shlex
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.bot import ATTACH, BOT_KEY_LINE, SHELL, Bot
from tests.e2e.conftest import user_environment
from tests.e2e.counting import assert_contiguous, numbers
from tests.e2e.pty_driver import PtyRun
from tests.e2e.tmux import SHELL_PROMPT, TmuxTerminal
from tests.relay.harness import FixedRelay
from tests.servers import ServerProcess


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[TmuxTerminal]:
    terminal = TmuxTerminal(tmp_path / "tmux.sock", env=user_environment())
    terminal.start(tmp_path)
    try:
        yield terminal
    finally:
        terminal.kill()


@contextmanager
def relay_bot(tmp_path: Path, relay: FixedRelay, *extra: str) -> Iterator[Bot]:
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
            *extra,
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


def relay_attach_argv(bot: Bot, relay: FixedRelay, tmp: Path, *extra: str) -> list[str]:
    token_file = tmp / "token"
    token_file.write_text(bot.token())
    return [
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
        *extra,
    ]


def test_twistd_and_pibridge_attach_through_the_relay(
    relay: FixedRelay, tmux: TmuxTerminal, tmp_path: Path
) -> None:
    with relay_bot(tmp_path / "bot", relay) as bot:
        tmux.run(" ".join(relay_attach_argv(bot, relay, tmp_path)))
        tmux.run("echo through-the-relay-$((6*7))")
        tmux.wait_for("through-the-relay-42")
        tmux.resize(91, 27)
        tmux.run("stty size")
        tmux.wait_for(r"27 91")
        tmux.run("exit 5")
        tmux.wait_for(lambda s: s.rstrip().endswith(SHELL_PROMPT.rstrip()), timeout=10)
        tmux.run("echo EXIT=$?")
        screen = tmux.wait_for(r"EXIT=\d+")
        assert re.search(r"EXIT=5", screen)


COUNTER = Path(__file__).parent.parent / "e2e" / "programs" / "counter.py"


def test_a_killed_client_reattaches_through_the_relay_and_loses_nothing(
    relay: FixedRelay, tmp_path: Path
) -> None:
    """kill -9 the client (the relay still holds its connection for a while), then
    attach again to the same session: the program carried on, nothing is lost."""
    session = str(uuid.uuid4())
    with relay_bot(tmp_path / "bot", relay, "--heartbeat", "0.25", "--grace", "30") as bot:
        argv = relay_attach_argv(bot, relay, tmp_path, "--session", session)
        first = PtyRun(argv, env=user_environment(), stderr_pipe=True)
        try:
            first.expect(b"# ")
            first.send(f"exec python3 {shlex.quote(str(COUNTER))} 300\r".encode())
            first.expect(b"n=000000100 ")
            mark = bot.log_size()
            first.process.kill()
            first.process.wait(5)
            bot.wait_for_log(rf"{session} detached", after=mark)
            seen_before = numbers(bytes(first.output))[-1]
        finally:
            first.close()
        second = PtyRun(argv, env=user_environment(), stderr_pipe=True)
        try:
            second.expect(f"n={seen_before + 600:09d} ".encode(), timeout=20)
            assert_contiguous(numbers(bytes(second.output)))
            second.send(b"\x03")
            assert second.finish() == 128 + signal.SIGINT
        finally:
            second.close()


def test_the_relay_restarts_under_the_real_processes_and_nothing_is_lost(
    relay: FixedRelay, tmp_path: Path
) -> None:
    """Stop the relay mid-session and start it again on the same port: twistd redials,
    pibridge-attach reattaches by itself, and every counter line arrives once, in order."""
    restarted = None
    with relay_bot(tmp_path / "bot", relay, "--heartbeat", "0.5", "--grace", "30") as bot:
        client = PtyRun(relay_attach_argv(bot, relay, tmp_path), env=user_environment())
        try:
            client.expect(b"# ")
            client.send(f"exec python3 {shlex.quote(str(COUNTER))} 200\r".encode())
            client.expect(b"n=000000050 ")
            mark = bot.log_size()
            restarted = relay.restarted()
            bot.wait_for_log("serving terminal sessions through the relay", after=mark)
            bot.wait_for_log(r"attached for alice/team", after=mark, timeout=30)
            seen = numbers(bytes(client.output))[-1]
            client.expect(f"n={seen + 400:09d} ".encode(), timeout=30)
            assert_contiguous(numbers(bytes(client.output)))
            client.send(b"\x03")
            assert client.finish() == 128 + signal.SIGINT
        finally:
            client.close()
            if restarted is not None:
                restarted.stop()
