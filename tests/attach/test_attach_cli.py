"""pibridge-attach: options, --help, and a whole attach in a real PTY against an in-memory bot."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import jwt
import pytest

from pibridge.attach.cli import DEFAULT_PORT, UsageProblem, parse_arguments

PROGRAM = Path(__file__).with_name("attach_cli_program.py")
SID = "123e4567-e89b-12d3-a456-426614174000"
TOKEN = jwt.encode({"sub": "alice", "grp": "team1"}, "k" * 32, algorithm="HS256")


def test_help_documents_the_command() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pibridge.attach.cli import main; sys.exit(main())",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for word in (
        "--token",
        "--token-file",
        "--session",
        "--group",
        "--relay",
        "--known-hosts",
        "--fingerprint",
        "--ui",
        "HOST[:PORT]",
        "PIBRIDGE_UI_MODE",
        "exit status",
    ):
        assert word in result.stdout


def test_options_defaults_group_from_token_and_env_ui(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    options = parse_arguments(
        ["--token-file", str(token_file), "bot.example"], {"TERM": "xterm-kitty"}
    )
    assert (options.host, options.port) == ("bot.example", DEFAULT_PORT)
    assert options.token == TOKEN
    assert options.group == "team1"
    assert options.term == "xterm-kitty"
    assert options.ui == "pty"
    assert options.new_session
    options = parse_arguments(["--session", SID, "[::1]:5000"], {"PIBRIDGE_UI_MODE": "rpc"})
    assert (options.host, options.port, options.ui, options.session_id) == ("::1", 5000, "rpc", SID)
    assert not options.new_session
    assert options.http_base_url == "http://[::1]:8080"
    assert TOKEN not in repr(parse_arguments(["--token", TOKEN, "h"], {}))


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (["h"], {}, "a token is needed"),
        (["--token", "not-a-jwt", "h"], {}, "--group is needed"),
        (["--token", TOKEN, "--session", "nope", "h"], {}, "not a UUID"),
        (["--token", TOKEN, "h:99999"], {}, "not a port"),
        (["--token", TOKEN, "h"], {"PIBRIDGE_UI_MODE": "web"}, "use pty or rpc"),
        (["--token", TOKEN, "--relay", "http://r", "h"], {}, "moqt://"),
        (["--token-file", "/nonexistent/token", "h"], {}, "--token-file"),
    ],
)
def test_bad_options_are_explained(argv: list[str], environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(UsageProblem, match=fragment):
        parse_arguments(argv, environ)


class PtyRun:
    """The attach program running on a real PTY of 100x30."""

    def __init__(self, *arguments: str) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.flags_before = fcntl.fcntl(self.slave, fcntl.F_GETFL)
        self.output = bytearray()

        def take_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, str(PROGRAM), "--token", TOKEN, "--session", SID, *arguments, "bot"],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            preexec_fn=take_terminal,
            env={**os.environ, "TERM": "xterm-256color"},
        )

    def read_until(self, marker: bytes, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not in {bytes(self.output)!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return
                self.output += chunk

    def finish(self) -> int:
        code = self.process.wait(timeout=15)
        self.after = termios.tcgetattr(self.slave)
        self.flags_after = fcntl.fcntl(self.slave, fcntl.F_GETFL)
        os.close(self.slave)
        self.read_until(b"\0never\0")
        os.close(self.master)
        return code

    def assert_restored(self) -> None:
        assert self.after == self.before
        assert self.flags_after == self.flags_before
        tail = bytes(self.output[self.output.index(b"hello") :])
        assert b"\x1b[?2004l" in tail and b"\x1b[<1u" in tail and b"\x1b[?25h" in tail


def test_attach_session_end_to_end_in_a_pty() -> None:
    run = PtyRun()
    try:
        run.read_until(b"hello 100x30")
        assert not termios.tcgetattr(run.slave)[3] & termios.ICANON
        os.write(run.master, b"\x1b[A")
        run.read_until(b"echo:1b5b41")
        os.write(run.master, b"\x03")
        run.read_until(b"echo:03")
        fcntl.ioctl(run.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        run.read_until(b"resize 120x40")
        os.write(run.master, b"q")
        assert run.finish() == 5
    finally:
        if run.process.poll() is None:
            run.process.kill()
    run.assert_restored()
    assert b"remote program exited with status 5" in run.output


@pytest.mark.parametrize(
    ("key", "code", "message"),
    [
        (b"x", 255, b"the connection closed"),
        (b"r", 77, b"the bot refused the session: the token has expired"),
    ],
    ids=["network-loss", "refusal"],
)
def test_connection_loss_and_refusal_restore_and_exit(
    key: bytes, code: int, message: bytes
) -> None:
    run = PtyRun()
    try:
        run.read_until(b"hello")
        os.write(run.master, key)
        assert run.finish() == code
    finally:
        if run.process.poll() is None:
            run.process.kill()
    run.assert_restored()
    assert message in run.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_restores_sends_close_and_exits(signum: int) -> None:
    run = PtyRun()
    try:
        run.read_until(b"hello")
        run.process.send_signal(signum)
        assert run.finish() == 128 + signum
    finally:
        if run.process.poll() is None:
            run.process.kill()
    run.assert_restored()
    assert b"bot got close user_exit" in run.output


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--ui", "rpc", "--session", SID, "--token", "t", "bot:4443"], {}),
        (
            ["--session", SID, "--token", "t", "--base-url", "http://bot:8080", "bot"],
            {"PIBRIDGE_UI_MODE": "rpc"},
        ),
    ],
)
def test_rpc_ui_mode_runs_the_chat_view(argv: list[str], environ: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(PROGRAM.with_name("attach_rpc_program.py")), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **environ},
    )
    assert result.returncode == 7, result.stderr
    call = json.loads(result.stderr.strip().splitlines()[-1])
    assert call == {"base_url": "http://bot:8080", "session_id": SID, "token": "t"}


def test_without_a_terminal_pty_mode_explains_itself() -> None:
    result = subprocess.run(
        [sys.executable, str(PROGRAM), "--token", TOKEN, "bot"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "must be a terminal" in result.stderr
