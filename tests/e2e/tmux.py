"""A terminal a person types into: a private tmux server with one window running a shell.

Every test gets its own socket, so nothing leaks between tests or into the
user's own tmux; `TmuxTerminal.kill` ends that server only.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

SHELL_PROMPT = "tmux$ "


@attrs.define(eq=False)
class TmuxTerminal:
    socket: Path
    cols: int = 100
    rows: int = 30
    env: Mapping[str, str] = attrs.field(factory=dict)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, cwd: Path) -> None:
        """A plain shell with a fixed prompt, as the user's own terminal."""
        environment = [f"{key}={value}" for key, value in self.env.items()]
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            str(self.cols),
            "-y",
            str(self.rows),
            "-c",
            str(cwd),
            "env",
            f"PS1={SHELL_PROMPT}",
            *environment,
            "bash",
            "--norc",
            "--noprofile",
        )
        self.tmux("set-option", "-g", "status", "off")
        self.tmux("set-option", "-g", "escape-time", "0")
        self.tmux("set-window-option", "-g", "window-size", "manual")
        self.wait_for(lambda screen: SHELL_PROMPT in screen)

    def type(self, text: str) -> None:
        """Literal text, as typed."""
        self.tmux("send-keys", "-l", text)

    def keys(self, *names: str) -> None:
        """Named keys (Enter, Escape, C-c, Up, ...)."""
        self.tmux("send-keys", *names)

    def run(self, command: str) -> None:
        self.type(command)
        self.keys("Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J")

    def history(self) -> str:
        """The whole pane including what scrolled off."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-")

    def wait_for(
        self, condition: Callable[[str], bool] | str, timeout: float = 15.0, *, whole: bool = False
    ) -> str:
        """Poll the screen until ``condition`` (or the regex) holds; fail with the screen if not."""
        check: Callable[[str], bool]
        if isinstance(condition, str):
            pattern = re.compile(condition)
            check = lambda screen: pattern.search(screen) is not None  # noqa: E731
        else:
            check = condition
        deadline = time.monotonic() + timeout
        while True:
            screen = self.history() if whole else self.screen()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting on the screen:\n{screen}")
            time.sleep(0.05)

    def resize(self, cols: int, rows: int) -> None:
        self.tmux("resize-window", "-x", str(cols), "-y", str(rows))

    def pane_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "#{pane_pid}").strip())

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=10
        )
