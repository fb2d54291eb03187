"""In-memory stand-ins for the pi child and the agent runtime (manager unit tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

SECRET = "sk-test-SECRET-0123456789"


@attrs.frozen
class FakeInvocation:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


@attrs.frozen
class FakeStatus:
    ready: bool
    problem: str | None = None
    offline: bool = True
    model_label: str = "fake"


@attrs.define
class FakeRuntime:
    workspace: Path
    ready: bool = True
    problem: str | None = None

    def invocation(self, mode: str, *, session_file: Path) -> FakeInvocation:
        argv = ("pi", "--mode", mode, "--session", str(session_file))
        return FakeInvocation(argv, {"PI_OFFLINE": "1"}, self.workspace)

    def status(self) -> FakeStatus:
        return FakeStatus(self.ready, self.problem)

    def redact(self, text: str) -> str:
        return text.replace(SECRET, "[redacted]")


@attrs.define(eq=False)
class FakeProcess:
    """A spawned child: records what pibridge wrote and which signals it sent."""

    protocol: ProcessProtocol
    args: list[str]
    env: dict[str, str]
    path: str
    pid: int
    written: bytearray = attrs.Factory(bytearray)
    stdin_closed: bool = False
    signals: list[str] = attrs.Factory(list)
    answer_commands: bool = True
    exit_on_stdin_close: bool = True
    ended: bool = False
    answered: int = 0

    # IProcessTransport, as far as pibridge uses it
    def write(self, data: bytes) -> None:
        self.written += data
        if self.answer_commands:
            self.answer_all()

    def closeStdin(self) -> None:
        self.stdin_closed = True
        if self.exit_on_stdin_close:
            self.exit(0)

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def loseConnection(self) -> None:
        self.closeStdin()

    # the pi side
    def commands(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in bytes(self.written).splitlines()]

    def prompts(self) -> list[str]:
        return [command["message"] for command in self.commands() if command["type"] == "prompt"]

    def answer_all(self) -> None:
        pending = self.commands()
        fresh, self.answered = pending[self.answered :], len(pending)
        for command in fresh:
            self.say(
                {
                    "type": "response",
                    "id": command["id"],
                    "command": command["type"],
                    "success": True,
                    "data": {"messages": []},
                }
            )

    def say(self, record: dict[str, Any]) -> None:
        self.protocol.outReceived(json.dumps(record).encode() + b"\n")

    def reply(self, text: str, stop_reason: str = "stop", error: str | None = None) -> None:
        """Stream a whole turn the way pi does."""
        message: dict[str, Any] = {"role": "assistant", "content": [], "stopReason": stop_reason}
        self.say({"type": "agent_start"})
        self.say({"type": "message_start", "message": message})
        for word in text.split(" "):
            self.say(
                {
                    "type": "message_update",
                    "message": message,
                    "assistantMessageEvent": {
                        "type": "text_delta",
                        "contentIndex": 0,
                        "delta": word + " ",
                    },
                }
            )
        final = {**message, "content": [{"type": "text", "text": text}]}
        if error is not None:
            final["errorMessage"] = error
        self.say({"type": "message_end", "message": final})
        self.say({"type": "agent_end", "messages": [final]})

    def exit(self, code: int) -> None:
        if self.ended:
            return
        self.ended = True
        reason = Failure(ProcessDone(0)) if code == 0 else Failure(ProcessTerminated(code))
        self.protocol.processEnded(reason)


@attrs.define(eq=False)
class FakeSpawner:
    """An IReactorProcess that records spawnProcess calls, as twisted.conch's tests do."""

    processes: list[FakeProcess] = attrs.Factory(list)
    fail_with: Exception | None = None
    answer_commands: bool = True
    next_pid: int = 4000

    def spawnProcess(
        self,
        protocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
        **kwargs: Any,
    ) -> FakeProcess:
        if self.fail_with is not None:
            raise self.fail_with
        self.next_pid += 1
        process = FakeProcess(
            protocol,
            list(args),
            dict(env or {}),
            path or "",
            self.next_pid,
            answer_commands=self.answer_commands,
        )
        self.processes.append(process)
        protocol.makeConnection(process)  # type: ignore[arg-type]
        return process


@attrs.define(eq=False)
class GroupKills:
    calls: list[tuple[int, int]] = attrs.Factory(list)

    def __call__(self, pid: int, signo: int) -> None:
        self.calls.append((pid, signo))
