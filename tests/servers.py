"""Run ``twistd pibridge`` as a real process for whole-system tests."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TWISTD = str(Path(sys.executable).with_name("twistd"))
HTTP_LINE = re.compile(rb"HTTP API on (http://[^/\s]+/)")
TOKEN_LINE = re.compile(rb"open http://[^/\s]+/\?token=([A-Za-z0-9_-]+)")


class ServerProcess:
    """A ``twistd -n pibridge`` child whose log lines are collected as they come."""

    def __init__(self, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.argv = [TWISTD, "-n", "--pidfile=", "pibridge", *args]
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = b""
        self.url = ""
        self.token = ""

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float = 30.0) -> re.Match[bytes]:
        """Read output until ``pattern`` matches; fail with the log if it never does."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                found = pattern.search(self.output)
                if found:
                    return found
                remaining = deadline - time.monotonic()
                exited = self.process.poll() is not None and not self._read()
                if remaining <= 0 or exited:
                    log = self.output.decode(errors="replace")
                    raise AssertionError(f"never saw {pattern.pattern!r}; output:\n{log}")
                if selector.select(remaining):
                    self._read()

    def _read(self) -> bool:
        assert self.process.stdout is not None
        try:
            chunk = self.process.stdout.read(65536)
        except BlockingIOError:
            return False
        if chunk:
            self.output += chunk
        return bool(chunk)

    def started(self, timeout: float = 30.0) -> str:
        self.url = self.wait_for(HTTP_LINE, timeout).group(1).decode()
        self.token = self.wait_for(TOKEN_LINE, timeout).group(1).decode()
        return self.url

    @property
    def login_url(self) -> str:
        """The URL a person opens: the page signs in with the printed token."""
        return f"{self.url}?token={self.token}"

    def api_request(self, path: str, body: Any = None) -> urllib.request.Request:
        """A request to the API carrying the printed token; a body makes it a JSON POST."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is None:
            return urllib.request.Request(self.url.rstrip("/") + path, headers=headers)
        headers["Content-Type"] = "application/json"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return urllib.request.Request(
            self.url.rstrip("/") + path, data=data, headers=headers, method="POST"
        )

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.api_request(path), timeout=10) as response:
            return json.load(response)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError("pibridge did not stop within the time allowed") from None
        self._read()
        return code


@contextmanager
def running_server(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    workspace = tmp_path / "workspace"
    state = tmp_path / "state"
    workspace.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        [
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--moq",
            "127.0.0.1:0",
            "--workspace",
            str(workspace),
            "--state-dir",
            str(state),
            *extra,
        ],
        cwd=tmp_path,
        env=env,
    )
    try:
        server.started()
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
