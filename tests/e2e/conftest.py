"""Fixtures for the end-to-end tests: a private tmux per test, bots that run a shell or pi."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bot import Bot, running_bot
from tests.e2e.tmux import TmuxTerminal


def user_environment() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(Path.home()),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[TmuxTerminal]:
    terminal = TmuxTerminal(tmp_path / "tmux.sock", env=user_environment())
    terminal.start(tmp_path)
    try:
        yield terminal
    finally:
        terminal.kill()


@pytest.fixture(scope="module")
def shell_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """A bot whose terminal sessions run a plain shell; shared by a module's tests."""
    with running_bot(tmp_path_factory.mktemp("shell-bot")) as bot:
        yield bot
