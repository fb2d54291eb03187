"""A bad link between pibridge-attach and the bot, through the seeded impairment relay.

The client is pointed at the relay's port; the relay forwards to the bot.
Timings: the bot here sends heartbeats every 0.25 s and gives a client up
after 1 s of silence; the client gives the bot 20 s (its fixed default).
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bot import Bot, running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.counting import assert_contiguous, numbers
from tests.e2e.link import ImpairedPath, impaired_path
from tests.e2e.pty_driver import PtyRun, as_attach_shows, without_client_titles
from tests.e2e.test_parity import PROMPT, program, run_both, shell_session

PROGRAMS = Path(__file__).parent / "programs"
EXIT_REFUSED = 77
ATTACHED = r"{sid} attached for alice/team"


@pytest.fixture(scope="module")
def fault_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    with running_bot(tmp_path_factory.mktemp("fault-bot"), heartbeat=0.25, grace=30) as bot:
        yield bot


@pytest.fixture
def path(fault_bot: Bot) -> Iterator[ImpairedPath]:
    with impaired_path(fault_bot.host, fault_bot.port, seed="e2e-link") as relay:
        yield relay


def through(bot: Bot, path: ImpairedPath, *extra: str) -> PtyRun:
    return PtyRun(
        bot.attach_argv(bot.token(), *extra, target=path.target),
        env=user_environment(),
        stderr_pipe=True,
    )


def session_of(bot: Bot, after: int) -> str:
    found = bot.wait_for_log(r"terminal session (\S+) attached for", after=after)
    return found.group(1)


def start_counter(run: PtyRun, rate: int) -> None:
    run.expect(PROMPT)
    run.send(f"exec python3 {shlex.quote(str(PROGRAMS / 'counter.py'))} {rate}\r".encode())


def test_output_is_byte_identical_over_a_slow_lossy_reordering_link(tmp_path: Path) -> None:
    """100 +- 50 ms each way, 3 % loss, 5 % reordered, 5 % duplicated, both directions.

    The bot's heartbeat is 1 s here (4 s to give up): a 1 s timeout is shorter
    than a few retransmissions on such a link.
    """
    with (
        running_bot(tmp_path, heartbeat=1, grace=30) as bot,
        impaired_path(bot.host, bot.port, seed="e2e-lossy") as path,
    ):
        path.set(delay=0.1, jitter=0.05, loss=0.03, reorder=0.05, duplicate=0.05)
        bot_through_relay = _Redirected(bot, path)
        for script in (shell_session, program(f"python3 {PROGRAMS / 'every_byte.py'}")):
            direct, attached = run_both(bot_through_relay, script)  # type: ignore[arg-type]
            assert without_client_titles(attached) == as_attach_shows(direct)
        # The link really was that bad.
        stats = path.stats()
    assert stats["upstream"]["lost"] + stats["downstream"]["lost"] > 0, stats
    for effect in ("duplicated", "reordered"):
        assert stats["upstream"][effect] + stats["downstream"][effect] > 0, stats


class _Redirected:
    """The bot as seen through the relay: same tokens, the relay's address."""

    def __init__(self, bot: Bot, path: ImpairedPath) -> None:
        self._bot = bot
        self._path = path

    def __getattr__(self, name: str) -> object:
        return getattr(self._bot, name)

    def attach_argv(self, token: str, *extra: str) -> list[str]:
        return self._bot.attach_argv(token, *extra, target=self._path.target)


@pytest.mark.slow
def test_a_cut_within_the_grace_window_reattaches_and_loses_nothing(
    fault_bot: Bot, path: ImpairedPath
) -> None:
    mark = fault_bot.log_size()
    client = through(fault_bot, path)
    try:
        start_counter(client, 200)
        sid = session_of(fault_bot, mark)
        client.expect(b"n=000000100 ")
        path.cut()
        fault_bot.wait_for_log(rf"{sid} detached: heartbeat_timeout", after=mark)
        path.restore()
        # The client notices the silence (20 s), reattaches and resumes where it stopped.
        reattached = fault_bot.log_size()
        fault_bot.wait_for_log(ATTACHED.format(sid=sid), after=reattached, timeout=40)
        last = numbers(bytes(client.output))[-1]
        client.expect(f"n={last + 400:09d} ".encode(), timeout=20)
        assert_contiguous(numbers(bytes(client.output)))
        assert b"pibridge: connection lost, reattaching" in client.output
        client.send(b"\x03")
        assert client.finish() == 128 + signal.SIGINT
    finally:
        client.close()


@pytest.mark.slow
def test_a_cut_longer_than_the_grace_window_ends_with_a_clear_reason(tmp_path: Path) -> None:
    with (
        running_bot(tmp_path, heartbeat=0.25, grace=1.5) as bot,
        impaired_path(bot.host, bot.port, seed="e2e-long-cut") as path,
    ):
        client = through(bot, path)
        try:
            start_counter(client, 50)
            sid = session_of(bot, 0)
            client.expect(b"n=000000010 ")
            path.cut()
            bot.wait_for_log(rf"{sid}: nobody reattached in time")
            path.restore()
            status = client.finish(timeout=40)
            told = client.stderr()
        finally:
            client.close()
        assert status == EXIT_REFUSED, told
        assert "no such session: it ended while no client was attached" in told
        assert re.search(rf"{sid} detached: heartbeat_timeout", bot.log())
        # The old session id does not come back as a fresh program.
        assert len(re.findall(ATTACHED.format(sid=sid), bot.log())) == 1


def test_a_rebinding_carries_on_without_a_reattach(tmp_path: Path) -> None:
    """The client's address changes (NAT rebinding): QUIC follows it, the attach stays.

    The bot learns the new address from the client's next packet; a client
    that only reads sends one at its next heartbeat (5 s) at the latest.
    """
    with (
        running_bot(tmp_path, heartbeat=5, grace=30) as bot,
        impaired_path(bot.host, bot.port, seed="e2e-rebind") as path,
    ):
        client = through(bot, path)
        try:
            start_counter(client, 200)
            sid = session_of(bot, 0)
            client.expect(b"n=000000100 ")
            first = path.rebind()
            client.expect(b"n=000000500 ", timeout=20)
            second = path.rebind()
            client.expect(b"n=000000900 ", timeout=20)
            assert first != second
            assert_contiguous(numbers(bytes(client.output)))
            client.send(b"\x03")
            assert client.finish() == 128 + signal.SIGINT
        finally:
            client.close()
        log = bot.log()
    assert len(re.findall(ATTACHED.format(sid=sid), log)) == 1, log
    assert f"{sid} detached" not in log
