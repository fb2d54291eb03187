"""History from pi's session files, and the session records kept across restarts."""

from __future__ import annotations

import shutil
from pathlib import Path

from pibridge.chat.history import (
    history_json,
    messages_from_session_file,
    to_history,
    with_unconfirmed,
)
from pibridge.chat.store import SessionRecord, SessionStore
from pibridge.chat.wiring import build_chat
from tests.chat.chat_fakes import FakeRuntime, FakeSpawner

FIXTURES = Path(__file__).parent / "fixtures"


def test_a_recorded_session_file_gives_the_conversation_in_order() -> None:
    history = to_history(messages_from_session_file(FIXTURES / "tool.session.jsonl"))
    assert [message.role for message in history] == [
        "user",
        "assistant",
        "tool_result",
        "assistant",
    ]
    assert history[0].text == "[bash: echo hi-from-tool]"
    assert history[1].tool_calls[0].name == "bash"
    assert history[1].tool_calls[0].args == {"command": "echo hi-from-tool"}
    assert history[2].text == "hi-from-tool\n" and history[2].is_error is False
    assert "hi-from-tool" in history[3].text and history[3].stop_reason == "stop"


def test_line_separators_inside_messages_survive_the_file() -> None:
    history = to_history(messages_from_session_file(FIXTURES / "text.session.jsonl"))
    assert history[0].text == "hello there, line\u2028separator and \u2029 too"


def test_errors_are_kept_in_the_history() -> None:
    history = to_history(messages_from_session_file(FIXTURES / "model_error.session.jsonl"))
    assert history[-1].stop_reason == "error"
    assert history[-1].error == "500 the upstream model broke"


def test_only_the_current_branch_is_read(tmp_path: Path) -> None:
    path = tmp_path / "branched.jsonl"
    path.write_text(
        '{"type":"session","version":3,"id":"s"}\n'
        '{"type":"message","id":"a","parentId":null,"message":{"role":"user","content":"one"}}\n'
        '{"type":"message","id":"b","parentId":"a","message":{"role":"user","content":"old"}}\n'
        '{"type":"message","id":"c","parentId":"a","message":{"role":"user","content":"new"}}\n'
        "not json at all\n"
    )
    assert [m.text for m in to_history(messages_from_session_file(path))] == ["one", "new"]


def test_a_missing_file_is_an_empty_history_plus_what_the_user_said(tmp_path: Path) -> None:
    history = with_unconfirmed(to_history(messages_from_session_file(tmp_path / "no")), ["hi"])
    assert history_json(history)[0]["text"] == "hi"
    assert history_json(history)[0]["saved"] is False


def test_prompts_already_in_the_file_are_not_repeated() -> None:
    history = to_history(messages_from_session_file(FIXTURES / "text.session.jsonl"))
    said = "hello there, line\u2028separator and \u2029 too"
    assert with_unconfirmed(history, [said]) == history


def test_the_store_round_trips_and_skips_unreadable_records(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "chat")
    record = SessionRecord("abc", "t", "2026-01-01T00:00:00", "/x.jsonl", "idle", 7, ("hi",))
    store.save(record)
    (tmp_path / "chat" / "broken.json").write_text("{")
    shutil.copy(tmp_path / "chat" / "abc.json", tmp_path / "chat" / "copy.json")
    (tmp_path / "chat" / "copy.json").write_text('{"id": 5}')
    assert store.load_all() == [record]


def test_build_chat_reads_the_service_options(tmp_path: Path) -> None:
    config = {
        "state-dir": tmp_path,
        "max-sessions": 3,
        "idle-timeout": 60.0,
        "session-timeout": 600.0,
    }
    manager = build_chat(config, FakeSpawner(), FakeRuntime(tmp_path))
    assert manager.max_sessions == 3
    assert manager.idle_timeout == 60.0 and manager.session_timeout == 600.0
    assert manager.store.root == tmp_path / "chat"
