"""``twistd -n pibridge`` as a user runs it: says where it listens, answers, stops cleanly."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.servers import ServerProcess, running_server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_starts_answers_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    with running_server(tmp_path) as server:
        capabilities = server.get_json("/api/capabilities")
        assert capabilities["features"]["pi"] is True
        assert capabilities["services"]["pi"]["mode"] == "backend"
        assert server.stop(signum) == 0
    log = server.output.decode(errors="replace")
    assert "Server Shut Down." in log
    assert "Traceback" not in log


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with running_server(tmp_path / "one") as first:
        port = first.url.rsplit(":", 1)[1].strip("/")
        (tmp_path / "two").mkdir()
        second = ServerProcess(
            [
                "--http",
                f"tcp:{port}:interface=127.0.0.1",
                "--workspace",
                str(tmp_path),
                "--state-dir",
                str(tmp_path / "two" / "state"),
            ],
            cwd=tmp_path / "two",
        )
        second.wait_for(re.compile(rb"cannot listen for HTTP on tcp:\d+:.*Address already in use"))
        assert second.process.wait(30) == 1
        assert b"Traceback" not in second.output
