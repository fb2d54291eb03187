"""Many sessions at once on a real ``twistd pibridge``: all served, limits explicit, nothing kept.

Terminal: 64 sessions (the bot's limit) each running ``cat``, every one echoing
what its client types; the 65th is refused with an explicit ``close``. Chat: 32
sessions, each a real ``pi --mode rpc`` answered by the offline model; the
33rd create is answered 429. In both cases the server's open file descriptors
and resident memory stay bounded while the sessions run and come back close
to where they were once the sessions end. The numbers are printed (``-s``).
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import defer, threads

from pibridge.bot.session import DEFAULT_RING
from pibridge.terminal.control import Close, OpenAck
from tests.bot.loopback import Client
from tests.e2e.bot import Bot, running_bot
from tests.lifecycle.harness import (
    Chat,
    after,
    attach_client,
    chat_of,
    descendants,
    drained,
    live,
    open_fds,
    reactor_test,
    rss,
)

MiB = 1024 * 1024
TERMINAL_LIMIT = 64
CHAT_LIMIT = 32
T = TypeVar("T")


def usage(bot: Bot) -> tuple[int, int]:
    return open_fds(bot.pid), rss(bot.pid)


def report(
    what: str, baseline: tuple[int, int], peak: tuple[int, int], end: tuple[int, int]
) -> None:
    print(
        f"\n{what}: fds {baseline[0]} -> {peak[0]} -> {end[0]}; "
        f"RSS {baseline[1] / MiB:.1f} -> {peak[1] / MiB:.1f} -> {end[1] / MiB:.1f} MiB"
    )


async def in_batches(items: list[T], size: int, each: Callable[[T], Any]) -> list[Any]:
    """Run ``each`` over ``items``, ``size`` at a time (each returns a Deferred)."""
    results: list[Any] = []
    for start in range(0, len(items), size):
        batch = [each(item) for item in items[start : start + size]]
        results += await defer.gatherResults(batch, consumeErrors=True)
    return results


async def echoing_session(bot: Bot, tmp_path: Path, number: int) -> Client:
    """A terminal session running ``cat`` that has echoed a line typed into it."""
    client: Client = await attach_client(bot, tmp_path)
    await client.until(lambda c: any(isinstance(m, OpenAck) for m in c.controls), timeout=30)
    assert client.link is not None
    line = f"line-{number:03d}-typed".encode()
    client.link.send_input(line + b"\r")
    # Once from the terminal's echo, once from cat writing it back.
    await client.until(lambda c: c.output.count(line) >= 2, timeout=30)
    return client


async def ended_by_eof(client: Client) -> None:
    """Ctrl-D: cat ends, and the client hears ``remote_exit`` with status 0."""
    assert client.link is not None
    client.link.send_input(b"\x04")
    await client.until(lambda c: c.close is not None, timeout=30)
    assert client.close is not None and client.close.reason == "remote_exit"
    assert client.close.exit_code == 0, client.close
    client.link.close()


async def settle(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for the server to finish cleaning up (it announces nothing we can await)."""
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await after(0.1)
    assert condition()


def terminal_sessions(bot: Bot) -> int:
    text = raw_metrics(chat_of(bot))
    found = re.search(r"^pibridge_terminal_sessions (\d+)", text, re.M)
    assert found, text
    return int(found.group(1))


