"""The chat HTTP API in memory: status codes, JSON errors, SSE framing, keep-alives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from pibridge.chat.manager import ChatManager
from pibridge.chat.process import Terminator
from pibridge.web.app import HttpApi
from pibridge.web.sse import LogFollower, format_event
from tests.chat.chat_fakes import SECRET, FakeRuntime, FakeSpawner, GroupKills


class Harness:
    def __init__(self, tmp_path: Path, **api_options: Any) -> None:
        self.clock = MemoryReactorClock()
        self.spawner = FakeSpawner()
        workspace = tmp_path / "workspace"
        workspace.mkdir(exist_ok=True)
        self.runtime = FakeRuntime(workspace)
        self.manager = ChatManager(
            self.spawner,
            self.clock,
            self.runtime,
            tmp_path / "state",
            max_sessions=2,
            terminator=Terminator(self.clock, kill_group=GroupKills()),
        )
        self.api = HttpApi(config={}, chat=self.manager, keepalive=10.0, **api_options)
        self.http = StubTreq(self.api.app.resource())

    def result(self, deferred: Deferred[Any]) -> Any:
        self.http.flush()
        results: list[Any] = []
        deferred.addBoth(results.append)
        self.http.flush()
        assert results, "the request did not complete"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        response = self.result(
            self.http.request(
                method, f"http://example.test{path}", data=body, headers=headers or {}
            )
        )
        raw = self.result(response.content())
        content_type = response.headers.getRawHeaders("content-type", [""])[0]
        value = json.loads(raw) if "json" in content_type else raw
        return response.code, value, response

    def create(self, **body: Any) -> dict[str, Any]:
        code, value, _ = self.request("POST", "/api/sessions/create", json.dumps(body).encode())
        assert code == 201, value
        session: dict[str, Any] = value["session"]
        return session


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def assert_error(code: int, value: Any, status: int, error_code: str | None = None) -> None:
    assert code == status, value
    assert set(value) == {"error"}
    assert isinstance(value["error"]["message"], str) and value["error"]["message"]
    assert "Traceback" not in value["error"]["message"]
    if error_code is not None:
        assert value["error"]["code"] == error_code


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append(
            {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
        )
    return events


def test_create_list_describe_and_stop(harness: Harness) -> None:
    session = harness.create(title="plans")
    assert session["title"] == "plans" and session["state"] == "idle"
    code, value, _ = harness.request("GET", "/api/sessions")
    assert code == 200 and [s["id"] for s in value["sessions"]] == [session["id"]]
    code, value, _ = harness.request("GET", f"/api/sessions/{session['id']}")
    assert code == 200 and value["session"]["id"] == session["id"]
    first = harness.request("POST", f"/api/sessions/{session['id']}/stop")
    second = harness.request("POST", f"/api/sessions/{session['id']}/stop")
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert first[1]["session"]["state"] == "stopped"


def test_create_with_no_body_is_fine(harness: Harness) -> None:
    code, value, _ = harness.request("POST", "/api/sessions/create")
    assert code == 201 and value["session"]["state"] == "idle"


def test_limit_reached_is_429(harness: Harness) -> None:
    harness.create()
    harness.create()
    code, value, _ = harness.request("POST", "/api/sessions/create", b"{}")
    assert_error(code, value, 429, "too_many_sessions")


def test_missing_key_is_503_with_a_clear_message_and_no_secret(harness: Harness) -> None:
    harness.runtime.ready = False
    harness.runtime.problem = f"set ANTHROPIC_API_KEY in the environment (old: {SECRET})"
    code, value, _ = harness.request("POST", "/api/sessions/create", b"{}")
    assert_error(code, value, 503, "no_provider_credential")
    assert "ANTHROPIC_API_KEY" in value["error"]["message"]
    assert SECRET not in json.dumps(value)


@pytest.mark.parametrize(
    "path",
    [
        ("GET", "/api/sessions/nope"),
        ("GET", "/api/sessions/nope/history"),
        ("POST", "/api/sessions/nope/stop"),
        ("POST", "/api/sessions/nope/abort"),
        ("POST", "/api/sessions/nope/stream"),
        ("GET", "/api/sessions/nope/events"),
    ],
)
def test_unknown_ids_are_404_with_a_json_body(harness: Harness, path: tuple[str, str]) -> None:
    code, value, _ = harness.request(path[0], path[1], b'{"message": "hi"}')
    assert_error(code, value, 404, "unknown_session")


def test_unknown_routes_and_methods_answer_json(harness: Harness) -> None:
    code, value, _ = harness.request("GET", "/api/nothing-here")
    assert_error(code, value, 404)
    code, value, _ = harness.request("DELETE", "/api/sessions")
    assert_error(code, value, 405)


@pytest.mark.parametrize(
    ("body", "error_code"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_body"),
        (b"{}", "bad_body"),
        (b'{"message": 5}', "bad_body"),
        (b'{"message": null}', "bad_body"),
        (b'{"message": "   "}', "bad_body"),
        (b'{"message": "hi", "extra": true}', "bad_body"),
        (b"", "bad_body"),
    ],
)
def test_malformed_stream_bodies_are_400(harness: Harness, body: bytes, error_code: str) -> None:
    session = harness.create()
    code, value, _ = harness.request("POST", f"/api/sessions/{session['id']}/stream", body)
    assert_error(code, value, 400, error_code)
    assert harness.spawner.processes[0].prompts() == []


def test_malformed_create_bodies_are_400(harness: Harness) -> None:
    for body in (b'{"title": 7}', b"nope", b'{"other": 1}'):
        code, value, _ = harness.request("POST", "/api/sessions/create", body)
        assert_error(code, value, 400)
    assert harness.spawner.processes == []


def test_a_body_over_the_limit_is_413(tmp_path: Path) -> None:
    harness = Harness(tmp_path, max_body=1000)
    session = harness.create()
    body = json.dumps({"message": "x" * 2000}).encode()
    code, value, _ = harness.request("POST", f"/api/sessions/{session['id']}/stream", body)
    assert_error(code, value, 413, "body_too_large")


def test_stream_answers_sse_with_ids_and_ends_after_done(harness: Harness) -> None:
    session = harness.create()
    pending = harness.http.post(
        f"http://example.test/api/sessions/{session['id']}/stream", data=b'{"message": "hi"}'
    )
    harness.http.flush()
    harness.spawner.processes[0].reply("hello to you")
    response = harness.result(pending)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    events = parse_sse(harness.result(response.content()))
    assert [e["event"] for e in events] == ["session", "delta", "delta", "delta", "done"]
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"]["session_id"] == session["id"]
    assert "".join(e["data"]["text"] for e in events[1:-1]) == "hello to you "


def test_a_second_prompt_while_streaming_is_409(harness: Harness) -> None:
    session = harness.create()
    harness.http.post(
        f"http://example.test/api/sessions/{session['id']}/stream", data=b'{"message": "one"}'
    )
    harness.http.flush()
    code, value, _ = harness.request(
        "POST", f"/api/sessions/{session['id']}/stream", b'{"message": "two"}'
    )
    assert_error(code, value, 409, "busy")


def test_idle_streams_get_keep_alive_comments(harness: Harness) -> None:
    session = harness.create()
    pending = harness.http.post(
        f"http://example.test/api/sessions/{session['id']}/stream", data=b'{"message": "hi"}'
    )
    harness.http.flush()
    response = harness.result(pending)
    chunks: list[bytes] = []
    from treq import collect

    done = collect(response, chunks.append)
    harness.clock.advance(10)
    harness.http.flush()
    harness.clock.advance(10)
    harness.http.flush()
    assert b"".join(chunks).count(b": keep-alive\n\n") == 2
    harness.spawner.processes[0].reply("ok")
    harness.result(done)
    harness.clock.advance(10)
    harness.http.flush()
    assert b"".join(chunks).count(b": keep-alive\n\n") == 2


def test_reconnect_replays_from_last_event_id_and_reports_gaps(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.manager.log_events = 4
    session = harness.create()
    sid = session["id"]
    pending = harness.http.post(
        f"http://example.test/api/sessions/{sid}/stream", data=b'{"message": "hi"}'
    )
    harness.http.flush()
    harness.spawner.processes[0].reply("a b c d e f")
    harness.result(pending)
    # events 1..8: session, 6 deltas, done; only the newest 4 are kept
    code, raw, _ = harness.request(
        "GET", f"/api/sessions/{sid}/events", headers={"Last-Event-ID": "6"}
    )
    events = parse_sse(raw)
    assert [e["event"] for e in events] == ["session", "delta", "done"]
    assert [e["id"] for e in events] == [6, 7, 8]
    code, raw, _ = harness.request(
        "GET", f"/api/sessions/{sid}/events", headers={"Last-Event-ID": "1"}
    )
    events = parse_sse(raw)
    assert events[1]["event"] == "gap"
    assert events[1]["data"]["first_available"] == 5
    assert [e["id"] for e in events[2:]] == [5, 6, 7, 8]
    code, value, _ = harness.request(
        "GET", f"/api/sessions/{sid}/events", headers={"Last-Event-ID": "soon"}
    )
    assert_error(code, value, 400, "bad_last_event_id")


def test_a_cancelled_stream_stops_listening_and_its_timer(harness: Harness) -> None:
    """Klein cancels the route's Deferred when the client goes away."""
    session = harness.create()
    chat = harness.manager.get(session["id"])
    first = chat.begin_turn("hi")
    request, transport = sse_request()
    follower = LogFollower(request, chat.log, harness.clock, keepalive=5.0)
    finished = follower.start(after=first - 1)
    assert chat.log.listener_count == 1
    finished.addErrback(lambda failure: None)
    finished.cancel()
    assert chat.log.listener_count == 0
    assert request.producer is None
    written = len(transport.written.getvalue())
    harness.clock.advance(30)
    harness.spawner.processes[0].reply("carry on")
    assert len(transport.written.getvalue()) == written
    assert chat.log.since(0).events[-1].kind == "done"


