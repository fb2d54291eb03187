"""The real chat stack on loopback: offline model, AgentRuntime, real pi, Klein on a port."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import treq
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.web.server import Site

from pibridge.agent.offline_model import OFFLINE_MODEL_ID, OFFLINE_PROVIDER, OfflineModelService
from pibridge.agent.runtime import AgentRuntime
from pibridge.chat.manager import ChatManager
from pibridge.web.app import HttpApi

ROOT = Path(__file__).resolve().parents[2]
PI = ROOT / "node_modules" / ".bin" / "pi"
FAKE_KEY = "sk-ant-api03-FAKEKEYFORTESTS-0123456789abcdef"
WAIT = 30.0


@attrs.define(eq=False)
class LiveStack:
    """One pibridge chat stack; ``restart`` rebuilds manager and app on the same state dir."""

    reactor: Any
    root: Path
    max_sessions: int = 8
    keepalive: float = 15.0
    model: OfflineModelService = attrs.field(init=False)
    runtime: AgentRuntime = attrs.field(init=False)
    manager: ChatManager = attrs.field(init=False)
    api: HttpApi = attrs.field(init=False)
    port: IListeningPort | None = attrs.field(default=None, init=False)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port.getHost().port}"  # type: ignore[attr-defined]

    def start(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.model = OfflineModelService(self.reactor, self.state_dir)
        self.model.startService()
        self.runtime = AgentRuntime(
            pi_command=[str(PI)],
            workspace=self.workspace,
            state_dir=self.state_dir,
            model=f"{OFFLINE_PROVIDER}/{OFFLINE_MODEL_ID}",
            environ={"PATH": "/usr/local/bin:/usr/bin:/bin", "ANTHROPIC_API_KEY": FAKE_KEY},
            offline_model=self.model,
        )
        self.start_chat()

    def start_chat(self) -> None:
        self.manager = ChatManager(
            spawner=self.reactor,
            clock=self.reactor,
            runtime=self.runtime,
            state_dir=self.state_dir,
            max_sessions=self.max_sessions,
        )
        self.manager.startService()
        self.api = HttpApi(config={}, chat=self.manager, keepalive=self.keepalive)
        self.port = self.reactor.listenTCP(0, Site(self.api.app.resource()), interface="127.0.0.1")

    async def stop_chat(self) -> None:
        await self.manager.stopService()
        if self.port is not None:
            await self.port.stopListening()
            self.port = None

    async def restart(self) -> None:
        await self.stop_chat()
        self.start_chat()

    async def stop(self) -> None:
        await self.stop_chat()
        await self.model.stopService()

    # -- client side ------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        response = await treq.request(method, self.url + path, data=data)
        raw = await treq.content(response)
        return response.code, json.loads(raw)

    async def create(self, title: str | None = None) -> str:
        code, value = await self.call("POST", "/api/sessions/create", {"title": title})
        assert code == 201, value
        session_id: str = value["session"]["id"]
        return session_id

    async def stream(self, session_id: str, message: str) -> SseReader:
        response = await treq.post(
            f"{self.url}/api/sessions/{session_id}/stream",
            data=json.dumps({"message": message}).encode(),
            unbuffered=True,
        )
        assert response.code == 200, await treq.content(response)
        return SseReader.follow(response)

    async def events(self, session_id: str, last_event_id: int | None) -> SseReader:
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        response = await treq.get(
            f"{self.url}/api/sessions/{session_id}/events", headers=headers, unbuffered=True
        )
        assert response.code == 200
        return SseReader.follow(response)


@attrs.define(eq=False)
class SseReader:
    """Parses an SSE response as it arrives; tests wait on conditions over the events."""

    response: Any = None
    raw: bytearray = attrs.Factory(bytearray)
    events: list[dict[str, Any]] = attrs.Factory(list)
    comments: int = 0
    ended: defer.Deferred[None] = attrs.Factory(defer.Deferred)
    _buffer: bytes = b""
    _waiters: list[tuple[Callable[[list[dict[str, Any]]], bool], defer.Deferred[None]]] = (
        attrs.Factory(list)
    )

    @classmethod
    def follow(cls, response: Any) -> SseReader:
        reader = cls(response)
        collecting = treq.collect(response, reader.feed)
        collecting.addBoth(reader._end)
        return reader

    def feed(self, data: bytes) -> None:
        self.raw += data
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                self.comments += 1
                continue
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
            self.events.append(
                {
                    "id": int(fields["id"]),
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
        for condition, waiting in list(self._waiters):
            if condition(self.events):
                self._waiters.remove((condition, waiting))
                waiting.callback(None)

    def _end(self, result: Any) -> None:
        for _, waiting in self._waiters:
            waiting.errback(AssertionError(f"stream ended first; events: {self.kinds}"))
        self._waiters.clear()
        self.ended.callback(None)

    def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = WAIT
    ) -> defer.Deferred[None]:
        from twisted.internet import reactor

        if condition(self.events):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((condition, waiting))
        return waiting.addTimeout(timeout, reactor)  # type: ignore[arg-type]

    async def finish(self, timeout: float = WAIT) -> list[dict[str, Any]]:
        from twisted.internet import reactor

        await self.ended.addTimeout(timeout, reactor)  # type: ignore[arg-type]
        return self.events

    def disconnect(self) -> None:
        self.response.original._transport.stopProducing()

    @property
    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]

    @property
    def text(self) -> str:
        return "".join(e["data"]["text"] for e in self.events if e["event"] == "delta")
