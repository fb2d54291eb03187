"""The lifecycle of a chat session as a transition table.

A session with no pi child is ``stopped`` (resumable) or ``failed`` (its child
died or misbehaved; also resumable). The next prompt spawns pi again with the
session's file, so ``stopped`` and ``failed`` both lead back to ``starting``.
``stop`` is accepted in every state, which is what makes stopping idempotent.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    STREAMING = "streaming"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Input(enum.Enum):
    SPAWN = "spawn"
    READY = "ready"
    PROMPT = "prompt"
    TURN_ENDED = "turn_ended"
    STOP = "stop"
    EXITED = "exited"
    CRASHED = "crashed"


class InvalidTransition(Exception):
    def __init__(self, state: State, event: Input) -> None:
        super().__init__(f"{event.value} is not possible while {state.value}")
        self.state = state
        self.event = event


S, In = State, Input

TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.STOPPED, In.SPAWN): S.STARTING,
    (S.FAILED, In.SPAWN): S.STARTING,
    (S.STARTING, In.READY): S.IDLE,
    (S.IDLE, In.PROMPT): S.STREAMING,
    (S.STREAMING, In.TURN_ENDED): S.IDLE,
    (S.STARTING, In.STOP): S.STOPPING,
    (S.IDLE, In.STOP): S.STOPPING,
    (S.STREAMING, In.STOP): S.STOPPING,
    (S.STOPPING, In.STOP): S.STOPPING,
    (S.STOPPED, In.STOP): S.STOPPED,
    (S.FAILED, In.STOP): S.FAILED,
    (S.STOPPING, In.EXITED): S.STOPPED,
    (S.STOPPING, In.CRASHED): S.STOPPED,
    (S.STARTING, In.CRASHED): S.FAILED,
    (S.IDLE, In.CRASHED): S.FAILED,
    (S.STREAMING, In.CRASHED): S.FAILED,
}

RUNNING = frozenset({S.STARTING, S.IDLE, S.STREAMING, S.STOPPING})


def advance(state: State, event: Input) -> State:
    """The state after ``event``; anything not in the table is refused."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
