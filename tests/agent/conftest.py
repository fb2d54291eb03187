"""Fixtures for the agent runtime tests: a running offline model and a runtime."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet import reactor

from pibridge.agent.offline_model import OfflineModelService
from pibridge.agent.runtime import AgentRuntime

PI_COMMAND = (str(Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "pi"),)
FAKE_KEY = "sk-test-SECRET-4f1c2a9e7b3d"


@pytest.fixture
def offline_model(tmp_path: Path) -> Iterator[OfflineModelService]:
    service = OfflineModelService(reactor, tmp_path / "state")
    service.startService()
    yield service
    service.stopService()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def runtime(tmp_path: Path, workspace: Path, offline_model: OfflineModelService) -> AgentRuntime:
    return AgentRuntime(
        pi_command=PI_COMMAND,
        workspace=workspace,
        state_dir=tmp_path / "state",
        environ={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        offline_model=offline_model,
    )
