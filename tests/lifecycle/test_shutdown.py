"""``twistd pibridge`` gets SIGTERM while a terminal client is attached and a chat reply streams.

What people see: the terminal client gets an explicit ``close`` with reason
``server_shutdown``; the chat client's SSE stream carries an ``error`` event
(code ``shutdown``) and then ends cleanly. Every program the server started
(the shell in the PTY and what it runs, pi's RPC child) is gone, with their
process groups; the server exits 0. Started again on the same state dir, the
chat session is listed, its history has the earlier exchange, and it answers.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from twisted.internet import reactor, threads

from tests.bot.loopback import Client
from tests.e2e.bot import SHELL, running_bot
from tests.lifecycle.harness import (
    SseResult,
    after,
    attach_client,
    chat_of,
    descendants,
    drained,
    first_event,
    kill_leftovers,
    live,
    members_of_groups,
    process_groups,
    reactor_test,
    sigterm,
    wait_exit,
)

SLOW_REPLY = "keep talking [slow: 40] [long: 2000]"


@reactor_test
async def test_sigterm_ends_every_session_explicitly_and_a_restart_resumes_chat(
    tmp_path: Path,
) -> None:
    with running_bot(tmp_path, command=SHELL, heartbeat=1.0) as bot:
        chat = chat_of(bot)
        with drained(bot):
            session = await threads.deferToThread(chat.create)
            first: SseResult = await threads.deferToThread(
                chat.stream, session["id"], "hello before the restart"
            )
            assert first.kinds[-1] == "done", first.events
            assert "You said: hello before the restart" in first.text

            client: Client = await attach_client(bot, tmp_path)
            await client.until(lambda c: b"# " in c.output, timeout=20)
            assert client.link is not None
            # A foreground job: its own process group in the PTY, beside the shell's.
            client.link.send_input(b"sleep 999\r")

            streaming, on_event = first_event("delta")
            reply = threads.deferToThread(chat.stream, session["id"], SLOW_REPLY, 90, on_event)
            await streaming.addTimeout(30, reactor)

            started = await wait_for_programs(bot.pid, {"bash", "sleep", "pi"})
            groups = process_groups(started)
            assert len(groups) >= 3, started  # pi rpc, the shell, its foreground job
            try:
                sigterm(bot)
                status = await wait_exit(bot)
                # Explicit: a close message, not just the connection going away.
                await client.until(lambda c: c.close is not None or bool(c.lost), timeout=10)
                interrupted: SseResult = await reply.addTimeout(30, reactor)
            finally:
                leftovers = kill_leftovers(started + members_of_groups(groups))

        assert status == 0, bot.log()
        close = client.close
        assert close is not None, f"no close, only {client.lost}"
        assert close.reason == "server_shutdown"
        assert interrupted.broken is None, interrupted.broken
        kind, data = interrupted.events[-1]
        assert kind == "error", interrupted.kinds[-5:]
        assert data["code"] == "shutdown"
        assert "delta" in interrupted.kinds
        assert leftovers == []
        assert "Traceback" not in bot.log()

    with running_bot(tmp_path, command=SHELL, heartbeat=1.0) as again:
        chat = chat_of(again)
        listed = {s["id"]: s for s in chat.sessions()}
        assert session["id"] in listed
        assert listed[session["id"]]["resumable"] is True
        with drained(again):
            history = await threads.deferToThread(chat.history, session["id"])
            texts = [(m["role"], m["text"]) for m in history]
            assert ("user", "hello before the restart") in texts
            assert any(
                role == "assistant" and "You said: hello before the restart" in text
                for role, text in texts
            ), texts
            resumed: SseResult = await threads.deferToThread(
                chat.stream, session["id"], "hello after the restart"
            )
            assert resumed.kinds[0] == "session" and resumed.kinds[-1] == "done", resumed.events
            assert "You said: hello after the restart" in resumed.text
            history = await threads.deferToThread(chat.history, session["id"])
            users = [m["text"] for m in history if m["role"] == "user"]
            assert users[0] == "hello before the restart"
            assert users[-1] == "hello after the restart"
            assert again.server.stop(signal.SIGTERM) == 0


async def wait_for_programs(pid: int, names: set[str], timeout: float = 15.0) -> list[Any]:
    """The server's descendants once every one of ``names`` is among them."""
    deadline = reactor.seconds() + timeout
    while True:
        found = [p for p in descendants(pid) if live(p)]
        if names <= {p.name() for p in found}:
            return found
        assert reactor.seconds() < deadline, [(p.name(), p.pid, p.ppid()) for p in found]
        await after(0.05)  # processes announce nothing; look again shortly


@reactor_test
async def test_sigterm_also_ends_background_jobs_of_a_terminal_program(tmp_path: Path) -> None:
    """A job the shell put in the background (deaf to SIGHUP, like ``nohup``) is still ended."""
    with running_bot(tmp_path, command=SHELL, heartbeat=1.0) as bot, drained(bot):
        client: Client = await attach_client(bot, tmp_path)
        await client.until(lambda c: b"# " in c.output, timeout=20)
        assert client.link is not None
        client.link.send_input(b"(trap '' HUP; exec sleep 1001) &\r")
        await client.until(lambda c: b"[1] " in c.output, timeout=10)
        started = await wait_for_programs(bot.pid, {"bash", "sleep"})
        try:
            sigterm(bot)
            status = await wait_exit(bot)
        finally:
            leftovers = kill_leftovers(started)
        assert status == 0
        assert leftovers == []
