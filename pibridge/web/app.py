"""HTTP routes: capabilities, the chat API and its OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.static import File

from pibridge import __version__
from pibridge.chat.manager import ChatManager
from pibridge.metrics import CONTENT_TYPE
from pibridge.web.chat_routes import (
    DEFAULT_MAX_BODY,
    DEFAULT_STREAMS_PER_SESSION,
    ChatRoutes,
    json_response,
)
from pibridge.web.openapi import openapi_document
from pibridge.web.sse import DEFAULT_KEEPALIVE

STATIC_DIR = Path(__file__).resolve().parent / "static"


def page_headers(request: IRequest) -> None:
    """The page runs only its own code and leaks nothing in referrers."""
    request.setHeader(b"content-security-policy", b"default-src 'self'; img-src 'self' data:")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-content-type-options", b"nosniff")


@attrs.define(eq=False)
class HttpApi:
    """The Klein app; chat routes appear when a :class:`ChatManager` is given."""

    config: Mapping[str, Any]
    app: Klein = attrs.field(factory=Klein)
    chat: ChatManager | None = None
    clock: IReactorTime | None = None
    keepalive: float = DEFAULT_KEEPALIVE
    max_body: int = DEFAULT_MAX_BODY
    streams_per_session: int = DEFAULT_STREAMS_PER_SESSION
    #: Public facts about terminal sessions (MoQ address, bot identity key).
    terminal: Mapping[str, Any] | None = None
    #: The model pi answers with, for the page to say so (offline or not).
    model_status: Callable[[], Any] | None = None
    #: Renders /metrics (Prometheus text format) when given.
    metrics: Callable[[], bytes] | None = None
    routes: ChatRoutes | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.app.route("/api/capabilities", methods=["GET"])(self.capabilities)
        self.app.route("/api/openapi.json", methods=["GET"])(self.openapi)
        self.app.route("/", methods=["GET"])(self.page)
        self.app.route("/static/", branch=True, methods=["GET"])(self.static)
        if self.metrics is not None:
            self.app.route("/metrics", methods=["GET"])(self.render_metrics)
        if self.chat is None:
            return
        clock = self.clock if self.clock is not None else self.chat.clock
        routes = ChatRoutes(
            self.chat,
            clock,
            keepalive=self.keepalive,
            max_body=self.max_body,
            streams_per_session=self.streams_per_session,
        )
        self.routes = routes
        route = self.app.route
        route("/api/sessions", methods=["GET"])(routes.listing)
        route("/api/sessions/create", methods=["POST"])(routes.create)
        route("/api/sessions/<session_id>", methods=["GET"])(routes.describe)
        route("/api/sessions/<session_id>/history", methods=["GET"])(routes.history)
        route("/api/sessions/<session_id>/stop", methods=["POST"])(routes.stop)
        route("/api/sessions/<session_id>/abort", methods=["POST"])(routes.abort)
        route("/api/sessions/<session_id>/stream", methods=["POST"])(routes.stream)
        route("/api/sessions/<session_id>/events", methods=["GET"])(routes.events)
        self.app.handle_errors(Exception)(routes.failed)

    def capabilities(self, request: IRequest) -> bytes:
        """What this pibridge offers; public facts only, never a key or token."""
        request.setHeader(b"content-type", b"application/json")
        pi: dict[str, Any] = {"mode": "backend", "url": self.public_url(request)}
        if self.model_status is not None:
            status = self.model_status()
            pi.update(
                {
                    "model": status.model_label,
                    "offline": status.offline,
                    "ready": status.ready,
                    "problem": status.problem,
                }
            )
        services: dict[str, Any] = {"pi": pi}
        if self.terminal is not None:
            services["terminal"] = dict(self.terminal)
        return json.dumps(
            {
                "version": __version__,
                "features": {"pi": True, "terminal": self.terminal is not None},
                "services": services,
            }
        ).encode()

    def page(self, request: IRequest) -> bytes:
        """The chat page; ``?agent_mode=pi`` opens the PI rail (the page reads it)."""
        page_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return (STATIC_DIR / "index.html").read_bytes()

    def static(self, request: IRequest) -> File:
        page_headers(request)
        request.setHeader(b"cache-control", b"no-cache")
        return File(str(STATIC_DIR))

    def render_metrics(self, request: IRequest) -> bytes:
        assert self.metrics is not None
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self.metrics()

    def openapi(self, request: IRequest) -> bytes:
        return json_response(request, openapi_document(self.public_url(request)))

    def public_url(self, request: IRequest) -> str:
        configured = self.config.get("public-url")
        if configured:
            return str(configured)
        host = request.getHeader(b"host") or b"127.0.0.1"
        return f"http://{host.decode('ascii', 'replace')}"
