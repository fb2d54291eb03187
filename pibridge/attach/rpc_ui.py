"""A plain line-based terminal chat over pibridge's HTTP API (``--ui rpc``).

Each line typed is one prompt; the reply is printed as it streams, tool calls
as lines of their own. Ctrl-C aborts a streaming reply (at the prompt it only
reminds how to leave); Ctrl-D exits and leaves the session resumable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

import attrs
import treq
from twisted.internet import defer, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

PROMPT = "> "


class ApiRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.define(eq=False)
class ChatApi:
    """The few calls the terminal client makes; errors become :class:`ApiRefused`."""

    base_url: str
    token: str | None = None
    http: Any = treq

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        response = await self.http.request(method, self.url(path), data=data, headers=self.headers)
        raw = await self.http.content(response)
        return self._decode(response.code, raw)

    @staticmethod
    def _decode(status: int, raw: bytes) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if status >= 400 or not isinstance(value, dict):
            message = f"HTTP {status}"
            if isinstance(value, dict) and isinstance(value.get("error"), dict):
                message = str(value["error"].get("message") or message)
            raise ApiRefused(status, message)
        return value

    async def stream(
        self, session_id: str, message: str, on_event: Callable[[str, Any], None]
    ) -> None:
        response = await self.http.post(
            self.url(f"/api/sessions/{session_id}/stream"),
            data=json.dumps({"message": message}).encode(),
            headers=self.headers,
            unbuffered=True,
        )
        if response.code != 200:
            self._decode(response.code, await self.http.content(response))
        parser = SseParser(on_event)
        await self.http.collect(response, parser.feed)


@attrs.define(eq=False)
class SseParser:
    on_event: Callable[[str, Any], None]
    _buffer: bytes = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            kind, payload = "message", ""
            for line in block.decode("utf-8", "replace").split("\n"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "data":
                    payload += value
            if payload:
                self.on_event(kind, json.loads(payload))


@attrs.define(eq=False)
class RpcChat:
    """The terminal view: feed it lines, Ctrl-C and Ctrl-D; it writes what to show."""

    api: ChatApi
    write: Callable[[str], None]
    session_id: str | None = None
    finished: defer.Deferred[int] = attrs.Factory(defer.Deferred)
    streaming: defer.Deferred[None] | None = None
    _closing: bool = False

    async def start(self) -> None:
        try:
            if self.session_id is None:
                created = await self.api.call("POST", "/api/sessions/create", {})
                session = created["session"]
            else:
                session = (await self.api.call("GET", f"/api/sessions/{self.session_id}"))[
                    "session"
                ]
        except ApiRefused as refused:
            self.write(f"pibridge: {refused.message}\n")
            self.exit(1)
            return
        except Exception as error:  # unreachable server, bad URL: say so and leave
            self.write(f"pibridge: cannot reach {self.api.base_url}: {error}\n")
            self.exit(1)
            return
        self.session_id = session["id"]
        self.write(f"chat session {session['id']} ({session['title']}); Ctrl-D exits\n{PROMPT}")

    def line(self, text: str) -> None:
        if self.session_id is None or self.finished.called:
            return
        if self.streaming is not None:
            self.write("(a reply is still streaming; Ctrl-C aborts it)\n")
            return
        if not text.strip():
            self.write(PROMPT)
            return
        self.streaming = defer.Deferred.fromCoroutine(self._ask(text))

    async def _ask(self, text: str) -> None:
        assert self.session_id is not None
        try:
            await self.api.stream(self.session_id, text, self._event)
        except ApiRefused as refused:
            self.write(f"[refused: {refused.message}]\n")
        except Exception as error:  # the connection broke; say so and carry on
            self.write(f"\n[connection lost: {error}]\n")
        self.streaming = None
        if self._closing:
            self.exit(0)
        elif not self.finished.called:
            self.write(PROMPT)

    def _event(self, kind: str, data: Any) -> None:
        if kind == "delta":
            self.write(str(data.get("text", "")))
        elif kind == "tool_start":
            args = json.dumps(data.get("args", {}), ensure_ascii=False)
            self.write(f"\n[tool {data.get('name')} {args[:200]}]\n")
        elif kind == "tool_end":
            outcome = "failed" if data.get("is_error") else "done"
            first = (str(data.get("summary", "")).strip().splitlines() or [""])[0]
            self.write(f"[tool {data.get('name')} {outcome}] {first[:200]}\n")
        elif kind == "done":
            self.write("\n")
        elif kind == "error":
            self.write(f"\n[{data.get('code')}: {data.get('message')}]\n")
        elif kind == "gap":
            self.write(f"\n[{data.get('message')}]\n")

    def interrupt(self) -> None:
        """Ctrl-C: abort the streaming reply, if any."""
        if self.streaming is None or self.session_id is None:
            self.write(f"\n(Ctrl-D exits)\n{PROMPT}")
            return
        self.write("\n[aborting]\n")
        aborting = defer.Deferred.fromCoroutine(
            self.api.call("POST", f"/api/sessions/{self.session_id}/abort")
        )
        aborting.addErrback(lambda failure: self.write(f"[abort failed: {failure.value}]\n"))

    def end_of_input(self) -> None:
        """Ctrl-D: leave (aborting a reply still streaming); the session stays resumable."""
        if self.streaming is not None:
            self._closing = True
            self.interrupt()
            return
        if self.session_id is not None:
            self.write(f"\nbye; session {self.session_id} can be resumed\n")
        self.exit(0)

    def exit(self, code: int) -> None:
        if not self.finished.called:
            self.finished.callback(code)


@implementer(IHalfCloseableProtocol)
class _Lines(LineReceiver):
    """stdin as lines; end of input (Ctrl-D) leaves stdout open for the goodbye."""

    delimiter = b"\n"

    def __init__(self, chat: RpcChat) -> None:
        self.chat = chat
        self.closed: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.chat.line(line.decode("utf-8", "replace").rstrip("\r"))

    def readConnectionLost(self) -> None:
        self.chat.end_of_input()

    def writeConnectionLost(self) -> None:
        self.chat.exit(0)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.chat.exit(0)
        if not self.closed.called:
            self.closed.callback(None)


def run_rpc_ui(
    reactor: Any,
    base_url: str,
    *,
    stdin: IO[bytes] | IO[str] | int,
    stdout: IO[bytes] | IO[str] | int,
    session_id: str | None = None,
    token: str | None = None,
) -> defer.Deferred[int]:
    """Chat in a plain line-based view until Ctrl-D; fires with the exit status."""
    out_fd = stdout if isinstance(stdout, int) else stdout.fileno()
    in_fd = stdin if isinstance(stdin, int) else stdin.fileno()
    chat = RpcChat(ChatApi(base_url, token), lambda text: None, session_id)
    lines = _Lines(chat)
    # mypy reads the Windows signature of StandardIO; the POSIX one takes the descriptors.
    reader = stdio.StandardIO(lines, stdin=in_fd, stdout=out_fd, reactor=reactor)  # type: ignore[call-arg]
    chat.write = lambda text: reader.write(text.encode("utf-8", "replace"))
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signo, frame: reactor.callFromThread(chat.interrupt))

    def restore(code: int) -> defer.Deferred[int]:
        """Put SIGINT back and wait until what was written has reached stdout."""
        signal.signal(signal.SIGINT, previous)
        reader.loseConnection()
        return lines.closed.addCallback(lambda _: code)

    done: defer.Deferred[int] = chat.finished.addCallback(restore)
    defer.Deferred.fromCoroutine(chat.start())
    return done


def _main(argv: list[str]) -> None:
    """``python -m pibridge.attach.rpc_ui URL [SESSION_ID]``; the token from PIBRIDGE_TOKEN."""
    from twisted.internet import task

    if not argv:
        sys.stderr.write("usage: python -m pibridge.attach.rpc_ui URL [SESSION_ID]\n")
        raise SystemExit(2)
    session = argv[1] if len(argv) > 1 else None
    token = os.environ.get("PIBRIDGE_TOKEN") or None

    def run(reactor: Any) -> defer.Deferred[None]:
        done = run_rpc_ui(reactor, argv[0], stdin=0, stdout=1, session_id=session, token=token)

        def leave(code: int) -> None:
            if code:
                raise SystemExit(code)

        return done.addCallback(leave)

    task.react(run)


if __name__ == "__main__":
    _main(sys.argv[1:])
