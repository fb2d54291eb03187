"""Where provider keys and the model come from, and what status says about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.logger import Logger, LogPublisher, formatEvent

from pibridge.agent.credentials import load_credentials, parse_model
from pibridge.agent.log_redaction import RedactingLogObserver
from pibridge.agent.offline_model import OfflineModelService
from pibridge.agent.runtime import AgentRuntime

from .conftest import FAKE_KEY, PI_COMMAND


def test_keys_come_from_env_and_secrets_dir(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "OPENAI_API_KEY").write_text("sk-openai-vault\n")
    (secrets_dir / "google").write_text("gemini-from-provider-file\r\n")
    credentials = load_credentials({"ANTHROPIC_API_KEY": FAKE_KEY}, secrets_dir)
    found = {key.provider: key.value for key in credentials.keys}
    assert found == {
        "anthropic": FAKE_KEY,
        "openai": "sk-openai-vault",
        "google": "gemini-from-provider-file",
    }
    assert FAKE_KEY not in repr(credentials)
    assert "sk-openai-vault" not in repr(credentials)


def test_secrets_dir_wins_over_environment(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "ANTHROPIC_API_KEY").write_text("sk-rotated-by-vault\n")
    credentials = load_credentials({"ANTHROPIC_API_KEY": "sk-stale-env-key"}, secrets_dir)
    key = credentials.key_for("anthropic")
    assert key is not None and key.value == "sk-rotated-by-vault"
    assert "sk-stale-env-key" in credentials.secret_values, "both stay redacted"


@pytest.mark.parametrize("text", ["claude", "anthropic/", "/x", "Anthropic Claude/x y", ""])
def test_model_must_be_provider_slash_id(text: str) -> None:
    with pytest.raises(ValueError, match="provider/id"):
        parse_model(text)


def test_model_ids_may_contain_slashes() -> None:
    ref = parse_model("openrouter/anthropic/claude-3.5-sonnet")
    assert (ref.provider, ref.model_id) == ("openrouter", "anthropic/claude-3.5-sonnet")


def make_runtime(tmp_path: Path, **overrides: Any) -> AgentRuntime:
    arguments: dict[str, Any] = {
        "pi_command": PI_COMMAND,
        "workspace": tmp_path / "workspace",
        "state_dir": tmp_path / "state",
        "environ": {"PATH": "/usr/bin:/bin"},
    }
    arguments.update(overrides)
    return AgentRuntime(**arguments)


def test_named_model_without_its_key_is_not_ready(
    tmp_path: Path, offline_model: OfflineModelService
) -> None:
    runtime = make_runtime(
        tmp_path,
        model="anthropic/claude-sonnet-4-5",
        secrets_dir=tmp_path / "secrets",
        environ={"OPENAI_API_KEY": "sk-openai-only"},
        offline_model=offline_model,
    )
    status = runtime.status()
    assert not status.ready
    assert status.problem is not None
    assert "ANTHROPIC_API_KEY" in status.problem
    assert str(tmp_path / "secrets" / "ANTHROPIC_API_KEY") in status.problem


def test_named_model_with_its_key_is_used(tmp_path: Path) -> None:
    runtime = make_runtime(
        tmp_path,
        environ={"PI_SERVICE_MODEL": "anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY": FAKE_KEY},
    )
    status = runtime.status()
    assert (status.ready, status.offline) == (True, False)
    assert status.model_label == "anthropic/claude-sonnet-4-5"
    argv = runtime.invocation("rpc").argv
    assert argv[argv.index("--provider") + 1] == "anthropic"
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"


def test_a_key_makes_its_provider_the_default_over_the_offline_model(
    tmp_path: Path, offline_model: OfflineModelService
) -> None:
    runtime = make_runtime(
        tmp_path, environ={"OPENAI_API_KEY": "sk-openai-1234"}, offline_model=offline_model
    )
    status = runtime.status()
    assert status.ready and not status.offline
    assert status.model_label.startswith("openai")


def test_invalid_model_setting_is_reported(tmp_path: Path) -> None:
    status = make_runtime(tmp_path, model="claude").status()
    assert not status.ready
    assert status.problem is not None and "provider/id" in status.problem


def test_redacting_observer_hides_secrets_in_messages_and_tracebacks(tmp_path: Path) -> None:
    runtime = make_runtime(tmp_path, environ={"ANTHROPIC_API_KEY": FAKE_KEY})
    written: list[str] = []
    publisher = LogPublisher()
    publisher.addObserver(
        RedactingLogObserver(lambda event: written.append(formatEvent(event)), runtime.redact)
    )
    log = Logger(observer=publisher)
    log.info("pi said: {text}", text=f"401 invalid x-api-key {FAKE_KEY}")
    try:
        raise ValueError(f"bad key {FAKE_KEY}")
    except ValueError:
        log.failure("request failed")
    assert len(written) == 2
    assert all(FAKE_KEY not in line for line in written)
    assert "pi said: 401 invalid x-api-key [redacted]" in written[0]
    assert "ValueError: bad key [redacted]" in written[1]


def test_missing_bubblewrap_is_reported_unless_sandbox_is_off(
    tmp_path: Path, offline_model: OfflineModelService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pibridge.agent.runtime.find_bwrap", lambda: None)
    status = make_runtime(tmp_path, offline_model=offline_model).status()
    assert not status.ready
    assert status.problem is not None
    assert "bubblewrap" in status.problem and "--no-sandbox" in status.problem
    assert make_runtime(tmp_path, offline_model=offline_model, sandbox=False).status().ready
