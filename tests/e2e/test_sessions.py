"""Terminal sessions through the real CLI: resizing, heartbeats, killed clients, refusals."""

from __future__ import annotations

import shlex
import signal
import time
import uuid
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from tests.e2e.bot import Bot, running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.counting import assert_contiguous, numbers
from tests.e2e.pty_driver import PtyRun
from tests.e2e.tmux import SHELL_PROMPT, TmuxTerminal

PROGRAMS = Path(__file__).parent / "programs"
EXIT_REFUSED = 77
REMOTE_PROMPT = r"(?m)^bash-[0-9.]+#\s*$"


def remote_programs(bot: Bot) -> list[psutil.Process]:
    """Programs the bot runs in terminal sessions (still alive)."""
    return [
        child
        for child in psutil.Process(bot.pid).children(recursive=True)
        if child.status() != psutil.STATUS_ZOMBIE
    ]


def attach(bot: Bot, *extra: str, token: str | None = None, cols: int = 80) -> PtyRun:
    return PtyRun(
        bot.attach_argv(token or bot.token(), *extra),
        cols=cols,
        env=user_environment(),
        stderr_pipe=True,
    )


def counter(rate: int) -> bytes:
    return f"exec python3 {shlex.quote(str(PROGRAMS / 'counter.py'))} {rate}\r".encode()


def test_resizing_while_output_streams_leaves_the_program_at_the_final_size(
    shell_bot: Bot, tmux: TmuxTerminal
) -> None:
    tmux.run(" ".join(shell_bot.attach_argv(shell_bot.token())))
    tmux.wait_for(REMOTE_PROMPT)
    tmux.run(f"python3 {shlex.quote(str(PROGRAMS / 'window_size.py'))} 3")
    tmux.wait_for("stream 1 ")
    sizes = [(60 + 7 * i % 50, 15 + 3 * i % 30) for i in range(25)] + [(97, 33)]
    for cols, rows in sizes:
        tmux.resize(cols, rows)
        time.sleep(0.04)  # a person dragging a window edge, not an event to wait on
    tmux.wait_for("STREAM-DONE", timeout=20, whole=True)
    tmux.run("")  # a typed line: the program reports the size it sees now
    tmux.wait_for(r"SIZE 97x33\s*$")
    tmux.run("quit")
    tmux.wait_for(REMOTE_PROMPT)
    tmux.run("stty size")
    tmux.wait_for(r"\n33 97\s*\n")
    tmux.run("exit")
    tmux.wait_for(lambda s: s.rstrip().endswith(SHELL_PROMPT.rstrip()))


def test_a_frozen_client_loses_its_attach_but_not_its_program(tmp_path: Path) -> None:
    """SIGSTOP the client: the bot gives up on it after the heartbeat timeout and keeps
    the program for the grace window. SIGCONT: the client finds its link gone, reattaches
    by itself and the session carries on where it was."""
    with running_bot(tmp_path, heartbeat=0.25, grace=20) as bot:
        client = attach(bot)
        try:
            client.expect(b"# ")
            client.send(b"echo before $((1+1))\r")
            client.expect(b"before 2")
            program = remote_programs(bot)
            assert len(program) == 1
            mark = bot.log_size()
            client.signal(signal.SIGSTOP)
            bot.wait_for_log(r"detached: heartbeat_timeout", after=mark, timeout=10)
            assert program[0].is_running() and program[0].status() != psutil.STATUS_ZOMBIE
            client.signal(signal.SIGCONT)
            bot.wait_for_log(r"attached for alice/team", after=mark, timeout=20)
            client.send(b"echo after $((2+2))\r")
            client.expect(b"after 4")
            assert remote_programs(bot) == program
            client.send(b"exit 5\r")
            assert client.finish() == 5
        finally:
            client.close()


def test_a_killed_client_leaves_the_program_and_a_reattach_loses_nothing(
    shell_bot: Bot,
) -> None:
    session = str(uuid.uuid4())
    first = attach(shell_bot, "--session", session)
    try:
        first.expect(b"# ")
        first.send(counter(300))
        first.expect(b"n=000000100 ")
        mark = shell_bot.log_size()
        first.process.kill()
        first.process.wait(5)
        shell_bot.wait_for_log(rf"{session} detached", after=mark)
        seen_before = numbers(bytes(first.output))[-1]
    finally:
        first.close()
    second = attach(shell_bot, "--session", session)
    try:
        second.expect(f"n={seen_before + 600:09d} ".encode(), timeout=20)
        # Everything since the program started, each line once: nothing lost while
        # no client was attached, nothing shown twice.
        assert_contiguous(numbers(bytes(second.output)))
        second.send(b"\x03")
        assert second.finish() == 128 + signal.SIGINT
    finally:
        second.close()


# -- refusals -----------------------------------------------------------------------------


def forged(token: str) -> str:
    header, claims, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{header}.{claims}.{flipped}"


def refused(bot: Bot, *extra: str, token: str) -> str:
    """Attach, expect a refusal; return what the user was told."""
    client = attach(bot, *extra, token=token)
    try:
        status = client.finish(timeout=20)
        told = client.stderr()
    finally:
        client.close()
    assert status == EXIT_REFUSED, (status, told)
    return told


@pytest.fixture
def alice_session(shell_bot: Bot) -> tuple[str, PtyRun]:
    session = str(uuid.uuid4())
    client = attach(shell_bot, "--session", session)
    client.expect(b"# ")
    return session, client


def test_every_refusal_is_explicit_and_alice_keeps_working(
    shell_bot: Bot, alice_session: tuple[str, PtyRun]
) -> None:
    session, alice = alice_session
    try:
        expired = shell_bot.expired_token()
        cases = {
            "expired": ([], expired),
            "forged": ([], forged(shell_bot.token())),
            "malformed": (["--group", "team"], "not-a-token"),
            "another user": (["--session", session], shell_bot.token(user="bob")),
            "another group": (
                ["--session", session, "--group", "other"],
                shell_bot.token(group="other"),
            ),
        }
        told = {
            name: refused(shell_bot, *extra, token=token) for name, (extra, token) in cases.items()
        }
        for name, message in told.items():
            assert "refused" in message, (name, message)
        assert "expired" in told["expired"].lower()
        # Alice never noticed.
        alice.send(b"echo still $((3*3))\r")
        alice.expect(b"still 9")
        alice.send(b"exit\r")
        assert alice.finish() == 0
    finally:
        alice.close()


def test_no_token_is_refused_before_connecting(shell_bot: Bot, tmp_path: Path) -> None:
    argv = [part for part in shell_bot.attach_argv("") if part != "--token-file"]
    argv = [part for part in argv if not part.endswith(".token")]
    client = PtyRun(argv, env=user_environment(), stderr_pipe=True)
    try:
        status = client.finish()
        told = client.stderr()
    finally:
        client.close()
    assert "a token is needed" in told
    assert status == EXIT_REFUSED, (status, told)
