"""The chat stream's events and their translation from pi's RPC output.

pi repeats the whole partial message in every ``message_update``; only the new
text is forwarded, as ``delta``. A turn (one prompt) ends with exactly one
terminal event: ``done`` when the last assistant message stopped normally,
``error`` when it stopped with ``error`` or ``aborted``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import cattrs

TOOL_SUMMARY_LIMIT = 2000

converter = cattrs.Converter()


@attrs.frozen
class SessionStarted:
    kind: ClassVar[str] = "session"
    session_id: str
    title: str
    state: str
    turn: int


@attrs.frozen
class Delta:
    kind: ClassVar[str] = "delta"
    text: str


@attrs.frozen
class ToolStart:
    kind: ClassVar[str] = "tool_start"
    tool_call_id: str
    name: str
    args: dict[str, Any]


@attrs.frozen
class ToolEnd:
    kind: ClassVar[str] = "tool_end"
    tool_call_id: str
    name: str
    is_error: bool
    summary: str


@attrs.frozen
class Done:
    kind: ClassVar[str] = "done"
    text: str
    stop_reason: str
    usage: dict[str, Any]


@attrs.frozen
class ChatError:
    kind: ClassVar[str] = "error"
    code: str
    message: str


@attrs.frozen
class Gap:
    """Sent on reconnect when events the client missed are no longer kept."""

    kind: ClassVar[str] = "gap"
    first_available: int
    last_seen: int
    message: str


ChatEvent = SessionStarted | Delta | ToolStart | ToolEnd | Done | ChatError | Gap

TERMINAL_KINDS = frozenset({Done.kind, ChatError.kind})


def event_data(event: ChatEvent, redact: Callable[[str], str] = str) -> dict[str, Any]:
    """The JSON body of an event, every string passed through ``redact``."""
    data: dict[str, Any] = converter.unstructure(event)
    redacted: dict[str, Any] = redact_strings(data, redact)
    return redacted


def redact_strings(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_strings(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_strings(item, redact) for item in value]
    return value


def message_text(message: dict[str, Any]) -> str:
    """The visible text of a pi message (text blocks only; thinking and tool calls skipped)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def text_blocks(message: dict[str, Any]) -> dict[int, str]:
    content = message.get("content")
    if not isinstance(content, list):
        return {}
    return {
        index: block["text"]
        for index, block in enumerate(content)
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    }


def tool_result_summary(result: Any, limit: int = TOOL_SUMMARY_LIMIT) -> str:
    text = message_text(result) if isinstance(result, dict) else ""
    if len(text) > limit:
        return text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


_USAGE_FIELDS = ("input", "output", "cacheRead", "cacheWrite", "totalTokens")


@attrs.define(eq=False)
class PiEventTranslator:
    """Turns pi's RPC events into chat events; pure, one instance per pi child."""

    _sent: dict[int, int] = attrs.field(factory=dict, init=False)
    _last_assistant: dict[str, Any] | None = attrs.field(default=None, init=False)
    _usage: dict[str, float] = attrs.field(factory=dict, init=False)

    def translate(self, record: dict[str, Any]) -> list[ChatEvent]:
        kind = record.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return []
        return handler(self, record)

    def _agent_start(self, record: dict[str, Any]) -> list[ChatEvent]:
        self._last_assistant = None
        self._usage = {}
        return []

    def _message_start(self, record: dict[str, Any]) -> list[ChatEvent]:
        if _role(record) == "assistant":
            self._sent = {}
        return []

    def _message_update(self, record: dict[str, Any]) -> list[ChatEvent]:
        if _role(record) != "assistant":
            return []
        update = record.get("assistantMessageEvent")
        if isinstance(update, dict):
            if update.get("type") != "text_delta":
                return []
            delta = update.get("delta")
            index = update.get("contentIndex", 0)
            if isinstance(delta, str) and isinstance(index, int):
                self._sent[index] = self._sent.get(index, 0) + len(delta)
                return [Delta(delta)] if delta else []
            return []
        return self._catch_up(record.get("message"))

    def _catch_up(self, message: Any) -> list[ChatEvent]:
        """Without a delta event, send the text beyond what was already sent."""
        if not isinstance(message, dict):
            return []
        events: list[ChatEvent] = []
        for index, text in sorted(text_blocks(message).items()):
            sent = self._sent.get(index, 0)
            if len(text) > sent:
                events.append(Delta(text[sent:]))
                self._sent[index] = len(text)
        return events

    def _message_end(self, record: dict[str, Any]) -> list[ChatEvent]:
        message = record.get("message")
        if _role(record) != "assistant" or not isinstance(message, dict):
            return []
        events = self._catch_up(message)
        self._last_assistant = message
        usage = message.get("usage")
        if isinstance(usage, dict):
            for name in _USAGE_FIELDS:
                amount = usage.get(name)
                if isinstance(amount, int | float):
                    self._usage[name] = self._usage.get(name, 0) + amount
            cost = usage.get("cost")
            if isinstance(cost, dict) and isinstance(cost.get("total"), int | float):
                self._usage["cost"] = self._usage.get("cost", 0) + cost["total"]
        return events

    def _tool_start(self, record: dict[str, Any]) -> list[ChatEvent]:
        args = record.get("args")
        return [
            ToolStart(
                tool_call_id=str(record.get("toolCallId", "")),
                name=str(record.get("toolName", "")),
                args=args if isinstance(args, dict) else {},
            )
        ]

    def _tool_end(self, record: dict[str, Any]) -> list[ChatEvent]:
        return [
            ToolEnd(
                tool_call_id=str(record.get("toolCallId", "")),
                name=str(record.get("toolName", "")),
                is_error=bool(record.get("isError", False)),
                summary=tool_result_summary(record.get("result")),
            )
        ]

    def _agent_end(self, record: dict[str, Any]) -> list[ChatEvent]:
        last = self._last_assistant or {}
        self._last_assistant = None
        stop_reason = str(last.get("stopReason", "stop"))
        if stop_reason == "aborted":
            return [ChatError("aborted", "the reply was stopped before it finished")]
        if stop_reason == "error":
            detail = last.get("errorMessage") or "the model failed without a message"
            return [ChatError("model_error", f"the model failed: {detail}")]
        return [Done(text=message_text(last), stop_reason=stop_reason, usage=dict(self._usage))]

    _handlers: ClassVar[
        dict[str, Callable[[PiEventTranslator, dict[str, Any]], list[ChatEvent]]]
    ] = {
        "agent_start": _agent_start,
        "message_start": _message_start,
        "message_update": _message_update,
        "message_end": _message_end,
        "tool_execution_start": _tool_start,
        "tool_execution_end": _tool_end,
        "agent_end": _agent_end,
    }


def _role(record: dict[str, Any]) -> str | None:
    message = record.get("message")
    if isinstance(message, dict):
        role = message.get("role")
        return role if isinstance(role, str) else None
    return None
