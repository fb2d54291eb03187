"""Chat session lifecycle, limits, timeouts and cleanup, in memory with a fake clock."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from pibridge.chat.eventlog import EventLog
from pibridge.chat.lifecycle import RUNNING, Input, InvalidTransition, State, advance
from pibridge.chat.manager import (
    SETSID,
    Busy,
    ChatManager,
    ChatSession,
    NotReady,
    TooManySessions,
    UnknownSession,
)
from pibridge.chat.process import Terminator
from tests.chat.chat_fakes import SECRET, FakeRuntime, FakeSpawner, GroupKills


@pytest.fixture
def clock() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def spawner() -> FakeSpawner:
    return FakeSpawner()


@pytest.fixture
def kills() -> GroupKills:
    return GroupKills()


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    return FakeRuntime(workspace)


def build(
    tmp_path: Path,
    clock: MemoryReactorClock,
    spawner: FakeSpawner,
    runtime: FakeRuntime,
    kills: GroupKills,
    **options: Any,
) -> ChatManager:
    settings: dict[str, Any] = {"max_sessions": 2, "idle_timeout": 60.0, "session_timeout": 600.0}
    settings.update(options)
    return ChatManager(
        spawner,
        clock,
        runtime,
        tmp_path / "state",
        terminator=Terminator(clock, close_grace=3.0, term_grace=2.0, kill_group=kills),
        **settings,
    )


@pytest.fixture
def manager(
    tmp_path: Path,
    clock: MemoryReactorClock,
    spawner: FakeSpawner,
    runtime: FakeRuntime,
    kills: GroupKills,
) -> ChatManager:
    return build(tmp_path, clock, spawner, runtime, kills)


def kinds(session: ChatSession) -> list[str]:
    return [event.kind for event in session.log.since(0).events]


def text_of(session: ChatSession) -> str:
    return "".join(e.data["text"] for e in session.log.since(0).events if e.kind == "delta")


def fired(deferred: Any) -> list[Any]:
    results: list[Any] = []
    deferred.addBoth(results.append)
    return results


def test_create_spawns_pi_in_the_workspace_on_its_own_session_file(
    manager: ChatManager, spawner: FakeSpawner, runtime: FakeRuntime, tmp_path: Path
) -> None:
    session = manager.create("first")
    [child] = spawner.processes
    assert child.args[0] == SETSID
    assert child.args[1:4] == ["pi", "--mode", "rpc"]
    assert child.args[-1] == str(
        tmp_path / "state" / "chat" / "pi-sessions" / f"{session.id}.jsonl"
    )
    assert child.path == str(runtime.workspace)
    assert [c["type"] for c in child.commands()] == ["set_auto_retry", "get_state"]
    assert session.state is State.IDLE
    assert manager.listing()[0]["state"] == "idle"
    assert manager.listing()[0]["title"] == "first"


def test_a_pi_that_never_answers_fails_its_session_after_the_start_timeout(
    manager: ChatManager, spawner: FakeSpawner, clock: MemoryReactorClock
) -> None:
    spawner.answer_commands = False
    session = manager.create()
    session.begin_turn("anyone there?")
    clock.advance(manager.start_timeout)
    assert session.state is State.FAILED
    last = session.log.since(0).events[-1]
    assert last.kind == "error" and last.data["code"] == "pi_not_ready"
    assert spawner.processes[0].stdin_closed
    assert manager.running_count == 0


def test_a_prompt_during_startup_is_held_until_pi_is_ready(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    spawner.answer_commands = False
    session = manager.create()
    assert session.state is State.STARTING
    session.begin_turn("early words")
    [child] = spawner.processes
    assert child.prompts() == []
    with pytest.raises(Busy):
        session.begin_turn("more words")
    child.answer_all()
    assert child.prompts() == ["early words"]
    assert session.state is State.STREAMING


def test_prompt_streams_deltas_and_ends_with_done(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    session = manager.create()
    first = session.begin_turn("hello")
    [child] = spawner.processes
    assert child.prompts() == ["hello"]
    assert session.state is State.STREAMING
    child.reply("Hi there friend")
    assert session.state is State.IDLE
    assert kinds(session) == ["session", "delta", "delta", "delta", "done"]
    assert session.log.since(0).events[0].id == first
    assert text_of(session) == "Hi there friend "
    assert session.log.since(0).events[-1].data["text"] == "Hi there friend"


def test_a_prompt_while_streaming_is_refused_with_busy(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    session = manager.create()
    session.begin_turn("one")
    with pytest.raises(Busy):
        session.begin_turn("two")
    assert spawner.processes[0].prompts() == ["one"]


def test_stop_is_idempotent_and_closes_stdin_first(
    manager: ChatManager, spawner: FakeSpawner, kills: GroupKills
) -> None:
    session = manager.create()
    first = fired(session.stop())
    view_after_first = session.view()
    second = fired(session.stop())
    assert first == [None] and second == [None]
    assert session.view() == view_after_first
    assert view_after_first["state"] == "stopped"
    assert view_after_first["resumable"] is True
    assert spawner.processes[0].stdin_closed
    assert kills.calls == []


def test_a_child_that_ignores_stdin_gets_sigterm_then_sigkill_on_its_group(
    manager: ChatManager, spawner: FakeSpawner, kills: GroupKills, clock: MemoryReactorClock
) -> None:
    session = manager.create()
    child = spawner.processes[0]
    child.exit_on_stdin_close = False
    first = fired(session.stop())
    second = fired(session.stop())
    assert session.state is State.STOPPING
    clock.advance(3.0)
    assert kills.calls == [(child.pid, signal.SIGTERM)]
    clock.advance(2.0)
    assert kills.calls == [(child.pid, signal.SIGTERM), (child.pid, signal.SIGKILL)]
    assert first == [] and second == []
    child.exit(-9)
    assert first == [None] and second == [None]
    assert session.state is State.STOPPED
    clock.advance(0)  # the session record is saved on the next reactor turn
    assert not clock.getDelayedCalls()


def test_idle_timeout_stops_pi_and_the_next_prompt_resumes_the_same_file(
    manager: ChatManager, spawner: FakeSpawner, clock: MemoryReactorClock
) -> None:
    session = manager.create()
    session.begin_turn("one")
    spawner.processes[0].reply("done one")
    clock.advance(59)
    assert session.state is State.IDLE
    clock.advance(1)
    assert session.state is State.STOPPED
    assert spawner.processes[0].stdin_closed
    session.begin_turn("two")
    assert len(spawner.processes) == 2
    assert spawner.processes[1].args == spawner.processes[0].args
    assert spawner.processes[1].prompts() == ["two"]
    assert session.state is State.STREAMING


def test_activity_postpones_the_idle_timeout(
    manager: ChatManager, spawner: FakeSpawner, clock: MemoryReactorClock
) -> None:
    session = manager.create()
    clock.advance(50)
    session.begin_turn("one")
    clock.advance(50)
    spawner.processes[0].reply("ok")
    clock.advance(50)
    assert session.state is State.IDLE


def test_session_timeout_ends_a_streaming_turn_with_an_error(
    manager: ChatManager, spawner: FakeSpawner, clock: MemoryReactorClock
) -> None:
    session = manager.create()
    session.begin_turn("long job")
    clock.advance(600)
    assert session.state is State.STOPPED
    last = session.log.since(0).events[-1]
    assert last.kind == "error" and last.data["code"] == "session_timeout"
    clock.advance(0)  # the session record is saved on the next reactor turn
    assert not clock.getDelayedCalls()


def test_limit_reached_refuses_new_and_resumed_sessions(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    one = manager.create()
    two = manager.create()
    with pytest.raises(TooManySessions) as refused:
        manager.create()
    assert refused.value.status == 429
    assert len(spawner.processes) == 2
    one.stop()
    three = manager.create()
    with pytest.raises(TooManySessions):
        one.begin_turn("come back")
    assert [s.state for s in (one, two, three)] == [State.STOPPED, State.IDLE, State.IDLE]


def test_missing_credential_answers_not_ready_with_the_runtime_message(
    manager: ChatManager, runtime: FakeRuntime, spawner: FakeSpawner
) -> None:
    runtime.ready = False
    runtime.problem = f"no provider key: set ANTHROPIC_API_KEY (not {SECRET})"
    with pytest.raises(NotReady) as refused:
        manager.create()
    assert refused.value.status == 503
    assert "ANTHROPIC_API_KEY" in refused.value.message
    assert SECRET not in refused.value.message
    assert spawner.processes == []


def test_unknown_session_ids_are_refused(manager: ChatManager) -> None:
    with pytest.raises(UnknownSession) as refused:
        manager.get("nope")
    assert refused.value.status == 404


def test_a_crashed_child_fails_only_its_session_with_a_clear_error(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    one = manager.create()
    two = manager.create()
    one.begin_turn("hi")
    crashed = spawner.processes[0]
    crashed.protocol.errReceived(b"Error: something exploded\n")
    crashed.exit(1)
    assert one.state is State.FAILED
    last = one.log.since(0).events[-1]
    assert last.kind == "error" and last.data["code"] == "pi_exited"
    assert "something exploded" in last.data["message"]
    assert "exit code 1" in last.data["message"]
    assert one.view()["problem"]
    two.begin_turn("still fine?")
    spawner.processes[1].reply("yes")
    assert kinds(two)[-1] == "done"
    # a failed session resumes on the next prompt
    one.begin_turn("again")
    assert spawner.processes[-1].prompts() == ["again"]
    assert one.state is State.STREAMING


def test_a_spawn_failure_fails_the_session_and_reports_it(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    spawner.fail_with = OSError("no such file: pi")
    session = manager.create()
    assert session.state is State.FAILED
    assert "no such file: pi" in session.view()["problem"]


def test_an_oversized_line_fails_that_session_only(
    tmp_path: Path,
    clock: MemoryReactorClock,
    spawner: FakeSpawner,
    runtime: FakeRuntime,
    kills: GroupKills,
) -> None:
    manager = build(tmp_path, clock, spawner, runtime, kills, max_line=1000)
    one = manager.create()
    two = manager.create()
    one.begin_turn("hi")
    spawner.processes[0].protocol.outReceived(b'{"type":"message_update","x":"' + b"y" * 5000)
    assert one.state is State.FAILED
    assert one.log.since(0).events[-1].data["code"] == "bad_output"
    assert spawner.processes[0].stdin_closed
    assert two.state is State.IDLE


def test_secrets_never_reach_the_event_log(manager: ChatManager, spawner: FakeSpawner) -> None:
    session = manager.create()
    session.begin_turn("show me")
    spawner.processes[0].reply(f"the key is {SECRET}")
    logged = json.dumps([event.data for event in session.log.since(0).events])
    assert SECRET not in logged
    assert "[redacted]" in logged


def test_a_key_streamed_in_pieces_never_reaches_the_log(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    session = manager.create()
    session.begin_turn("show me")
    child = spawner.processes[0]
    message = {"role": "assistant", "content": []}
    child.say({"type": "agent_start"})
    child.say({"type": "message_start", "message": message})
    pieces = ["the key is ", SECRET[:6], SECRET[6:15], SECRET[15:], " ok", "ay"]
    for piece in pieces:
        child.say(
            {
                "type": "message_update",
                "message": message,
                "assistantMessageEvent": {"type": "text_delta", "contentIndex": 0, "delta": piece},
            }
        )
    final = {**message, "content": [{"type": "text", "text": "".join(pieces)}]}
    child.say({"type": "message_end", "message": final})
    child.say({"type": "agent_end", "messages": [final]})
    events = session.log.since(0).events
    logged = json.dumps([event.data for event in events])
    assert SECRET not in logged
    for size in range(4, len(SECRET)):
        assert SECRET[:size] not in logged
    text = "".join(event.data["text"] for event in events if event.kind == "delta")
    assert text == events[-1].data["text"] == "the key is [redacted] okay"


def test_abort_asks_pi_and_the_turn_ends_with_an_aborted_error(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    session = manager.create()
    session.begin_turn("go")
    session.abort()
    child = spawner.processes[0]
    assert child.commands()[-1]["type"] == "abort"
    child.reply("partial", stop_reason="aborted")
    assert session.log.since(0).events[-1].data["code"] == "aborted"
    assert session.state is State.IDLE


def test_sessions_survive_a_restart_as_stopped_and_keep_counting_event_ids(
    tmp_path: Path,
    clock: MemoryReactorClock,
    spawner: FakeSpawner,
    runtime: FakeRuntime,
    kills: GroupKills,
) -> None:
    manager = build(tmp_path, clock, spawner, runtime, kills)
    session = manager.create("keep me")
    session.begin_turn("remember this")
    last_id = session.log.last_id
    clock.advance(0)  # records are saved once per reactor turn
    # pibridge dies here: nothing is stopped cleanly
    again = build(tmp_path, clock, FakeSpawner(), runtime, kills)
    again.load()
    [restored] = again.sessions.values()
    assert restored.id == session.id
    assert restored.title == "keep me"
    assert restored.state is State.STOPPED
    assert restored.log.last_id == last_id
    history = fired(restored.history())
    assert [m["text"] for m in history[0]] == ["remember this"]
    assert history[0][0]["saved"] is False


def test_stopping_the_service_stops_every_session(
    manager: ChatManager, spawner: FakeSpawner
) -> None:
    manager.startService()
    manager.create()
    manager.create()
    result = fired(manager.stopService())
    assert result == [None]
    assert all(process.stdin_closed for process in spawner.processes)
    assert manager.running_count == 0


@pytest.mark.parametrize("state", list(State))
def test_stop_is_accepted_in_every_state(state: State) -> None:
    after = advance(state, Input.STOP)
    assert (after in RUNNING) == (state in RUNNING)


def test_transitions_outside_the_table_are_refused() -> None:
    with pytest.raises(InvalidTransition):
        advance(State.STOPPED, Input.PROMPT)
    with pytest.raises(InvalidTransition):
        advance(State.STREAMING, Input.SPAWN)


def test_event_log_replays_what_was_missed_and_reports_a_gap() -> None:
    log = EventLog(limit=3)
    for n in range(5):
        log.append("delta", {"text": str(n)})
    replay = log.since(3)
    assert replay.gap is None
    assert [event.id for event in replay.events] == [4, 5]
    replay = log.since(1)
    assert replay.gap is not None and replay.gap.first_available == 3
    assert [event.id for event in replay.events] == [3, 4, 5]
    assert log.since(5).events == ()
