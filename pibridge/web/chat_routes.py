"""The chat API under ``/api/sessions``: create, list, history, stop, abort, stream.

All answers are JSON except the two event streams (``text/event-stream``).
A prompt sent while a reply streams answers 409 (it is not queued); see
:mod:`pibridge.chat.manager`.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException

from pibridge.chat.events import SessionStarted, event_data
from pibridge.chat.manager import ChatManager, ChatProblem, ChatSession
from pibridge.web.errors import ApiError, write_error
from pibridge.web.sse import DEFAULT_KEEPALIVE, LogFollower, parse_last_event_id, start_event_stream

log = Logger()

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_STREAMS_PER_SESSION = 8


@attrs.frozen
class CreateBody:
    title: str | None = None


@attrs.frozen
class StreamBody:
    message: str


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _optional_str(value: Any, _: Any) -> str | None:
    return None if value is None else _strict_str(value, None)


bodies = cattrs.Converter(forbid_extra_keys=True)
bodies.register_structure_hook(str, _strict_str)
bodies.register_structure_hook(str | None, _optional_str)  # type: ignore[arg-type]
for _body in (CreateBody, StreamBody):
    bodies.register_structure_hook(
        _body, make_dict_structure_fn(_body, bodies, _cattrs_forbid_extra_keys=True)
    )


def json_response(request: IRequest, value: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value).encode()


@attrs.define(eq=False)
class ChatRoutes:
    chat: ChatManager
    clock: IReactorTime
    keepalive: float = DEFAULT_KEEPALIVE
    max_body: int = DEFAULT_MAX_BODY
    streams_per_session: int = DEFAULT_STREAMS_PER_SESSION

    # -- request helpers --------------------------------------------------------

    def read_body(self, request: IRequest, shape: type[Any], *, empty_ok: bool) -> Any:
        declared = request.getHeader(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_body:
            raise ApiError(413, "body_too_large", f"the body is over {self.max_body} bytes")
        raw = request.content.read(self.max_body + 1) if request.content is not None else b""
        if len(raw) > self.max_body:
            raise ApiError(413, "body_too_large", f"the body is over {self.max_body} bytes")
        if not raw.strip():
            if empty_ok:
                return shape()
            raise ApiError(400, "bad_body", "the body must be a JSON object")
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise ApiError(400, "bad_body", "the body must be a JSON object")
        try:
            return bodies.structure(value, shape)
        except (cattrs.BaseValidationError, TypeError, KeyError, ValueError) as error:
            raise ApiError(400, "bad_body", body_problem(error, shape)) from None

    def session(self, session_id: str) -> ChatSession:
        return self.chat.get(session_id)

    def check_stream_slots(self, session: ChatSession) -> None:
        if session.log.listener_count >= self.streams_per_session:
            raise ApiError(
                429,
                "too_many_streams",
                f"at most {self.streams_per_session} streams may follow one session",
            )

    # -- routes -----------------------------------------------------------------

    def create(self, request: IRequest) -> bytes:
        body: CreateBody = self.read_body(request, CreateBody, empty_ok=True)
        session = self.chat.create(body.title)
        return json_response(request, {"session": session.view()}, 201)

    def listing(self, request: IRequest) -> bytes:
        return json_response(request, {"sessions": self.chat.listing()})

    def describe(self, request: IRequest, session_id: str) -> bytes:
        return json_response(request, {"session": self.session(session_id).view()})

    async def history(self, request: IRequest, session_id: str) -> bytes:
        session = self.session(session_id)
        messages = await session.history()
        return json_response(request, {"session": session.view(), "messages": messages})

    async def stop(self, request: IRequest, session_id: str) -> bytes:
        session = self.session(session_id)
        await session.stop()
        return json_response(request, {"session": session.view()})

    async def abort(self, request: IRequest, session_id: str) -> bytes:
        session = self.session(session_id)
        await session.abort()
        return json_response(request, {"session": session.view()})

    def stream(self, request: IRequest, session_id: str) -> defer.Deferred[None]:
        session = self.session(session_id)
        body: StreamBody = self.read_body(request, StreamBody, empty_ok=False)
        if not body.message.strip():
            raise ApiError(400, "bad_body", "message must not be empty")
        self.check_stream_slots(session)
        first = session.begin_turn(body.message)
        start_event_stream(request)
        follower = LogFollower(request, session.log, self.clock, self.keepalive)
        return follower.start(after=first - 1)

    def events(self, request: IRequest, session_id: str) -> defer.Deferred[None]:
        session = self.session(session_id)
        args = request.args or {}
        header = request.getHeader(b"last-event-id")
        query = (args.get(b"last_event_id") or [None])[0]
        if header is not None and parse_last_event_id(header) is None:
            raise ApiError(400, "bad_last_event_id", "Last-Event-ID must be a whole number")
        last = parse_last_event_id(header)
        if last is None:
            last = parse_last_event_id(query)
        if last is None:
            last = session.log.last_id
        follow = (args.get(b"follow") or [b""])[0] in (b"1", b"true", b"yes")
        self.check_stream_slots(session)
        start_event_stream(request)
        follower = LogFollower(
            request, session.log, self.clock, self.keepalive, until_terminal=not follow
        )
        header_event = SessionStarted(session.id, session.title, session.state.value, session.turn)
        follower.write_first(
            min(last, session.log.last_id),
            header_event.kind,
            event_data(header_event, self.chat.runtime.redact),
        )
        finished = follower.start(after=last)
        if not follow and not session.turn_open:
            follower.close()
        return finished

    def failed(self, request: IRequest, failure: Failure) -> bytes:
        """Every error becomes a JSON body; unexpected ones are logged, not shown."""
        error = failure.value
        if isinstance(error, ApiError):
            return write_error(request, error.status, error.code, error.message)
        if isinstance(error, ChatProblem):
            return write_error(request, error.status, error.code, error.message)
        if isinstance(error, HTTPException):
            code = error.code or 500
            name = (error.name or "error").lower().replace(" ", "_")
            return write_error(request, code, name, error.description or name)
        log.failure("chat API request failed", failure)
        return write_error(request, 500, "internal_error", "the server could not handle this")


def body_problem(error: Exception, shape: type[Any]) -> str:
    fields = ", ".join(field.name for field in attrs.fields(shape))
    if isinstance(error, cattrs.BaseValidationError):
        detail = "; ".join(cattrs.transform_error(error, path="body"))
    else:
        detail = str(error)
    return f"the body should be {{{fields}}}: {detail}"
