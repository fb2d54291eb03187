"""Parity harness: run a program in a plain local PTY and collect every output byte.

The PTY host's output is compared against this, the way a program behaves when
run directly in a terminal of the same size and type.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence


def run_in_local_pty(
    argv: Sequence[str],
    *,
    cols: int,
    rows: int,
    env: Mapping[str, str],
    cwd: str,
    timeout: float = 20.0,
) -> tuple[bytes, int]:
    """All output of ``argv`` run in a fresh PTY of the given size, and its return code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            process.kill()
            raise TimeoutError(f"{argv[0]} did not finish within {timeout} s")
    finally:
        os.close(master)
    return b"".join(chunks), process.wait(timeout=timeout)


def processes_in_group(group: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose process group is ``group``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group:
            found.append((int(entry), fields[0]))
    return found


def process_state(pid: int) -> tuple[str, str]:
    """The scheduler state and the current system call line of a process."""
    with open(f"/proc/{pid}/stat") as handle:
        stat = handle.read()
    with open(f"/proc/{pid}/syscall") as handle:
        syscall = handle.read()
    return stat[stat.rindex(")") + 2 :].split()[0], syscall.split(" ", 1)[0]
