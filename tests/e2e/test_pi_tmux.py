"""pi through pibridge under tmux, driven the way a person uses it.

Everything here is read off the tmux screen: what pi draws must arrive as pi
drew it, keys must reach pi as the keys they are, and the terminal must be
as it was once pibridge-attach exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.bot import Bot, running_bot
from tests.e2e.tmux import SHELL_PROMPT, TmuxTerminal

#: Shift+Enter as the kitty keyboard protocol encodes it (pi's newLine key).
SHIFT_ENTER = ("1b", "5b", "31", "33", "3b", "32", "75")
#: pi's footer: the offline model's name at the right edge of the last line.
PI_READY = r"offline\s*$"


@pytest.fixture(scope="module")
def pi_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    with running_bot(
        tmp_path_factory.mktemp("pi-bot"), command=None, extra=["--no-sandbox"]
    ) as bot:
        yield bot


def attach_pi(tmux: TmuxTerminal, bot: Bot) -> None:
    tmux.run(" ".join(bot.attach_argv(bot.token())))
    tmux.wait_for(PI_READY, timeout=30)


def exit_status(tmux: TmuxTerminal) -> int:
    tmux.run("echo EXIT=$?")
    screen = tmux.wait_for(r"EXIT=\d+")
    return int(screen.rsplit("EXIT=", 1)[1].split()[0])


@pytest.mark.slow
def test_a_session_with_pi_as_a_person_has_it(
    pi_bot: Bot, tmux: TmuxTerminal, tmp_path: Path
) -> None:
    tmux.run(f"stty -a > {tmp_path}/before")
    attach_pi(tmux, pi_bot)

    # A tool-heavy answer: each call drawn as pi draws it, then the quoted results.
    tmux.type("check [bash: echo alpha-$((40+2))] [bash: echo beta] [bash: printf 'g%.0s' 1 2 3]")
    tmux.keys("Enter")
    screen = tmux.wait_for(r"Tool bash returned:\s+ggg", timeout=30, whole=True)
    assert screen.index("$ echo alpha-$((40+2))") < screen.index("alpha-42")
    assert screen.index("alpha-42") < screen.index("$ echo beta") < screen.index("$ printf")
    assert screen.count("Tool bash returned:") == 3

    # Multi-line input: Shift+Enter adds a line, Enter sends both.
    tmux.type("first line")
    tmux.tmux("send-keys", "-H", *SHIFT_ENTER)
    tmux.type("second line")
    tmux.keys("Enter")
    tmux.wait_for(r"You said: first line\s*\n\s*second line", whole=True)

    # History: Up brings back the last prompt, both lines of it, into the editor.
    tmux.keys("Up")
    tmux.wait_for(r"─+\n\s*first line\s*\n\s*second line\s*\n─+")
    tmux.keys("Down")
    tmux.wait_for(r"─+\n\s*\n─+")

    # A slash command: /session shows pi's own session information.
    tmux.type("/session")
    tmux.keys("Enter")
    tmux.wait_for(r"(?i)session info|session file|messages", whole=True)

    # Escape aborts a stream that is still running.
    tmux.type("stream [slow: 200] [long: 50]")
    tmux.keys("Enter")
    tmux.wait_for(r"You said: stream", whole=True)
    tmux.keys("Escape")
    tmux.wait_for("Operation aborted", whole=True)
    tmux.type("after the abort")
    tmux.keys("Enter")
    screen = tmux.wait_for("You said: after the abort", whole=True)
    assert "line 50 of 50" not in screen

    # Ctrl-C twice leaves pi; the shell gets its terminal back as it was.
    tmux.keys("C-c")
    tmux.keys("C-c")
    tmux.wait_for(lambda s: s.rstrip().endswith(SHELL_PROMPT.rstrip()), timeout=15)
    assert exit_status(tmux) == 0
    tmux.run(f"stty -a > {tmp_path}/after")
    tmux.run(f"cmp {tmp_path}/before {tmp_path}/after && echo TERMINAL-SAME")
    tmux.wait_for("TERMINAL-SAME")
    assert "remote program exited with status 0" in tmux.history()
