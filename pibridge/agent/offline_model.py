"""A deterministic OpenAI-compatible model endpoint on loopback.

No provider is reachable from the machines pibridge is tested on, and a
fresh install has no key, so pi is pointed at this endpoint instead (a
``models.json`` provider with ``"api": "openai-completions"``).  It speaks
``POST /v1/chat/completions`` with ``stream: true`` (SSE ``data: {chunk}``
lines ending with ``data: [DONE]``) and ``GET /v1/models``, and requires
``Authorization: Bearer <api key>``.

What it answers is decided by directives in the *last user message*; they
combine, and everything else in the message is ignored:

``(no directive)``
    ``Offline model here. You said: <the whole message>``, word by word.
``[bash: CMD]``
    a call to pi's ``bash`` tool with ``{"command": CMD}``.
``[read: PATH]``
    a call to ``read`` with ``{"path": PATH}``.
``[write: PATH <<CONTENT>>]``
    a call to ``write`` with ``{"path": PATH, "content": CONTENT}``.
``[edit: PATH <<OLD>> <<NEW>>]``
    a call to ``edit`` with ``{"path": PATH, "edits": [{"oldText": OLD, "newText": NEW}]}``.
``[tool: NAME {JSON}]``
    a call to any tool ``NAME`` with the JSON object as its arguments
    (for ``ls``, ``grep``, ``find`` or extension tools).
``[parallel]``
    stream all the tool calls in one assistant message (as models do when
    they call tools in parallel) instead of one per request.
``[slow: MS]``
    wait MS milliseconds between chunks (on the reactor's clock).
``[long: N]``
    append N numbered lines (``line 1 of N`` ...) to the text reply, one per chunk.
``[fail: MESSAGE]``
    answer HTTP 500 with ``{"error": {"message": MESSAGE, ...}}``.
``[fail-mid: MESSAGE]``
    start streaming, then send an SSE error object with MESSAGE and end the
    response without ``[DONE]``.

Tool calls are streamed like real providers do: the name and id first, then
the JSON arguments in several pieces.  Tool directives run in order, one per
request: while fewer tool results follow the last user message than there
are tool directives, the next tool call is streamed; once all have results,
the reply quotes them, each as ``Tool NAME returned:\\n<result>`` (at most
``TOOL_RESULT_QUOTE_LIMIT`` characters each), so a test can see what a tool
saw.  The final chunk carries deterministic usage numbers.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from pibridge.secret_files import load_or_create_secret

OFFLINE_PROVIDER = "pibridge-offline"
OFFLINE_MODEL_ID = "offline"
OFFLINE_MODEL_LABEL = "offline model (pibridge, loopback)"
TOOL_RESULT_QUOTE_LIMIT = 4096
API_KEY_FILE_NAME = "offline-model.key"

_log = Logger()


@attrs.frozen
class ToolCallPlan:
    """One tool call the model will make."""

    name: str
    arguments: dict[str, Any]


@attrs.frozen
class Directives:
    """What the last user message asked the offline model to do."""

    tool_calls: tuple[ToolCallPlan, ...] = ()
    slow_ms: int = 0
    long_lines: int = 0
    fail: str | None = None
    fail_mid: str | None = None
    parallel: bool = False


_PARALLEL = re.compile(r"\[parallel\]")
_DIRECTIVE_START = re.compile(r"\[(bash|read|write|edit|tool|slow|long|fail-mid|fail):[ \t]*")
_WRITE_BODY = re.compile(r"(?P<path>[^\]]*?)\s*<<(?P<content>.*?)>>\]", re.DOTALL)
_EDIT_BODY = re.compile(
    r"(?P<path>[^\]]*?)\s*<<(?P<old>.*?)>>\s*<<(?P<new>.*?)>>\]",
    re.DOTALL,
)


def _bracket_body(text: str, start: int) -> tuple[str, int] | None:
    """The text up to the ``]`` that closes a directive, nested brackets allowed."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "[":
            depth += 1
        elif char == "]":
            if depth == 0:
                return text[start:index], index + 1
            depth -= 1
    return None


def parse_directives(text: str) -> Directives:
    """Find the directives in a user message (unknown or malformed ones are plain text)."""
    tool_calls: list[ToolCallPlan] = []
    slow_ms = 0
    long_lines = 0
    fail: str | None = None
    fail_mid: str | None = None
    position = 0
    while (match := _DIRECTIVE_START.search(text, position)) is not None:
        kind = match.group(1)
        body_start = match.end()
        position = body_start
        if kind == "write":
            write = _WRITE_BODY.match(text, body_start)
            if write is None:
                continue
            tool_calls.append(
                ToolCallPlan(
                    "write", {"path": write.group("path"), "content": write.group("content")}
                )
            )
            position = write.end()
            continue
        if kind == "edit":
            edit = _EDIT_BODY.match(text, body_start)
            if edit is None:
                continue
            tool_calls.append(
                ToolCallPlan(
                    "edit",
                    {
                        "path": edit.group("path"),
                        "edits": [{"oldText": edit.group("old"), "newText": edit.group("new")}],
                    },
                )
            )
            position = edit.end()
            continue
        found = _bracket_body(text, body_start)
        if found is None:
            continue
        body, position = found
        if kind == "bash":
            tool_calls.append(ToolCallPlan("bash", {"command": body}))
        elif kind == "read":
            tool_calls.append(ToolCallPlan("read", {"path": body.strip()}))
        elif kind == "tool":
            name, _, raw_arguments = body.strip().partition(" ")
            try:
                arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
            except ValueError:
                continue
            if name and isinstance(arguments, dict):
                tool_calls.append(ToolCallPlan(name, arguments))
        elif kind == "slow":
            slow_ms = _non_negative_int(body, slow_ms)
        elif kind == "long":
            long_lines = _non_negative_int(body, long_lines)
        elif kind == "fail":
            fail = body.strip()
        else:
            fail_mid = body.strip()
    parallel = _PARALLEL.search(text) is not None
    return Directives(tuple(tool_calls), slow_ms, long_lines, fail, fail_mid, parallel)


def _non_negative_int(body: str, default: int) -> int:
    try:
        return max(0, int(body.strip()))
    except ValueError:
        return default


def _message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


@attrs.frozen
class ErrorReply:
    """An immediate HTTP error."""

    status: int
    message: str


@attrs.frozen
class StreamReply:
    """A streamed answer: chunk objects, pacing, and where (if anywhere) it breaks."""

    chunks: tuple[dict[str, Any], ...]
    delay_seconds: float
    fail_mid: str | None = None
    fail_after: int = 0


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


def _pieces(text: str, size: int) -> list[str]:
    return [text[index : index + size] for index in range(0, len(text), size)] or [""]


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-pibridge-offline",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _tool_call_chunks(
    model: str, index: int, number: int, plan: ToolCallPlan
) -> list[dict[str, Any]]:
    """One streamed tool call: id and name first, then the arguments in pieces."""
    opening = {
        "index": index,
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": plan.name, "arguments": ""},
    }
    chunks = [_chunk(model, {"tool_calls": [opening]})]
    chunks.extend(
        _chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        for piece in _pieces(json.dumps(plan.arguments), 16)
    )
    return chunks


