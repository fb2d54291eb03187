"""The conversation as clients see it, from pi's messages or its session file.

A running session asks pi (``get_messages``); a stopped one reads pi's JSONL
session file, following the branch that ends at the newest entry, as pi does
when it resumes the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import cattrs

from pibridge.chat.events import message_text, tool_result_summary
from pibridge.chat.framing import JsonRecord, decode_line

converter = cattrs.Converter()


@attrs.frozen
class ToolCall:
    id: str
    name: str
    args: dict[str, Any]


@attrs.frozen
class HistoryMessage:
    role: str
    text: str
    timestamp: int | None = None
    stop_reason: str | None = None
    error: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None
    is_error: bool | None = None
    saved: bool = True


def to_history(messages: Iterable[Any]) -> list[HistoryMessage]:
    """Keep user, assistant and tool-result messages, in order."""
    out = []
    for message in messages:
        if isinstance(message, dict):
            item = _one(message)
            if item is not None:
                out.append(item)
    return out


def _one(message: dict[str, Any]) -> HistoryMessage | None:
    role = message.get("role")
    timestamp = message.get("timestamp")
    stamp = timestamp if isinstance(timestamp, int) else None
    if role == "user":
        return HistoryMessage("user", message_text(message), stamp)
    if role == "assistant":
        calls = tuple(
            ToolCall(
                str(block.get("id", "")),
                str(block.get("name", "")),
                block["arguments"] if isinstance(block.get("arguments"), dict) else {},
            )
            for block in message.get("content") or []
            if isinstance(block, dict) and block.get("type") == "toolCall"
        )
        error = message.get("errorMessage")
        return HistoryMessage(
            "assistant",
            message_text(message),
            stamp,
            stop_reason=str(message.get("stopReason", "")) or None,
            error=error if isinstance(error, str) else None,
            tool_calls=calls,
        )
    if role == "toolResult":
        return HistoryMessage(
            "tool_result",
            tool_result_summary(message),
            stamp,
            tool_name=str(message.get("toolName", "")),
            is_error=bool(message.get("isError", False)),
        )
    return None


def messages_from_session_file(path: Path) -> list[dict[str, Any]]:
    """The messages on the current branch of a pi session file; none if it is missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    entries: dict[str, dict[str, Any]] = {}
    leaf: str | None = None
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        frame = decode_line(line)
        if not isinstance(frame, JsonRecord):
            continue
        entry = frame.value
        entry_id = entry.get("id")
        if entry.get("type") == "session" or not isinstance(entry_id, str):
            continue
        entries[entry_id] = entry
        leaf = entry_id
    branch: list[dict[str, Any]] = []
    seen: set[str] = set()
    while leaf is not None and leaf in entries and leaf not in seen:
        seen.add(leaf)
        entry = entries[leaf]
        branch.append(entry)
        parent = entry.get("parentId")
        leaf = parent if isinstance(parent, str) else None
    branch.reverse()
    return [
        entry["message"]
        for entry in branch
        if entry.get("type") == "message" and isinstance(entry.get("message"), dict)
    ]


def with_unconfirmed(
    history: list[HistoryMessage], unconfirmed: Iterable[str]
) -> list[HistoryMessage]:
    """Add prompts pi has not written yet (it writes a file only after the first reply)."""
    said = {message.text for message in history if message.role == "user"}
    extra = [HistoryMessage("user", text, saved=False) for text in unconfirmed if text not in said]
    return history + extra


def history_json(history: list[HistoryMessage]) -> list[dict[str, Any]]:
    unstructured: list[dict[str, Any]] = converter.unstructure(history)
    return unstructured