def sse_request() -> tuple[Request, Any]:
    channel = DummyChannel()
    request = Request(channel, False)
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.setResponseCode(200)
    return request, channel.transport


def test_a_slow_client_pauses_the_stream_and_catches_up_from_the_log(harness: Harness) -> None:
    session = harness.create()
    chat = harness.manager.get(session["id"])
    first = chat.begin_turn("hi")
    request, transport = sse_request()
    follower = LogFollower(request, chat.log, harness.clock, keepalive=5.0)
    finished = follower.start(after=first - 1)
    assert request.producer is follower
    follower.pauseProducing()
    before = transport.written.getvalue()
    harness.spawner.processes[0].reply("one two three")
    harness.clock.advance(20)
    assert transport.written.getvalue() == before
    follower.resumeProducing()
    raw = transport.written.getvalue()
    ids = [int(line.split(b": ")[1]) for line in raw.split(b"\n") if line.startswith(b"id: ")]
    assert ids == sorted(set(ids)) == list(range(first, chat.log.last_id + 1))
    assert finished.called


def test_openapi_document_is_served(harness: Harness) -> None:
    code, value, _ = harness.request("GET", "/api/openapi.json")
    assert code == 200
    assert value["openapi"].startswith("3.")
    assert "/api/sessions/{session_id}/stream" in value["paths"]


def test_capabilities_keep_their_shape(harness: Harness) -> None:
    code, value, _ = harness.request("GET", "/api/capabilities")
    assert code == 200
    assert value["features"]["pi"] is True
    assert value["services"]["pi"]["mode"] == "backend"


def test_sse_data_is_one_line_even_with_newlines_and_separators() -> None:
    raw = format_event(3, "delta", {"text": "a\nb\u2028c\r\n"})
    assert raw.count(b"\n") == 4
    assert raw.startswith(b"id: 3\nevent: delta\ndata: ")


def test_streams_per_session_are_bounded(tmp_path: Path) -> None:
    harness = Harness(tmp_path, streams_per_session=1)
    session = harness.create()
    url = f"http://example.test/api/sessions/{session['id']}"
    harness.http.post(f"{url}/stream", data=b'{"message": "hi"}')
    harness.http.flush()
    code, value, _ = harness.request("GET", f"/api/sessions/{session['id']}/events?follow=1")
    assert_error(code, value, 429, "too_many_streams")
    harness.spawner.processes[0].reply("done now")
    harness.http.flush()
    assert harness.manager.get(session["id"]).log.listener_count == 0