def plan_reply(body: dict[str, Any]) -> ErrorReply | StreamReply:
    """Decide the whole answer to one chat completion request (pure)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return ErrorReply(400, "messages must be a list of objects")
    model = str(body.get("model") or OFFLINE_MODEL_ID)
    last_user = max(
        (index for index, message in enumerate(messages) if message.get("role") == "user"),
        default=None,
    )
    user_text = _message_text(messages[last_user]) if last_user is not None else ""
    directives = parse_directives(user_text)
    if directives.fail is not None:
        return ErrorReply(500, directives.fail)
    after_user = messages[last_user + 1 :] if last_user is not None else messages
    tool_results = [message for message in after_user if message.get("role") == "tool"]
    called = [
        call
        for message in after_user
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    names_by_id = {
        str(call.get("id")): str((call.get("function") or {}).get("name", "tool"))
        for call in called
    }
    chunks: list[dict[str, Any]] = [_chunk(model, {"role": "assistant", "content": ""})]
    if len(tool_results) < len(directives.tool_calls):
        first = len(tool_results)
        last = len(directives.tool_calls) if directives.parallel else first + 1
        for index in range(first, last):
            chunks.extend(
                _tool_call_chunks(model, index - first, index + 1, directives.tool_calls[index])
            )
        finish = "tool_calls"
    else:
        if tool_results:
            quoted = []
            for result in tool_results:
                name = names_by_id.get(str(result.get("tool_call_id")), "tool")
                text = _message_text(result)
                if len(text) > TOOL_RESULT_QUOTE_LIMIT:
                    text = text[:TOOL_RESULT_QUOTE_LIMIT] + "\n[truncated]"
                quoted.append(f"Tool {name} returned:\n{text}")
            pieces = _words("\n\n".join(quoted))
        else:
            pieces = _words(f"Offline model here. You said: {user_text}")
        pieces += [
            f"\nline {number} of {directives.long_lines}"
            for number in range(1, directives.long_lines + 1)
        ]
        chunks.extend(_chunk(model, {"content": piece}) for piece in pieces)
        finish = "stop"
    prompt_tokens = len(json.dumps(messages)) // 4
    completion_tokens = len(chunks) - 1
    final = _chunk(model, {}, finish)
    final["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    chunks.append(final)
    return StreamReply(
        chunks=tuple(chunks),
        delay_seconds=directives.slow_ms / 1000.0,
        fail_mid=directives.fail_mid,
        fail_after=max(1, len(chunks) // 2),
    )


def _error_body(message: str, kind: str = "offline_model_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


@attrs.define(eq=False)
class _ChunkStreamer:
    """Writes a planned stream to one request, paced on the clock, stopping if the client goes."""

    request: Request
    clock: IReactorTime
    reply: StreamReply
    _next: int = 0
    _pending: IDelayedCall | None = None
    _gone: bool = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._client_gone)
        self._write_next()

    def _client_gone(self, reason: Failure) -> None:
        self._gone = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _write_next(self) -> None:
        self._pending = None
        if self._gone:
            return
        reply = self.reply
        if reply.fail_mid is not None and self._next >= reply.fail_after:
            self.request.write(b"data: " + _error_body(reply.fail_mid, "server_error") + b"\n\n")
            self.request.finish()
            return
        if self._next >= len(reply.chunks):
            self.request.write(b"data: [DONE]\n\n")
            self.request.finish()
            return
        self.request.write(b"data: " + json.dumps(reply.chunks[self._next]).encode() + b"\n\n")
        self._next += 1
        self._pending = self.clock.callLater(reply.delay_seconds, self._write_next)


@attrs.define(eq=False)
class OfflineModelResource(Resource):
    """The ``/v1`` HTTP surface of the offline model (mount it at the site root)."""

    clock: IReactorTime
    api_key: str
    isLeaf = True

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def _authorised(self, request: Request) -> bool:
        header = request.getHeader(b"authorization") or b""
        expected = b"Bearer " + self.api_key.encode()
        return secrets.compare_digest(header, expected)

    def _json(self, request: Request, status: int, body: bytes) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return body

    def render_GET(self, request: Request) -> bytes:
        if not self._authorised(request):
            return self._json(request, 401, _error_body("invalid api key", "invalid_request_error"))
        if request.path.rstrip(b"/") != b"/v1/models":
            return self._json(request, 404, _error_body("not found", "invalid_request_error"))
        listing = {
            "object": "list",
            "data": [{"id": OFFLINE_MODEL_ID, "object": "model", "owned_by": "pibridge"}],
        }
        return self._json(request, 200, json.dumps(listing).encode())

    def render_POST(self, request: Request) -> bytes | int:
        if not self._authorised(request):
            return self._json(request, 401, _error_body("invalid api key", "invalid_request_error"))
        if request.path.rstrip(b"/") != b"/v1/chat/completions":
            return self._json(request, 404, _error_body("not found", "invalid_request_error"))
        try:
            assert request.content is not None
            body = json.loads(request.content.read())
        except ValueError:
            error = _error_body("body is not JSON", "invalid_request_error")
            return self._json(request, 400, error)
        if not isinstance(body, dict) or body.get("stream") is not True:
            return self._json(
                request, 400, _error_body("only stream: true is served", "invalid_request_error")
            )
        reply = plan_reply(body)
        if isinstance(reply, ErrorReply):
            return self._json(request, reply.status, _error_body(reply.message))
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        _ChunkStreamer(request, self.clock, reply).start()
        return NOT_DONE_YET


def load_or_create_api_key(state_dir: Path) -> str:
    """The offline model's key for this state dir, created once in a 0600 file."""
    key = load_or_create_secret(
        state_dir / API_KEY_FILE_NAME,
        lambda: f"pibridge-offline-{secrets.token_urlsafe(24)}\n".encode(),
        lambda key: bool(key.strip()),
    )
    return key.decode().strip()


