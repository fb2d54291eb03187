"""Building the chat layer from ``twistd pibridge`` options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pibridge.chat.manager import ChatManager, ChatRuntime


def build_chat(config: Mapping[str, Any], reactor: Any, runtime: ChatRuntime) -> ChatManager:
    """The chat session manager (an ``IService``: give it a parent so it loads and stops).

    Reads ``state-dir``, ``max-sessions``, ``idle-timeout`` and ``session-timeout``;
    the workspace, model, secrets and sandbox reach pi through ``runtime``.
    """
    return ChatManager(
        spawner=reactor,
        clock=reactor,
        runtime=runtime,
        state_dir=Path(config["state-dir"]),
        max_sessions=int(config["max-sessions"]),
        idle_timeout=float(config["idle-timeout"]),
        session_timeout=float(config["session-timeout"]),
    )
