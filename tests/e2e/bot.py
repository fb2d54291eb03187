"""A real ``twistd pibridge`` bot for end-to-end tests, and tokens minted as an operator does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import psutil  # type: ignore[import-untyped]

from pibridge.terminal.auth import TokenAuthority, load_or_create_key
from tests.servers import ServerProcess

BIN = Path(sys.executable).parent
ATTACH = str(BIN / "pibridge-attach")
TOKEN = str(BIN / "pibridge-token")
MOQ_LINE = re.compile(
    rb"terminal sessions over MoQ on udp ([0-9.]+):(\d+), certificate (SHA256:\S+)"
)
BOT_KEY_LINE = re.compile(rb"bot identity key (pibridge-bot-\S+)")
SHELL = "bash --norc --noprofile"


@attrs.define(eq=False)
class Bot:
    """The bot process, where clients reach it, and how to mint its tokens."""

    server: ServerProcess
    state: Path
    workspace: Path
    host: str = ""
    port: int = 0
    fingerprint: str = ""
    bot_key: str = ""

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.server.process.pid

    def token(self, user: str = "alice", group: str = "team", ttl: str | None = None) -> str:
        argv = [TOKEN, "--state-dir", str(self.state), "--user", user, "--group", group]
        if ttl is not None:
            argv += ["--ttl", ttl]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()

    def expired_token(self, user: str = "alice", group: str = "team") -> str:
        """A token minted with the bot's key an hour ago for ten minutes.

        The bot allows 30 s of clock skew, so a token that just expired would
        still pass; an old one is what a user really holds.
        """
        authority = TokenAuthority(load_or_create_key(self.state), clock=lambda: time.time() - 3600)
        return authority.mint(user, group, ttl_seconds=600)

    def log(self) -> str:
        self.server._read()
        return self.server.output.decode(errors="replace")

    def wait_for_log(self, pattern: str, *, after: int = 0, timeout: float = 15.0) -> re.Match[str]:
        """Wait until ``pattern`` appears in the log past offset ``after`` (a `log_size`)."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = compiled.search(self.log(), after)
            if found:
                return found
            if time.monotonic() > deadline or self.server.process.poll() is not None:
                raise AssertionError(f"bot never logged {pattern!r}; log:\n{self.log()[after:]}")
            time.sleep(0.02)

    def log_size(self) -> int:
        return len(self.log())

    def rss(self) -> int:
        """Resident memory of the bot process itself, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def attach_argv(self, token: str, *extra: str, target: str | None = None) -> list[str]:
        """pibridge-attach with the token in a file (as the help recommends) and the bot pinned."""
        tokens = self.state.parent / "tokens"
        tokens.mkdir(exist_ok=True)
        token_file = tokens / f"{len(list(tokens.iterdir()))}.token"
        token_file.write_text(token)
        return [
            ATTACH,
            "--known-hosts",
            str(self.state.parent / "known_hosts"),
            "--fingerprint",
            self.fingerprint,
            "--token-file",
            str(token_file),
            *extra,
            target or self.target,
        ]


@contextmanager
def running_bot(
    tmp_path: Path,
    *,
    command: str | None = SHELL,
    heartbeat: float = 0.5,
    grace: float = 5.0,
    extra: Sequence[str] = (),
) -> Iterator[Bot]:
    """A bot running ``command`` (pi when None) in its terminal sessions."""
    workspace = tmp_path / "workspace"
    state = tmp_path / "state"
    workspace.mkdir(parents=True, exist_ok=True)
    args = [
        "--http",
        "tcp:0:interface=127.0.0.1",
        "--moq",
        "127.0.0.1:0",
        "--workspace",
        str(workspace),
        "--state-dir",
        str(state),
        "--heartbeat",
        str(heartbeat),
        "--grace",
        str(grace),
        *extra,
    ]
    if command is not None:
        args += ["--pi-command", command]
    env = dict(os.environ)
    server = ServerProcess(args, cwd=tmp_path, env=env)
    bot = Bot(server, state, workspace)
    try:
        found = server.wait_for(MOQ_LINE)
        bot.host, bot.port = found.group(1).decode(), int(found.group(2))
        bot.fingerprint = found.group(3).decode()
        bot.bot_key = server.wait_for(BOT_KEY_LINE).group(1).decode()
        yield bot
    finally:
        if server.process.poll() is None:
            server.stop()