@attrs.define(eq=False)
class OfflineModelService(Service):
    """Serves the offline model on ``127.0.0.1`` at an ephemeral port while running.

    ``url`` (``http://127.0.0.1:PORT/v1``) is known once the service has started;
    ``api_key`` as soon as it is built.
    """

    reactor: Any  # IReactorTCP and IReactorTime
    state_dir: Path
    api_key: str = attrs.field(init=False)
    _port: IListeningPort | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.api_key = load_or_create_api_key(self.state_dir)

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the offline model is not listening yet")
        address = self._port.getHost()
        assert isinstance(address, IPv4Address)
        return f"http://127.0.0.1:{address.port}/v1"

    @property
    def listening(self) -> bool:
        return self._port is not None

    def startService(self) -> None:
        resource = OfflineModelResource(self.reactor, self.api_key)
        site = _QuietSite(resource)
        self._port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        _log.info("offline model listening on {url}", url=self.url)
        Service.startService(self)

    def stopService(self) -> Any:
        Service.stopService(self)
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


class _QuietSite(Site):
    """A site that keeps per-request access lines out of the log."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def iter_sse_data(payload: bytes) -> Iterator[str]:
    """The ``data:`` values of an SSE body, in order (for clients and tests)."""
    for line in payload.decode().splitlines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def collect_text(chunks: Sequence[dict[str, Any]]) -> str:
    """The text content a list of chunk objects streams."""
    return "".join(
        str(choice.get("delta", {}).get("content") or "")
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )


__all__: list[str] = [
    "OFFLINE_MODEL_ID",
    "OFFLINE_MODEL_LABEL",
    "OFFLINE_PROVIDER",
    "Directives",
    "OfflineModelResource",
    "OfflineModelService",
    "ToolCallPlan",
    "collect_text",
    "iter_sse_data",
    "load_or_create_api_key",
    "parse_directives",
    "plan_reply",
]
