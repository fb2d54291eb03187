"""Steering an impairment relay process between pibridge-attach and the bot."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).parents[2]


@attrs.define(eq=False)
class ImpairedPath:
    process: subprocess.Popen[str]
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, line: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        assert answer.startswith("OK"), answer
        return answer[3:]

    def set(self, **conditions: float) -> None:
        self.command("set " + " ".join(f"{key}={value}" for key, value in conditions.items()))

    def cut(self) -> None:
        self.command("cut")

    def restore(self) -> None:
        self.command("restore")

    def rebind(self) -> int:
        return int(self.command("rebind").split()[-1])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.command("stats"))
        return result


@contextmanager
def impaired_path(host: str, port: int, seed: str = "e2e") -> Iterator[ImpairedPath]:
    """A relay in front of the bot at ``host:port``; clients use ``.target``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.impair_process", host, str(port), seed],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().split()
        assert first[:1] == ["LISTENING"], first
        yield ImpairedPath(process, int(first[1]))
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
