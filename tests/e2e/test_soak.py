"""A soak: output streams without pause while the window keeps changing size.

``PIBRIDGE_SOAK_SECONDS`` sets how long (20 s in the suite). The long run is
``PIBRIDGE_SOAK_SECONDS=3600 .venv/bin/pytest -q -p no:cacheprovider
tests/e2e/test_soak.py`` (the test sets its own timeout from the duration).
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.bot import running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.counting import CounterCheck
from tests.e2e.pty_driver import PtyRun
from tests.e2e.test_parity import PROMPT

SOAK_SECONDS = float(os.environ.get("PIBRIDGE_SOAK_SECONDS", "20"))
PROGRAMS = Path(__file__).parent / "programs"
LINES_PER_SECOND = 5000
RESIZE_EVERY = 0.5
#: Bot memory may grow this much after warming up (the 4 MiB ring, allocator slack).
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
WARM_UP = min(5.0, SOAK_SECONDS / 4)


@pytest.mark.slow
@pytest.mark.timeout(SOAK_SECONDS + 90)
def test_streaming_with_resizes_loses_nothing_and_the_bot_stays_small(tmp_path: Path) -> None:
    sizes = random.Random("soak")
    with running_bot(tmp_path, heartbeat=1, grace=30) as bot:
        client = PtyRun(bot.attach_argv(bot.token()), env=user_environment(), stderr_pipe=True)
        try:
            client.expect(PROMPT)
            counter = PROGRAMS / "counter.py"
            client.send(f"exec python3 {shlex.quote(str(counter))} {LINES_PER_SECOND}\r".encode())
            client.expect(b"n=000000001 ")
            check = CounterCheck()
            consumed = client.output.index(b"n=000000001 ")
            start = time.monotonic()
            next_resize = start + RESIZE_EVERY
            baseline: int | None = None
            peak = 0
            resizes = 0
            while time.monotonic() - start < SOAK_SECONDS:
                assert client.pump(0.05), client.stderr()
                check.feed(bytes(client.output[consumed:]))
                del client.output[:]
                consumed = 0
                now = time.monotonic()
                if now >= next_resize:
                    client.resize(sizes.randrange(20, 250), sizes.randrange(5, 80))
                    resizes += 1
                    next_resize = now + RESIZE_EVERY
                if baseline is None and now - start >= WARM_UP:
                    baseline = bot.rss()
                if baseline is not None:
                    peak = max(peak, bot.rss())
            elapsed = time.monotonic() - start
            client.send(b"\x03")
            status = client.finish()
            check.feed(bytes(client.output))
            modes_after = client.modes()
        finally:
            client.close()
    print(  # shown with -s: what a long soak measured
        f"soak: {elapsed:.0f} s, {check.expected - 1} lines, {check.bytes_seen} bytes, "
        f"{resizes} resizes, bot RSS {baseline} -> peak {peak}"
    )
    assert status == 128 + signal.SIGINT
    # Every line arrived once and in order; the stream kept up with the program.
    assert check.expected - 1 >= 0.8 * LINES_PER_SECOND * elapsed, (check.expected, elapsed)
    assert resizes >= SOAK_SECONDS / RESIZE_EVERY * 0.8
    assert baseline is not None
    assert peak - baseline < RSS_GROWTH_LIMIT, (baseline, peak)
    # The terminal is given back as it was found.
    assert modes_after == client.initial_modes
