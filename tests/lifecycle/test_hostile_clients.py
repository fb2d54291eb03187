"""Hostile traffic on the MoQ port does not disturb a legitimate terminal session.

A counter program streams numbered lines to an attached client on a real
``twistd pibridge`` while, one after another: garbage datagrams (random bytes,
QUIC-looking long and short headers) hit the port; QUIC clients connect, write
junk or open a real session, and are SIGKILLed; and a flood of opens arrives
with missing, malformed, forged, expired and wrong-group tokens. The client
keeps receiving output through every stage, and every line arrives once and in
order; every bad open is refused explicitly.
"""

from __future__ import annotations

import contextlib
import random
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from twisted.internet import defer, task, threads

from pibridge.terminal.control import Close, Ping
from tests.bot.loopback import Client
from tests.e2e.bot import Bot, running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.counting import assert_contiguous, numbers
from tests.e2e.pty_driver import PtyRun
from tests.lifecycle.harness import after, attach_client, drained, reactor_test

PROGRAMS = Path(__file__).parent.parent / "e2e" / "programs"
VANISHING_CLIENT = Path(__file__).parent.parent / "quic" / "vanishing_client.py"
COUNTER = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROGRAMS / 'counter.py'))} 400"


def garbage_datagrams(seed: int, count: int) -> list[bytes]:
    """Random bytes, and packets shaped like QUIC that decrypt to nothing."""
    rng = random.Random(seed)
    packets = []
    for n in range(count):
        kind = n % 4
        if kind == 0:
            packets.append(rng.randbytes(rng.randint(1, 1500)))
        elif kind == 1:  # an Initial of QUIC v1 with a random connection id and payload
            dcid = rng.randbytes(8)
            head = bytes([0xC0 | rng.randint(0, 15)]) + b"\x00\x00\x00\x01" + b"\x08" + dcid
            packets.append(head + b"\x00" + rng.randbytes(1200 - len(head) - 1))
        elif kind == 2:  # an unknown version: the server may answer Version Negotiation
            head = b"\xc0\x1a\x2a\x3a\x4a\x08" + rng.randbytes(8) + b"\x08" + rng.randbytes(8)
            packets.append(head + rng.randbytes(1200 - len(head)))
        else:  # a short header for a connection that does not exist
            packets.append(
                bytes([0x40 | rng.randint(0, 63)]) + rng.randbytes(rng.randint(20, 1400))
            )
    return packets


def forged(token: str) -> str:
    header, claims, signature = token.split(".")
    return f"{header}.{claims}.{('A' if signature[0] != 'A' else 'B') + signature[1:]}"


def keep_answering(client: Client) -> task.LoopingCall:
    """Pings from the client keep the bot's heartbeat satisfied, as pibridge-attach's do."""
    sequence = iter(range(1, 1_000_000))

    def ping() -> None:
        if client.link is not None and client.close is None:
            client.link.send_control(Ping(next(sequence), 0.0))

    loop = task.LoopingCall(ping)
    loop.start(0.5)
    return loop


async def still_streaming(client: Client, more: int = 200, timeout: float = 20) -> int:
    """Wait until the counter has moved ``more`` lines past where it was; return that count."""
    now = latest(client)
    await client.until(lambda c: latest(c) >= now + more, timeout)
    return now + more


def latest(client: Client) -> int:
    """The last counter line seen (read from the tail: the check runs on every arrival)."""
    return max(numbers(bytes(client.output[-256:])) or [0])


@pytest.mark.slow
@pytest.mark.timeout(120)
@reactor_test
async def test_hostile_traffic_leaves_a_streaming_session_untouched(tmp_path: Path) -> None:
    with running_bot(tmp_path, command=COUNTER, heartbeat=1.0, grace=5.0) as bot, drained(bot):
        legit: Client = await attach_client(bot, tmp_path)
        pinger = keep_answering(legit)
        try:
            await still_streaming(legit, 100)
            await flood_with_garbage(bot, legit)
            await still_streaming(legit)
            await connect_and_vanish(bot, tmp_path)
            await still_streaming(legit)
            refused = await flood_with_bad_opens(bot, tmp_path)
            await still_streaming(legit)
        finally:
            pinger.stop()
        assert legit.close is None and legit.lost == []
        assert_contiguous(numbers(bytes(legit.output)))
        assert {close.reason for close in refused} == {"refused"}
        assert len(refused) == 48
        assert "Traceback" not in bot.log()
        assert bot.server.process.poll() is None
        log = bot.log()
        assert log.count("refused terminal open for") == len(refused)
        assert all(close.message for close in refused), refused
        assert "closing MoQ session: PROTOCOL_VIOLATION" in log  # the junk writer
        assert "attached for mallory/team" in log


async def flood_with_garbage(bot: Bot, legit: Client) -> None:
    """3000 datagrams in bursts; output keeps arriving between the bursts."""
    packets = garbage_datagrams(seed=7, count=3000)
    seen_before = len(legit.output)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for start in range(0, len(packets), 100):
            for packet in packets[start : start + 100]:
                # When our own send buffer is full, that datagram is simply not sent.
                with contextlib.suppress(BlockingIOError):
                    sender.sendto(packet, (bot.host, bot.port))
            await after(0.01)  # let the reactor run between bursts, as separate senders do
    assert len(legit.output) > seen_before


async def connect_and_vanish(bot: Bot, tmp_path: Path) -> None:
    """A QUIC client writing junk, and a real attach with its own session, both SIGKILLed."""
    junk = subprocess.Popen(
        [sys.executable, str(VANISHING_CLIENT), str(bot.port), str(tmp_path / "junk_known_hosts")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    )
    mallory = PtyRun(
        bot.attach_argv(bot.token("mallory", "team"), "--session", str(uuid.uuid4())),
        env=user_environment(),
        stderr_pipe=True,
    )
    try:
        assert junk.stdout is not None
        said = await threads.deferToThread(junk.stdout.readline)
        assert said.strip() == "streaming", said
        mark = bot.log_size()
        await threads.deferToThread(mallory.expect, b"n=000000050 ", 20)
        junk.send_signal(signal.SIGKILL)
        mallory.process.send_signal(signal.SIGKILL)
        await threads.deferToThread(junk.wait, 10)
        await threads.deferToThread(mallory.process.wait, 10)
        await threads.deferToThread(
            bot.wait_for_log, r"detached: heartbeat_timeout", after=mark, timeout=20
        )
    finally:
        if junk.poll() is None:
            junk.kill()
        mallory.close()


async def flood_with_bad_opens(bot: Bot, tmp_path: Path) -> list[Close]:
    """48 opens, 12 at a time, each with a token that must not be accepted."""
    good = bot.token()
    tokens = [
        "",
        "not-a-token",
        forged(good),
        bot.expired_token(),
        bot.token("alice", "another-team"),
        good[: len(good) // 2],
    ] * 8
    closes: list[Close] = []

    async def one(token: str) -> None:
        client: Client = await attach_client(bot, tmp_path, token=token)
        await client.until(lambda c: c.close is not None, timeout=30)
        assert client.output == b""
        assert client.close is not None
        closes.append(client.close)
        assert client.link is not None
        client.link.close()

    for start in range(0, len(tokens), 12):
        batch = [defer.ensureDeferred(one(token)) for token in tokens[start : start + 12]]
        await defer.gatherResults(batch, consumeErrors=True)
    return closes
