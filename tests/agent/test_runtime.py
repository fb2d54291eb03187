"""AgentRuntime: how pi is launched, and the real pi against the offline model."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from pibridge.agent.offline_model import OfflineModelService
from pibridge.agent.runtime import AgentNotReady, AgentRuntime

from .conftest import FAKE_KEY, PI_COMMAND
from .pi_rpc import assistant_texts, run_prompt, spawn_pi


def test_invocation_isolates_pi(runtime: AgentRuntime, workspace: Path, tmp_path: Path) -> None:
    invocation = runtime.invocation("rpc", session_file=tmp_path / "s.jsonl")
    assert invocation.argv[0] == PI_COMMAND[0]
    assert invocation.argv[1:3] == ("--mode", "rpc")
    assert "--offline" in invocation.argv
    assert invocation.argv[invocation.argv.index("--session") + 1] == str(tmp_path / "s.jsonl")
    assert invocation.cwd == str(workspace)
    env = invocation.env
    agent_dir = Path(env["PI_CODING_AGENT_DIR"])
    assert agent_dir == tmp_path / "state" / "pi-agent"
    assert env["PI_OFFLINE"] == "1"
    assert Path(env["HOME"]).is_relative_to(tmp_path / "state")
    assert "UTF-8" in env["LANG"]
    assert "TERM" not in env
    models = json.loads((agent_dir / "models.json").read_text())
    provider = models["providers"]["pibridge-offline"]
    assert provider["api"] == "openai-completions"
    assert provider["baseUrl"] == runtime.offline_model.url  # type: ignore[union-attr]
    for name in ("auth.json", "models.json", "settings.json"):
        assert stat.S_IMODE((agent_dir / name).stat().st_mode) == 0o600


def test_tui_invocation_sets_the_terminal(runtime: AgentRuntime) -> None:
    invocation = runtime.invocation("tui", term="screen-256color")
    assert "--mode" not in invocation.argv
    assert invocation.env["TERM"] == "screen-256color"


def test_server_environment_does_not_leak_into_pi(
    tmp_path: Path, workspace: Path, offline_model: OfflineModelService
) -> None:
    runtime = AgentRuntime(
        PI_COMMAND,
        workspace,
        tmp_path / "state",
        environ={
            "PATH": "/usr/bin:/bin",
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
            "DATABASE_URL": "postgres://user:pw@db/x",
        },
        offline_model=offline_model,
    )
    invocation = runtime.invocation("rpc")
    flat = json.dumps([invocation.argv, dict(invocation.env)])
    assert FAKE_KEY not in flat
    assert "aws-secret-value" not in flat
    assert "DATABASE_URL" not in flat
    auth = json.loads((tmp_path / "state" / "pi-agent" / "auth.json").read_text())
    assert auth["anthropic"] == {"type": "api_key", "key": FAKE_KEY}


def test_offline_status_when_no_key(runtime: AgentRuntime) -> None:
    status = runtime.status()
    assert status.ready and status.offline
    assert status.model_label == "offline model (pibridge, loopback)"
    assert status.problem is None


def test_not_ready_without_key_or_offline_model(tmp_path: Path, workspace: Path) -> None:
    runtime = AgentRuntime(PI_COMMAND, workspace, tmp_path / "state", environ={})
    status = runtime.status()
    assert not status.ready
    assert status.problem is not None
    assert "ANTHROPIC_API_KEY" in status.problem
    assert "secrets" in status.problem
    with pytest.raises(AgentNotReady):
        runtime.invocation("rpc")


def test_redact_hides_keys_and_the_offline_key(
    tmp_path: Path, workspace: Path, offline_model: OfflineModelService
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "OPENAI_API_KEY").write_text("sk-openai-from-vault\n")
    runtime = AgentRuntime(
        PI_COMMAND,
        workspace,
        tmp_path / "state",
        secrets_dir=secrets_dir,
        environ={"ANTHROPIC_API_KEY": FAKE_KEY},
        offline_model=offline_model,
    )
    text = f"a {FAKE_KEY} b sk-openai-from-vault c {offline_model.api_key} d"
    assert runtime.redact(text) == "a [redacted] b [redacted] c [redacted] d"


@pytest_twisted.inlineCallbacks
def test_real_pi_streams_the_offline_reply(runtime: AgentRuntime, tmp_path: Path) -> Any:
    session = tmp_path / "chat.jsonl"
    process = yield run_prompt(runtime.invocation("rpc", session_file=session), "hello pi")
    assert assistant_texts(process.events) == ["Offline model here. You said: hello pi"]
    deltas = [
        event["assistantMessageEvent"]["delta"]
        for event in process.events
        if event.get("type") == "message_update"
        and event["assistantMessageEvent"].get("type") == "text_delta"
    ]
    assert len(deltas) > 3, "the reply should stream in several deltas"
    end = next(
        e
        for e in process.events
        if e.get("type") == "message_end" and e["message"]["role"] == "assistant"
    )
    assert end["message"]["usage"]["output"] > 0
    assert session.exists(), "pi keeps the conversation in the session file"


@pytest_twisted.inlineCallbacks
def test_real_pi_runs_bash_in_the_workspace(runtime: AgentRuntime, workspace: Path) -> Any:
    process = yield run_prompt(
        runtime.invocation("rpc"), "[bash: echo hi; pwd; echo made > made.txt]"
    )
    reply = assistant_texts(process.events)[-1]
    assert reply == f"Tool bash returned:\nhi\n{workspace}\n"
    assert (workspace / "made.txt").read_text() == "made\n"


@pytest_twisted.inlineCallbacks
def test_real_pi_reports_a_model_failure(runtime: AgentRuntime) -> Any:
    process = yield run_prompt(runtime.invocation("rpc"), "[fail: the model is down]")
    ends = [
        e["message"]
        for e in process.events
        if e.get("type") == "message_end" and e["message"]["role"] == "assistant"
    ]
    assert ends[-1]["stopReason"] == "error"
    assert "the model is down" in ends[-1]["errorMessage"]


@pytest_twisted.inlineCallbacks
def test_a_session_file_resumes_the_conversation(runtime: AgentRuntime, tmp_path: Path) -> Any:
    session = tmp_path / "sessions" / "chat-1.jsonl"
    yield run_prompt(runtime.invocation("rpc", session_file=session), "first message")
    process = spawn_pi(runtime.invocation("rpc", session_file=session))
    try:
        answered = process.next_event("response")
        process.send({"id": "m", "type": "get_messages"})
        response = yield answered
    finally:
        yield process.close()
    texts = [
        part.get("text")
        for message in response["data"]["messages"]
        for part in message.get("content", [])
        if isinstance(part, dict)
    ]
    assert texts == ["first message", "Offline model here. You said: first message"]


def test_unknown_mode_is_refused(runtime: AgentRuntime) -> None:
    with pytest.raises(ValueError, match="rpc"):
        runtime.invocation("batch")


def test_pi_command_may_be_one_path(tmp_path: Path, workspace: Path) -> None:
    runtime = AgentRuntime(PI_COMMAND[0], workspace, tmp_path / "state", environ={"X": "1"})
    assert runtime.pi_command == PI_COMMAND


def test_a_command_that_is_not_pi_is_refused_while_sandboxed(
    tmp_path: Path, workspace: Path, offline_model: OfflineModelService
) -> None:
    runtime = AgentRuntime("/bin/cat", workspace, tmp_path / "state", offline_model=offline_model)
    with pytest.raises(AgentNotReady, match="cannot find pi's package"):
        runtime.invocation("tui")
    unsandboxed = AgentRuntime(
        "/bin/cat", workspace, tmp_path / "state", sandbox=False, offline_model=offline_model
    )
    invocation = unsandboxed.invocation("tui")
    assert invocation.argv[0] == "/bin/cat"
    assert "PI_PACKAGE_DIR" not in invocation.env


@pytest_twisted.inlineCallbacks
def test_real_pi_reports_a_stream_broken_midway(runtime: AgentRuntime) -> Any:
    process = yield run_prompt(runtime.invocation("rpc"), "[fail-mid: connection lost] [long: 6]")
    ends = [
        e["message"]
        for e in process.events
        if e.get("type") == "message_end" and e["message"]["role"] == "assistant"
    ]
    assert ends[-1]["stopReason"] == "error"
    assert "connection lost" in ends[-1]["errorMessage"]
    deltas = [
        e
        for e in process.events
        if e.get("type") == "message_update"
        and e["assistantMessageEvent"].get("type") == "text_delta"
    ]
    assert deltas, "part of the reply streamed before the break"


@pytest.mark.parametrize("term", ["", "../../etc/x", "xterm\n256", "a" * 200])
def test_odd_terminal_names_fall_back_to_xterm(runtime: AgentRuntime, term: str) -> None:
    assert runtime.invocation("tui", term=term).env["TERM"] == "xterm-256color"
