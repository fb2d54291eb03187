"""A real ``twistd pibridge`` driven from the reactor: MoQ clients, chat over HTTP, processes.

The server runs as its own process (`tests.e2e.bot.running_bot`); the test's
clients run in this process on the global reactor, as pytest-twisted runs it.
While a test waits on the reactor the server's log is drained on a timer, so a
chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import psutil  # type: ignore[import-untyped]
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.internet.interfaces import IReactorThreads

from pibridge.terminal.auth import TokenAuthority, load_or_create_key
from tests.bot.loopback import Client, attach
from tests.e2e.bot import Bot

AsyncTest = TypeVar("AsyncTest", bound=Callable[..., Any])


def reactor_test(test: AsyncTest) -> AsyncTest:
    """An ``async def`` test run on the reactor (pytest-twisted), keeping its type."""
    return cast(AsyncTest, pytest_twisted.ensureDeferred(test))


@attrs.define(eq=False)
class RemoteBot:
    """The real server's MoQ face, shaped like the in-process bot `attach` expects."""

    bot: Bot

    @property
    def address(self) -> tuple[str, int]:
        return self.bot.host, self.bot.port

    def token(self, user: str = "alice", group: str = "team") -> str:
        return TokenAuthority(load_or_create_key(self.bot.state)).mint(user, group)


def attach_client(bot: Bot, tmp: Path, **options: Any) -> defer.Deferred[Client]:
    """A pibridge/1 client over real QUIC to the server, pinned like a user's."""
    attached: defer.Deferred[Client] = attach(cast(Any, RemoteBot(bot)), tmp, **options)
    return attached


@contextmanager
def drained(bot: Bot, interval: float = 0.05) -> Iterator[None]:
    """Read the server's log on the reactor while the block runs."""

    def drain() -> None:
        while bot.server._read():
            pass

    loop = task.LoopingCall(drain)
    loop.start(interval)
    try:
        yield
    finally:
        loop.stop()
        drain()


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid`` (zombies not yet reaped included)."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def live(process: psutil.Process) -> bool:
    """Still there (same pid, same start time) and not a zombie."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def kill_leftovers(processes: list[psutil.Process]) -> list[str]:
    """SIGKILL whichever of ``processes`` still live (a failed test leaks nothing); say which."""
    left = []
    for process in processes:
        if live(process):
            with suppress(psutil.NoSuchProcess):
                left.append(" ".join(process.cmdline()))
                process.kill()
    return left


def process_groups(processes: list[psutil.Process]) -> set[int]:
    groups = set()
    for process in processes:
        with suppress(ProcessLookupError):
            groups.add(os.getpgid(process.pid))
    return groups


def members_of_groups(groups: set[int]) -> list[psutil.Process]:
    """Every live process in any of ``groups``: what a killpg would still reach."""
    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in groups and live(process):
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def wait_exit(bot: Bot, timeout: float = 30.0) -> defer.Deferred[int]:
    """The server's exit status, waited for off the reactor thread."""
    waiting: defer.Deferred[int] = threads.deferToThread(bot.server.process.wait, timeout)
    return waiting


def sigterm(bot: Bot) -> None:
    bot.server.process.send_signal(signal.SIGTERM)


def after(seconds: float) -> defer.Deferred[None]:
    """A pause on the reactor for the rare case with no event to wait on (pacing a flood)."""
    return task.deferLater(reactor, seconds, lambda: None)


# -- chat over HTTP ---------------------------------------------------------------------


def first_event(kind: str) -> tuple[defer.Deferred[None], Any]:
    """A Deferred fired (on the reactor) when the SSE reader thread first sees ``kind``."""
    seen: defer.Deferred[None] = defer.Deferred()

    def fire() -> None:
        if not seen.called:
            seen.callback(None)

    def on_event(event_kind: str) -> None:
        if event_kind == kind:
            cast(IReactorThreads, reactor).callFromThread(fire)

    return seen, on_event


@attrs.define(eq=False)
class Chat:
    """The chat API of the running server, called with its bearer token."""

    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
        """``(status, json)`` for one request; HTTP errors are answers too."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=data,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def create(self) -> dict[str, Any]:
        status, body = self.call("POST", "/api/sessions/create", {})
        assert status == 201, (status, body)
        session: dict[str, Any] = body["session"]
        return session

    def sessions(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/api/sessions")
        assert status == 200, body
        listed: list[dict[str, Any]] = body["sessions"]
        return listed

    def stop(self, session_id: str) -> dict[str, Any]:
        status, body = self.call("POST", f"/api/sessions/{session_id}/stop")
        assert status == 200, body
        stopped: dict[str, Any] = body["session"]
        return stopped

    def history(self, session_id: str) -> list[dict[str, Any]]:
        status, body = self.call("GET", f"/api/sessions/{session_id}/history")
        assert status == 200, body
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    def stream(
        self, session_id: str, message: str, timeout: float = 90, on_event: Any = None
    ) -> SseResult:
        """Send a prompt and read its SSE reply to the end, however it ends."""
        request = urllib.request.Request(
            self.url.rstrip("/") + f"/api/sessions/{session_id}/stream",
            data=json.dumps({"message": message}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        result = SseResult()
        with urllib.request.urlopen(request, timeout=timeout) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            kind, data = "message", ""
            try:
                for raw in response:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event: "):
                        kind = line[len("event: ") :]
                    elif line.startswith("data: "):
                        data += line[len("data: ") :]
                    elif line == "" and data:
                        result.events.append((kind, json.loads(data)))
                        if on_event is not None:
                            on_event(kind)
                        kind, data = "message", ""
            except (ConnectionError, OSError) as error:
                result.broken = repr(error)
        return result


@attrs.define
class SseResult:
    """What an SSE client saw: the events, and whether the stream broke rather than ended."""

    events: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    broken: str | None = None

    @property
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    @property
    def text(self) -> str:
        return "".join(str(data.get("text", "")) for kind, data in self.events if kind == "delta")


def chat_of(bot: Bot) -> Chat:
    bot.server.started()
    return Chat(bot.server.url, bot.server.token)
