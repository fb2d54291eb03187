"""Parity: the same keys give the same bytes directly in a PTY and through pibridge.

Each program is reached the same way on both sides: a shell starts, the same
keys are typed (each after the output it answers has arrived), and the whole
output is kept. Through pibridge-attach the remote bytes must come out
unchanged, framed only by the client's title push/pop and the resets of the
modes the program left on (computed from the program's own bytes).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pibridge.tap import default_pi_command
from tests.e2e.bot import Bot, running_bot
from tests.e2e.conftest import user_environment
from tests.e2e.pty_driver import PtyRun, as_attach_shows
from tests.e2e.tmux import TmuxTerminal

PROGRAMS = Path(__file__).parent / "programs"
PROMPT = re.compile(rb"bash-[0-9.]+# ")
Script = Callable[[PtyRun], None]


def run_both(bot: Bot, script: Script, *, cols: int = 80, rows: int = 24) -> tuple[bytes, bytes]:
    """(direct output, output through pibridge-attach) for the same keys."""
    env = user_environment()
    direct = PtyRun(
        ["bash", "--norc", "--noprofile"], cols=cols, rows=rows, env=env, cwd=str(bot.workspace)
    )
    try:
        script(direct)
        direct_status = direct.finish()
    finally:
        direct.close()
    attached = PtyRun(bot.attach_argv(bot.token()), cols=cols, rows=rows, env=env, stderr_pipe=True)
    try:
        script(attached)
        attached_status = attached.finish()
        assert attached_status == direct_status, attached.stderr()
    finally:
        attached.close()
    return bytes(direct.output), bytes(attached.output)


def shell_session(run: PtyRun) -> None:
    run.expect(PROMPT)
    run.send(b"for i in 1 2 3; do printf '\\e[3%dmcolour %d\\e[0m\\t|\\n' $i $i; done\r")
    run.expect(PROMPT)
    run.send(b"cat <<'END'\r")
    run.expect(b"> ")
    run.send(b"  indented \xc3\xa9t\xc3\xa9 line\r")
    run.expect(b"> ")
    run.send(b"END\r")
    run.expect(PROMPT)
    run.send(b"echo $COLUMNS x $LINES; tput cols; false || echo status=$?\r")
    run.expect(PROMPT)
    run.send(b"exit 7\r")


def program(argv: str, keys: Script | None = None) -> Script:
    def script(run: PtyRun) -> None:
        run.expect(PROMPT)
        run.send(b"exec " + argv.encode() + b"\r")
        if keys is not None:
            keys(run)

    return script


def curses_keys(run: PtyRun) -> None:
    run.expect(b"q quits")
    run.send(b"x")
    run.expect(b"got 'x'")
    run.send(b"\x1bOA")  # application cursor keys (curses turns keypad on)
    run.expect(b"KEY_UP")
    run.send(b"q")


def test_a_shell_session_is_byte_identical(shell_bot: Bot) -> None:
    direct, attached = run_both(shell_bot, shell_session)
    assert b"colour 3" in direct and b"7" in direct
    assert attached == as_attach_shows(direct)


def test_every_byte_and_split_utf8_are_byte_identical(shell_bot: Bot) -> None:
    script = program(f"python3 {shlex.quote(str(PROGRAMS / 'every_byte.py'))}")
    direct, attached = run_both(shell_bot, script, cols=100, rows=30)
    assert bytes(range(0x20, 0x7F)) in direct and "世界 🎉".encode() in direct
    assert attached == as_attach_shows(direct)


def test_a_curses_program_is_byte_identical(shell_bot: Bot) -> None:
    script = program(f"python3 {shlex.quote(str(PROGRAMS / 'curses_screen.py'))}", curses_keys)
    direct, attached = run_both(shell_bot, script, cols=90, rows=20)
    assert b"curses 90x20" in direct and b"\x1b[?1049h" in direct
    assert attached == as_attach_shows(direct)


# -- pi -----------------------------------------------------------------------------------

#: What varies between two runs of pi drawing the same answer: the time a tool took.
TIMING = re.compile(r"Took \d+(\.\d+)?s")


@pytest.fixture(scope="module")
def pi_bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bot]:
    """A bot whose pi is a wrapper (named pi, so it is run as pi) noting how it was started."""
    tmp = tmp_path_factory.mktemp("pi-parity")
    wrapper = tmp / "bin" / "pi"
    wrapper.parent.mkdir()
    record = tmp / "launch"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"mkdir -p {record}\n"
        f"pwd > {record}/cwd\n"
        f"env -0 > {record}/env\n"
        f'printf "%s\\0" "$@" > {record}/argv\n'
        f'exec {shlex.quote(default_pi_command())} "$@"\n'
    )
    wrapper.chmod(0o755)
    with running_bot(tmp, command=str(wrapper), extra=["--no-sandbox"]) as bot:
        yield bot


def recorded_launch(bot: Bot) -> tuple[str, dict[str, str], list[str]]:
    """(cwd, environment, argv) the bot started its pi with."""
    record = bot.workspace.parent / "launch"
    cwd = (record / "cwd").read_text().strip()
    pairs = (record / "env").read_bytes().decode().split("\0")
    env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    argv = (record / "argv").read_bytes().decode().split("\0")[:-1]
    return cwd, env, [default_pi_command(), *argv]


def pi_screen(tmux: TmuxTerminal, launch: str) -> str:
    """pi's final screen after a fixed prompt with tool calls, from the first line pi drew."""
    tmux.run(launch)
    tmux.wait_for(r"offline\s*$", timeout=30)
    tmux.type("parity check [bash: echo one] [bash: printf '%s\\n' two three]")
    tmux.keys("Enter")
    tmux.wait_for(r"Tool bash returned:\s+two\s+three[\s\S]*offline\s*$", timeout=30, whole=True)
    screen = tmux.history()
    # Everything above pi's own first line is the shell that launched it.
    start = screen.index(launch[:40])
    body = screen[start:].split("\n", 1)[1]
    return TIMING.sub("Took <time>", "\n".join(line.rstrip() for line in body.splitlines()))


def test_pi_draws_the_same_screen_directly_and_through_pibridge(
    pi_bot: Bot, tmp_path: Path
) -> None:
    """The final screen of pi's answer, as tmux renders it, is the same both ways.

    The byte streams differ in timing (spinner frames, "Took 0.1s"), so the
    comparison is of the rendered screen, with the tool durations masked.
    """
    env = user_environment()
    attached_tmux = TmuxTerminal(tmp_path / "attached.sock", env=env)
    direct_tmux = TmuxTerminal(tmp_path / "direct.sock", env=env)
    try:
        attached_tmux.start(tmp_path)
        attached = pi_screen(attached_tmux, " ".join(pi_bot.attach_argv(pi_bot.token())))
        # The same pi, started the same way, right here in a local terminal.
        cwd, environment, argv = recorded_launch(pi_bot)
        launcher = tmp_path / "direct-pi.sh"
        exports = "".join(
            f"export {key}={shlex.quote(value)}\n"
            for key, value in environment.items()
            if key not in ("PWD", "OLDPWD", "SHLVL", "_")
        )
        launcher.write_text(f"cd {shlex.quote(cwd)}\n{exports}exec {shlex.join(argv)}\n")
        direct_tmux.start(tmp_path)
        direct = pi_screen(direct_tmux, f"env -i bash {launcher}")
    finally:
        attached_tmux.kill()
        direct_tmux.kill()
    assert "$ echo one" in attached
    assert attached == direct
