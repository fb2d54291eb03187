"""The program in a terminal session is killed with SIGKILL: the client is told, and how.

Both pi itself (the default terminal program) and a plain program are killed
behind the client's back, on a real ``twistd pibridge``. A MoQ client sees an
explicit ``close`` with reason ``remote_exit`` and the signal; a person using
``pibridge-attach`` sees exit status 137 and gets their terminal back as it was.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
from twisted.internet import reactor, threads

from pibridge.terminal.control import OpenAck
from tests.bot.loopback import Client
from tests.e2e.bot import SHELL, Bot, running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.tmux import SHELL_PROMPT, TmuxTerminal
from tests.lifecycle.harness import (
    SseResult,
    attach_client,
    chat_of,
    descendants,
    drained,
    first_event,
    live,
    reactor_test,
)

#: The program each case runs in its terminal sessions: None is the default, pi.
PROGRAMS = {"pi": None, "plain": SHELL}


@pytest.fixture(params=sorted(PROGRAMS))
def program_bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bot]:
    with running_bot(tmp_path, command=PROGRAMS[request.param], heartbeat=1.0) as bot:
        yield bot


def session_program(bot: Bot) -> psutil.Process:
    """The one program the server runs in a PTY: its only direct child that is not pi rpc."""
    programs = [p for p in psutil.Process(bot.pid).children() if live(p)]
    assert len(programs) == 1, programs
    return programs[0]


@reactor_test
async def test_killed_program_closes_the_session_with_its_signal(
    program_bot: Bot, tmp_path: Path
) -> None:
    with drained(program_bot):
        client: Client = await attach_client(program_bot, tmp_path)
        # The program is up and drawing (pi draws its editor; the shell its prompt).
        await client.until(lambda c: len(c.output) > 0, timeout=30)
        assert any(isinstance(m, OpenAck) for m in client.controls)
        program = session_program(program_bot)
        program.send_signal(signal.SIGKILL)
        await client.until(lambda c: c.close is not None, timeout=15)
    close = client.close
    assert close is not None
    assert close.reason == "remote_exit"
    assert close.signal == signal.SIGKILL
    assert close.exit_code is None
    assert not live(program)
    assert [p for p in descendants(program_bot.pid) if live(p)] == []


def test_killed_program_through_pibridge_attach_exits_137_and_restores_the_terminal(
    program_bot: Bot, tmp_path: Path
) -> None:
    tmux = TmuxTerminal(tmp_path / "tmux.sock", env=user_environment())
    tmux.start(tmp_path)
    try:
        before, after = tmp_path / "stty.before", tmp_path / "stty.after"
        attach = " ".join(shlex.quote(a) for a in program_bot.attach_argv(program_bot.token()))
        done = "echo STTY-$((1+1))-DONE"
        tmux.run(f"stty -a > {before}; {attach}; echo EXIT=$?; stty -a > {after}; {done}")
        # Attached: the remote program runs and the local terminal is in raw mode.
        program = wait_for_program(program_bot)
        program_bot.wait_for_log(r"attached for alice/team", timeout=30)
        tmux.wait_for(lambda screen: len([r for r in screen.splitlines() if r.strip()]) >= 2)
        program.send_signal(signal.SIGKILL)
        screen = tmux.wait_for(r"STTY-2-DONE", timeout=20)
        assert "EXIT=137" in screen, screen
        assert "SIGKILL" in screen, screen
        assert before.read_text() == after.read_text()
        assert " icanon" in after.read_text() and " echo" in after.read_text()
        tmux.run("echo typed-after $((6*7))")
        tmux.wait_for(r"typed-after 42")
        assert tmux.screen().rstrip().endswith(SHELL_PROMPT.rstrip())
    finally:
        tmux.kill()


def wait_for_program(bot: Bot, timeout: float = 30.0) -> Any:
    """The terminal session's program once the attach has started it."""
    bot.wait_for_log(r"terminal session \S+ started for alice/team: pid \d+", timeout=timeout)
    return session_program(bot)


@reactor_test
async def test_killed_pi_rpc_child_fails_the_reply_and_the_next_prompt_resumes(
    tmp_path: Path,
) -> None:
    """Chat's own pi, SIGKILLed mid-reply: the SSE client is told, and the session goes on."""
    with running_bot(tmp_path, command=SHELL) as bot, drained(bot):
        chat = chat_of(bot)
        session = await threads.deferToThread(chat.create)
        first = await threads.deferToThread(chat.stream, session["id"], "remember the tulips")
        assert first.kinds[-1] == "done", first.events

        streaming, on_event = first_event("delta")
        reply = threads.deferToThread(
            chat.stream, session["id"], "go on [slow: 40] [long: 2000]", 90, on_event
        )
        await streaming.addTimeout(30, reactor)
        pis = [p for p in psutil.Process(bot.pid).children() if live(p) and p.name() == "pi"]
        assert len(pis) == 1, pis
        pis[0].send_signal(signal.SIGKILL)
        interrupted: SseResult = await reply.addTimeout(30, reactor)

        assert interrupted.broken is None, interrupted.broken
        kind, data = interrupted.events[-1]
        assert kind == "error", interrupted.kinds[-5:]
        assert data["code"] == "pi_exited"
        listed = {s["id"]: s for s in await threads.deferToThread(chat.sessions)}
        assert listed[session["id"]]["state"] == "failed"
        assert listed[session["id"]]["resumable"] is True

        resumed = await threads.deferToThread(chat.stream, session["id"], "still there?")
        assert resumed.kinds[-1] == "done", resumed.events
        assert "You said: still there?" in resumed.text
        history = await threads.deferToThread(chat.history, session["id"])
        users = [m["text"] for m in history if m["role"] == "user"]
        assert users[0] == "remember the tulips" and users[-1] == "still there?"
        assert "Traceback" not in bot.log()
