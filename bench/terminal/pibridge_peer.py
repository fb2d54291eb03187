"""pibridge as a terminal peer: ``pibridge-attach`` in a local PTY, a ``twistd pibridge`` bot.

Two shapes, measured like the others in ``sshd.py``:

* ``pibridge``: the client dials the bot directly (MoQ over QUIC on loopback);
* ``pibridge_relay``: bot and client meet at the moq-rs relay (``tests/moq/relay.py``),
  everything sealed end to end, as in production through a relay or CDN.

The bot's terminal program is a launcher that runs whatever command the
benchmark wrote last (sessions are started one at a time), so every
measurement runs the same shell command as behind ``ssh -tt``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MOQ_LINE = re.compile(
    r"terminal sessions over MoQ on udp ([0-9.]+):(\d+), certificate (SHA256:\S+)"
)
BOT_KEY_LINE = re.compile(r"bot identity key (pibridge-bot-\S+)")
RELAY_READY = re.compile(r"serving terminal sessions through the relay")


class _BotProcess:
    """``twistd -n pibridge`` with its log in a file."""

    def __init__(self, scratch: Path, args: list[str]) -> None:
        self.log_path = scratch / "bot.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "pibridge", *args],
            cwd=scratch,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.log_path.read_text(errors="replace"))
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"bot never logged {pattern.pattern!r}:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def _relay() -> Iterator[Any]:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.moq.relay import RustRelay

    relay = RustRelay()
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def pibridge_peer(
    local_pty: Callable[[list[str]], Any], *, through_relay: bool = False
) -> Iterator[Callable[[str], Any]]:
    """Yield ``spawn(command)``: ``pibridge-attach`` in a local PTY, the command on the bot."""
    with tempfile.TemporaryDirectory(prefix="pibridge-bench-") as scratch_name:
        scratch = Path(scratch_name)
        workspace, state = scratch / "workspace", scratch / "state"
        workspace.mkdir()
        command_file = scratch / "next-command"
        launcher = scratch / "launch"
        launcher.write_text(f'#!/bin/sh\nexec sh -c "$(cat {command_file})"\n')
        launcher.chmod(0o755)
        args = [
            "--http", "tcp:0:interface=127.0.0.1",
            "--workspace", str(workspace),
            "--state-dir", str(state),
            "--pi-command", str(launcher),
            "--grace", "2",
        ]  # fmt: skip
        with contextlib.ExitStack() as stack:
            if through_relay:
                relay = stack.enter_context(_relay())
                url = f"moqt://127.0.0.1:{relay.port}"
                args += ["--relay", url, "--relay-fingerprint", relay.fingerprint]
            else:
                args += ["--moq", "127.0.0.1:0"]
            bot = _BotProcess(scratch, args)
            stack.callback(bot.stop)
            bot_key = bot.wait_for(BOT_KEY_LINE).group(1)
            token = subprocess.run(
                [str(BIN / "pibridge-token"), "--state-dir", str(state), "--user", "bench",
                 "--group", "bench"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            token_file = scratch / "token"
            token_file.write_text(token)
            common = [
                str(BIN / "pibridge-attach"),
                "--known-hosts", str(scratch / "known_hosts"),
                "--token-file", str(token_file),
            ]  # fmt: skip
            if through_relay:
                bot.wait_for(RELAY_READY)
                argv = [*common, "--relay", url, "--bot-key", bot_key,
                        "--fingerprint", relay.fingerprint]  # fmt: skip
            else:
                found = bot.wait_for(MOQ_LINE)
                argv = [*common, "--fingerprint", found.group(3),
                        f"{found.group(1)}:{found.group(2)}"]  # fmt: skip

            def spawn(command: str) -> Any:
                command_file.write_text(command)
                return local_pty(argv)

            yield spawn