def raw_metrics(chat: Chat) -> str:
    request = urllib.request.Request(
        chat.url + "metrics", headers={"Authorization": f"Bearer {chat.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text: str = response.read().decode()
    return text


#: glibc raises its mmap threshold after the first large block is freed; the
#: reattach ring is mapped pages of its own, so memory comes back either way.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
ALLOCATORS = [
    pytest.param(FIXED_MMAP_THRESHOLD, id="fixed-mmap-threshold"),
    pytest.param({}, id="default-malloc"),
]


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("allocator", ALLOCATORS)
@reactor_test
async def test_sixty_four_terminal_sessions_then_the_sixty_fifth_is_refused(
    tmp_path: Path, allocator: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in allocator.items():
        monkeypatch.setenv(name, value)
    with running_bot(tmp_path, command="cat", heartbeat=2.0) as bot, drained(bot):
        # One session first, so lazily built parts of the server count in the baseline.
        await ended_by_eof(await echoing_session(bot, tmp_path, 0))
        await settle(lambda: terminal_sessions(bot) == 0)
        baseline = usage(bot)

        clients = await in_batches(
            list(range(1, TERMINAL_LIMIT + 1)),
            8,
            lambda n: defer.ensureDeferred(echoing_session(bot, tmp_path, n)),
        )
        assert len(clients) == TERMINAL_LIMIT
        assert terminal_sessions(bot) == TERMINAL_LIMIT
        programs = [p for p in descendants(bot.pid) if live(p)]
        assert len(programs) == TERMINAL_LIMIT
        peak = usage(bot)

        extra: Client = await attach_client(bot, tmp_path, session_id=str(uuid.uuid4()))
        await extra.until(lambda c: c.close is not None, timeout=30)
        refusal = extra.close
        assert isinstance(refusal, Close)
        assert refusal.reason == "refused"
        assert refusal.message is not None and "session limit" in refusal.message
        assert extra.output == b""
        assert extra.link is not None
        extra.link.close()

        # The 64 still work after the refusal.
        for number, client in enumerate(clients[:4], 1):
            line = f"again-{number}".encode()
            assert client.link is not None
            client.link.send_input(line + b"\r")
            await client.until(lambda c, line=line: c.output.count(line) >= 2, timeout=15)

        await in_batches(clients, 16, lambda c: defer.ensureDeferred(ended_by_eof(c)))
        await settle(lambda: terminal_sessions(bot) == 0)
        await settle(lambda: usage(bot)[0] <= baseline[0])
        end = usage(bot)
        report("terminal sessions x64", baseline, peak, end)
        assert [p for p in descendants(bot.pid) if live(p)] == []
        # A session holds its PTY master (and no more than one more) while it runs;
        # nothing stays open after.
        assert baseline[0] + TERMINAL_LIMIT - 4 <= peak[0] <= baseline[0] + 2 * TERMINAL_LIMIT
        assert end[0] <= baseline[0]
        # Each session keeps a reattach ring of DEFAULT_RING bytes, allocated whole at
        # start: that, plus a little, is what a session may cost, and it is given back.
        per_session = (peak[1] - baseline[1]) / TERMINAL_LIMIT
        print(f"server memory per terminal session: {per_session / MiB:.2f} MiB")
        assert per_session < DEFAULT_RING + 1 * MiB
        assert end[1] - baseline[1] < 64 * MiB


@pytest.mark.slow
@pytest.mark.timeout(200)
@reactor_test
async def test_thirty_two_chat_sessions_are_served_and_the_thirty_third_gets_429(
    tmp_path: Path,
) -> None:
    with (
        running_bot(tmp_path, command="cat", extra=["--max-sessions", str(CHAT_LIMIT)]) as bot,
        drained(bot),
    ):
        chat = chat_of(bot)

        def served(number: int) -> str:
            session = chat.create()
            reply = chat.stream(session["id"], f"hello from chat {number}")
            assert reply.kinds[0] == "session" and reply.kinds[-1] == "done", reply.events
            assert f"You said: hello from chat {number}" in reply.text
            return str(session["id"])

        def stopped(session_id: str) -> None:
            assert chat.stop(session_id)["state"] == "stopped"

        warm = await threads.deferToThread(served, 0)
        await threads.deferToThread(stopped, warm)
        baseline = usage(bot)

        sessions = await in_batches(
            list(range(1, CHAT_LIMIT + 1)), 4, lambda n: threads.deferToThread(served, n)
        )
        listed = await threads.deferToThread(chat.sessions)
        running = [s for s in listed if s["state"] == "idle"]
        assert len(running) == CHAT_LIMIT
        pis = [p for p in descendants(bot.pid) if live(p) and p.name() == "pi"]
        assert len(pis) == CHAT_LIMIT
        pi_memory = sum(p.memory_info().rss for p in pis)
        peak = usage(bot)

        status, body = await threads.deferToThread(chat.call, "POST", "/api/sessions/create", {})
        assert status == 429, body
        assert body["error"]["code"] == "too_many_sessions"

        await in_batches(sessions, 8, lambda s: threads.deferToThread(stopped, s))
        await settle(lambda: not [p for p in descendants(bot.pid) if live(p)])
        await settle(lambda: usage(bot)[0] <= baseline[0])
        end = usage(bot)
        report("chat sessions x32", baseline, peak, end)
        print(f"pi children: {pi_memory / MiB:.0f} MiB in all, {pi_memory / MiB / 32:.0f} each")
        # A pi child holds its three pipes while it runs; none stay open after.
        assert baseline[0] + 3 * CHAT_LIMIT - 4 <= peak[0] <= baseline[0] + 4 * CHAT_LIMIT
        assert end[0] <= baseline[0]
        assert peak[1] - baseline[1] < 200 * MiB
        assert end[1] - baseline[1] < 64 * MiB
        # A stopped session is still resumable, and a slot is free again.
        again = await threads.deferToThread(served, CHAT_LIMIT + 1)
        assert again not in sessions
