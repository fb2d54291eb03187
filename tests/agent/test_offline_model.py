"""The offline model: directives, the OpenAI streaming wire format, auth, pacing."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from pibridge.agent.offline_model import (
    ErrorReply,
    OfflineModelResource,
    OfflineModelService,
    StreamReply,
    ToolCallPlan,
    collect_text,
    iter_sse_data,
    load_or_create_api_key,
    parse_directives,
    plan_reply,
)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def chunks_of(reply: StreamReply | ErrorReply) -> list[dict[str, Any]]:
    assert isinstance(reply, StreamReply)
    return list(reply.chunks)


def test_plain_message_is_echoed_word_by_word() -> None:
    chunks = chunks_of(plan_reply({"messages": [user("hello there")], "stream": True}))
    assert collect_text(chunks) == "Offline model here. You said: hello there"
    assert sum(1 for chunk in chunks if chunk["choices"][0]["delta"].get("content")) >= 5
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["usage"]["completion_tokens"] > 0
    assert final["usage"]["total_tokens"] == (
        final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"]
    )


def test_the_same_request_gets_the_same_answer() -> None:
    body = {"messages": [user("[long: 3] same")], "stream": True}
    assert plan_reply(body) == plan_reply(body)


def test_directives_are_parsed_and_combine() -> None:
    directives = parse_directives(
        "please [bash: echo [x] && ls] then [read: notes.txt] "
        "[write: out.txt <<line one\nline ] two>>] [edit: a.py <<old>> <<new>>] "
        '[tool: ls {"path": "."}] [slow: 25] [long: 4] [fail-mid: boom]'
    )
    assert directives.tool_calls == (
        ToolCallPlan("bash", {"command": "echo [x] && ls"}),
        ToolCallPlan("read", {"path": "notes.txt"}),
        ToolCallPlan("write", {"path": "out.txt", "content": "line one\nline ] two"}),
        ToolCallPlan("edit", {"path": "a.py", "edits": [{"oldText": "old", "newText": "new"}]}),
        ToolCallPlan("ls", {"path": "."}),
    )
    assert (directives.slow_ms, directives.long_lines) == (25, 4)
    assert directives.fail_mid == "boom"
    assert directives.fail is None


def test_tool_call_streams_in_pieces_then_quotes_the_result() -> None:
    messages = [user("[bash: echo hi]")]
    first = chunks_of(plan_reply({"messages": messages}))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in first
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["function"]["name"] == "bash"
    assert len(calls) >= 3, "arguments should arrive in several pieces"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"command": "echo hi"}
    assert first[-1]["choices"][0]["finish_reason"] == "tool_calls"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "bash", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "hi\n"},
    ]
    second = chunks_of(plan_reply({"messages": messages}))
    assert collect_text(second) == "Tool bash returned:\nhi\n"


def test_long_tool_results_are_truncated_in_the_quote() -> None:
    messages = [
        user("[read: big]"),
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "read"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "x" * 100_000},
    ]
    text = collect_text(chunks_of(plan_reply({"messages": messages})))
    assert text.startswith("Tool read returned:\n")
    assert len(text) < 5000
    assert text.endswith("[truncated]")


def test_long_streams_numbered_lines() -> None:
    text = collect_text(chunks_of(plan_reply({"messages": [user("[long: 3]")]})))
    assert text.endswith("\nline 1 of 3\nline 2 of 3\nline 3 of 3")


def test_fail_is_an_http_error() -> None:
    assert plan_reply({"messages": [user("[fail: nope]")]}) == ErrorReply(500, "nope")


def test_api_key_is_kept_in_a_private_file(tmp_path: Path) -> None:
    key = load_or_create_api_key(tmp_path)
    assert load_or_create_api_key(tmp_path) == key
    mode = stat.S_IMODE((tmp_path / "offline-model.key").stat().st_mode)
    assert mode == 0o600
    assert load_or_create_api_key(tmp_path / "other") != key


def post(resource: OfflineModelResource, body: dict[str, Any], key: str) -> DummyRequest:
    request = DummyRequest([b"v1", b"chat", b"completions"])
    request.method = b"POST"
    request.path = b"/v1/chat/completions"  # type: ignore[attr-defined]
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + key.encode()])
    request.content = io.BytesIO(json.dumps(body).encode())  # type: ignore[attr-defined]
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


def test_slow_paces_chunks_on_the_clock() -> None:
    clock = MemoryReactorClock()
    resource = OfflineModelResource(clock, "k")
    request = post(resource, {"messages": [user("[slow: 200] hi")], "stream": True}, "k")
    assert len(request.written) == 1
    clock.advance(0.199)
    assert len(request.written) == 1
    clock.advance(0.001)
    assert len(request.written) == 2
    for _ in range(50):
        clock.advance(0.2)
    assert request.finished
    assert request.written[-1] == b"data: [DONE]\n\n"


def test_fail_mid_starts_streaming_then_ends_with_an_error() -> None:
    clock = MemoryReactorClock()
    resource = OfflineModelResource(clock, "k")
    request = post(resource, {"messages": [user("[fail-mid: broke]")], "stream": True}, "k")
    clock.pump([0] * 50)
    data = list(iter_sse_data(b"".join(request.written)))
    assert request.finished
    assert "[DONE]" not in data
    last = json.loads(data[-1])
    assert last["error"]["message"] == "broke"
    assert collect_text([json.loads(item) for item in data[:-1]]).startswith("Offline")


def test_client_going_away_stops_the_stream() -> None:
    clock = MemoryReactorClock()
    resource = OfflineModelResource(clock, "k")
    request = post(resource, {"messages": [user("[slow: 100] [long: 50]")], "stream": True}, "k")
    clock.advance(0.1)
    request.processingFailed(Failure(ConnectionError("gone")))
    written = len(request.written)
    clock.advance(10)
    assert len(request.written) == written
    assert not clock.getDelayedCalls()


@pytest_twisted.inlineCallbacks
def test_served_over_loopback_with_auth(offline_model: OfflineModelService) -> Any:
    url = offline_model.url
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    headers: dict[bytes | str, bytes | str] = {"Authorization": f"Bearer {offline_model.api_key}"}
    response = yield treq.post(
        url + "/chat/completions",
        json={"model": "offline", "stream": True, "messages": [user("hi [long: 2]")]},
        headers=headers,
    )
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream"]
    data = list(iter_sse_data((yield response.content())))
    assert data[-1] == "[DONE]"
    text = collect_text([json.loads(item) for item in data[:-1]])
    assert text == "Offline model here. You said: hi [long: 2]\nline 1 of 2\nline 2 of 2"

    models = yield treq.get(url + "/models", headers=headers)
    assert (yield models.json())["data"][0]["id"] == "offline"

    no_auth: dict[bytes | str, bytes | str] = {}
    wrong_auth: dict[bytes | str, bytes | str] = {"Authorization": "Bearer wrong"}
    for bad in (no_auth, wrong_auth):
        refused = yield treq.post(
            url + "/chat/completions",
            json={"stream": True, "messages": [user("hi")]},
            headers=bad,
        )
        assert refused.code == 401
        yield refused.content()

    failed = yield treq.post(
        url + "/chat/completions",
        json={"stream": True, "messages": [user("[fail: out of cheese]")]},
        headers=headers,
    )
    assert failed.code == 500
    assert (yield failed.json())["error"]["message"] == "out of cheese"


def test_parallel_streams_every_tool_call_in_one_message() -> None:
    chunks = chunks_of(plan_reply({"messages": [user("[parallel] [read: a] [read: b]")]}))
    openings = [
        call
        for chunk in chunks
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
        if "id" in call
    ]
    assert [(call["index"], call["id"]) for call in openings] == [(0, "call_1"), (1, "call_2")]
