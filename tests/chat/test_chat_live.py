"""The whole chat path with the real pi and the offline model over a real port."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tests.chat.live import FAKE_KEY, LiveStack

pytestmark = pytest.mark.slow


@pytest_twisted.async_yield_fixture
async def stack(tmp_path: Path) -> AsyncIterator[LiveStack]:
    from twisted.internet import reactor

    live = LiveStack(reactor, tmp_path)
    live.start()
    try:
        yield live
    finally:
        await live.stop()


def assert_clean_ids(events: list[dict[str, Any]]) -> None:
    ids = [event["id"] for event in events]
    assert ids == sorted(set(ids)), ids


@pytest_twisted.ensureDeferred
async def test_create_prompt_tool_call_done_history_stop(stack: LiveStack) -> None:
    sid = await stack.create("tools")
    reader = await stack.stream(sid, "[bash: echo made-by-pi > made.txt && cat made.txt]")
    events = await reader.finish()
    assert reader.kinds[0] == "session"
    assert reader.kinds[-1] == "done", events[-1]
    assert_clean_ids(events)
    [start] = [e["data"] for e in events if e["event"] == "tool_start"]
    [end] = [e["data"] for e in events if e["event"] == "tool_end"]
    assert start["name"] == "bash" and "made.txt" in start["args"]["command"]
    assert end["is_error"] is False and "made-by-pi" in end["summary"]
    assert (stack.workspace / "made.txt").read_text() == "made-by-pi\n"
    assert reader.text == events[-1]["data"]["text"]
    assert "made-by-pi" in reader.text
    assert events[-1]["data"]["usage"]["output"] > 0

    code, history = await stack.call("GET", f"/api/sessions/{sid}/history")
    assert code == 200
    roles = [message["role"] for message in history["messages"]]
    assert roles == ["user", "assistant", "tool_result", "assistant"]
    assert history["messages"][1]["tool_calls"][0]["name"] == "bash"

    first = await stack.call("POST", f"/api/sessions/{sid}/stop")
    second = await stack.call("POST", f"/api/sessions/{sid}/stop")
    assert first == second
    assert first[0] == 200 and first[1]["session"]["state"] == "stopped"
    code, history_after = await stack.call("GET", f"/api/sessions/{sid}/history")
    assert [m["text"] for m in history_after["messages"]] == [
        m["text"] for m in history["messages"]
    ]


@pytest_twisted.ensureDeferred
async def test_abort_mid_stream_ends_with_an_aborted_error(stack: LiveStack) -> None:
    sid = await stack.create()
    reader = await stack.stream(sid, "[slow: 30] [long: 400]")
    await reader.wait_for(lambda events: sum(e["event"] == "delta" for e in events) >= 3)
    code, value = await stack.call("POST", f"/api/sessions/{sid}/abort")
    assert code == 200 and value["session"]["id"] == sid
    events = await reader.finish()
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["code"] == "aborted"
    assert "line 400 of 400" not in reader.text
    # the session stays usable
    again = await stack.stream(sid, "still there?")
    assert (await again.finish())[-1]["event"] == "done"


@pytest_twisted.ensureDeferred
async def test_reconnect_with_last_event_id_loses_and_repeats_nothing(stack: LiveStack) -> None:
    sid = await stack.create()
    first = await stack.stream(sid, "[slow: 20] [long: 60]")
    await first.wait_for(lambda events: sum(e["event"] == "delta" for e in events) >= 5)
    first.disconnect()
    await first.finish()
    seen = list(first.events)
    second = await stack.events(sid, seen[-1]["id"])
    rest = await second.finish()
    assert rest[0]["event"] == "session"
    replayed = rest[1:]
    assert replayed[0]["id"] == seen[-1]["id"] + 1
    combined = seen + replayed
    assert_clean_ids(combined)
    text = "".join(e["data"]["text"] for e in combined if e["event"] == "delta")
    assert combined[-1]["event"] == "done"
    assert text == combined[-1]["data"]["text"]
    assert "line 60 of 60" in text
    # neither the dropped stream nor the finished one still listens
    assert stack.manager.get(sid).log.listener_count == 0


@pytest_twisted.ensureDeferred
async def test_eight_sessions_stream_at_once_without_loss(stack: LiveStack) -> None:
    ids = await defer.gatherResults(
        [defer.Deferred.fromCoroutine(stack.create(f"s{n}")) for n in range(8)]
    )
    readers = await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(stack.stream(sid, f"[long: 40] session {n}"))
            for n, sid in enumerate(ids)
        ]
    )
    await defer.gatherResults([reader.ended for reader in readers])
    for n, reader in enumerate(readers):
        assert reader.kinds[-1] == "done", reader.events[-1]
        assert_clean_ids(reader.events)
        assert reader.text == reader.events[-1]["data"]["text"]
        assert f"session {n}" in reader.text
        assert "line 40 of 40" in reader.text
    code, value = await stack.call("POST", "/api/sessions/create", {})
    assert code == 429 and value["error"]["code"] == "too_many_sessions"


@pytest_twisted.ensureDeferred
async def test_sessions_resume_with_their_history_after_a_restart(stack: LiveStack) -> None:
    sid = await stack.create("long-lived")
    done = await (await stack.stream(sid, "remember apples")).finish()
    assert done[-1]["event"] == "done"
    last_id = done[-1]["id"]
    await stack.restart()
    code, listing = await stack.call("GET", "/api/sessions")
    [session] = listing["sessions"]
    assert session["id"] == sid and session["state"] == "stopped" and session["resumable"]
    assert session["last_event_id"] == last_id
    code, history = await stack.call("GET", f"/api/sessions/{sid}/history")
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert history["messages"][0]["text"] == "remember apples"
    reader = await stack.stream(sid, "and pears")
    events = await reader.finish()
    assert events[0]["id"] == last_id + 1
    assert events[-1]["event"] == "done"
    code, history = await stack.call("GET", f"/api/sessions/{sid}/history")
    assert code == 200
    texts = [m["text"] for m in history["messages"] if m["role"] == "user"]
    assert texts == ["remember apples", "and pears"]


@pytest_twisted.ensureDeferred
async def test_a_crashed_pi_fails_its_session_only(stack: LiveStack) -> None:
    one = await stack.create()
    two = await stack.create()
    reader = await stack.stream(one, "[slow: 50] [long: 200]")
    await reader.wait_for(lambda events: any(e["event"] == "delta" for e in events))
    child = stack.manager.get(one).child
    assert child is not None and child.process is not None and child.process.pid
    os.killpg(child.process.pid, signal.SIGKILL)
    events = await reader.finish()
    assert events[-1]["event"] == "error" and events[-1]["data"]["code"] == "pi_exited"
    code, value = await stack.call("GET", f"/api/sessions/{one}")
    assert code == 200 and value["session"]["state"] == "failed"
    other = await (await stack.stream(two, "fine?")).finish()
    assert other[-1]["event"] == "done"


@pytest_twisted.ensureDeferred
async def test_no_secret_in_events_history_or_errors(stack: LiveStack) -> None:
    secrets = [FAKE_KEY, stack.model.api_key]
    sid = await stack.create()
    said = await stack.stream(sid, f"my key is {FAKE_KEY} and {stack.model.api_key}")
    await said.finish()
    tool = await stack.stream(
        sid, "[bash: env; cat ~/.pi/agent/auth.json; echo $ANTHROPIC_API_KEY]"
    )
    await tool.finish()
    failed = await stack.stream(sid, f"[fail: upstream says {FAKE_KEY}]")
    await failed.finish()
    assert failed.kinds[-1] == "error"
    code, history = await stack.call("GET", f"/api/sessions/{sid}/history")
    await stack.call("POST", f"/api/sessions/{sid}/stop")
    code, stopped_history = await stack.call("GET", f"/api/sessions/{sid}/history")
    assert code == 200 and stopped_history["messages"]
    response = await treq.get(
        f"{stack.url}/api/sessions/{sid}/events", headers={"Last-Event-ID": "0"}
    )
    replay = await treq.content(response)
    everything = b"".join(
        [
            said.raw,
            tool.raw,
            failed.raw,
            replay,
            json.dumps(history).encode(),
            json.dumps(stopped_history).encode(),
        ]
    )
    for secret in secrets:
        assert secret.encode() not in everything
    assert b"[redacted]" in everything
