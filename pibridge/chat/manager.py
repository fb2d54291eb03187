"""Chat sessions: one ``pi --mode rpc`` child each, with limits and timeouts.

A prompt sent while a reply is streaming is refused (:class:`Busy`, HTTP 409)
rather than queued: a client sees at once that its message was not taken and
can abort the reply or wait for ``done``. Stopping is idempotent and keeps the
session resumable: the next prompt spawns pi again on the same session file.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pibridge.chat.eventlog import DEFAULT_LOG_EVENTS, EventLog
from pibridge.chat.events import (
    TERMINAL_KINDS,
    ChatError,
    ChatEvent,
    Delta,
    PiEventTranslator,
    SessionStarted,
    event_data,
    redact_strings,
)
from pibridge.chat.framing import DEFAULT_MAX_LINE, FramingError
from pibridge.chat.history import (
    HistoryMessage,
    history_json,
    messages_from_session_file,
    to_history,
    with_unconfirmed,
)
from pibridge.chat.lifecycle import RUNNING, Input, State, advance
from pibridge.chat.process import PiRpcProtocol, Terminator, kill_process_group
from pibridge.chat.store import SessionRecord, SessionStore

log = Logger()

SETSID = "/usr/bin/setsid"
MAX_TITLE = 200


class Invocation(Protocol):
    @property
    def argv(self) -> Sequence[str]: ...
    @property
    def env(self) -> Mapping[str, str]: ...
    @property
    def cwd(self) -> str | Path: ...


class RuntimeStatus(Protocol):
    @property
    def ready(self) -> bool: ...
    @property
    def problem(self) -> str | None: ...


class ChatRuntime(Protocol):
    """What the chat layer needs from the agent runtime."""

    def invocation(self, mode: Literal["rpc"], *, session_file: Path) -> Invocation: ...
    def status(self) -> RuntimeStatus: ...
    def redact(self, text: str) -> str: ...


class ChatProblem(Exception):
    """A request the manager refuses; ``code`` and ``status`` go to the client."""

    code = "chat_error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownSession(ChatProblem):
    code = "unknown_session"
    status = 404


class TooManySessions(ChatProblem):
    code = "too_many_sessions"
    status = 429


class NotReady(ChatProblem):
    code = "no_provider_credential"
    status = 503


class Busy(ChatProblem):
    code = "busy"
    status = 409


HELD_TEXT_LIMIT = 1024


def _last_word_break(text: str) -> int:
    """The index just past the last whitespace character (0 when there is none)."""
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index + 1
    return 0


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


@attrs.define(eq=False)
class ChatSession:
    """One chat session and, while it runs, its pi child."""

    manager: ChatManager
    id: str
    title: str
    created: str
    session_file: Path
    log: EventLog
    state: State = State.STOPPED
    unconfirmed: list[str] = attrs.Factory(list)
    turn: int = 0
    turn_open: bool = False
    child: PiRpcProtocol | None = None
    _translator: PiEventTranslator = attrs.Factory(PiEventTranslator)
    _pending_prompt: str | None = None
    _idle_call: IDelayedCall | None = None
    _lifetime_call: IDelayedCall | None = None
    _start_call: IDelayedCall | None = None
    _stop_waiters: list[defer.Deferred[None]] | None = None
    _stop_reason: ChatError | None = None
    _problem: str | None = None
    _held_text: str = ""

    # -- views -------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "state": self.state.value,
            "last_event_id": self.log.last_id,
            "resumable": self.state in (State.STOPPED, State.FAILED),
        }
        if self._problem is not None:
            view["problem"] = self._problem
        redacted: dict[str, Any] = redact_strings(view, self.manager.runtime.redact)
        return redacted

    def record(self) -> SessionRecord:
        return SessionRecord(
            id=self.id,
            title=self.title,
            created=self.created,
            session_file=str(self.session_file),
            state=self.state.value,
            last_event_id=self.log.last_id,
            unconfirmed_prompts=tuple(self.unconfirmed),
        )

    # -- lifecycle ---------------------------------------------------------

    def _enter(self, event: Input) -> None:
        before = self.state
        self.state = advance(self.state, event)
        if before is not self.state:
            self._cancel_idle()
            if self.state is State.IDLE:
                self._arm_idle()
            self.manager.persist(self)

    def emit(self, event: ChatEvent) -> None:
        if isinstance(event, Delta):
            self._emit_text(event.text)
            return
        if self._held_text:
            self._emit_text("", flush=True)
        data = event_data(event, self.manager.runtime.redact)
        self.log.append(event.kind, data)
        if event.kind in TERMINAL_KINDS and self.turn_open:
            self.turn_open = False
            self.unconfirmed.clear()
            if self.state is State.STREAMING:
                self._enter(Input.TURN_ENDED)
            else:
                self.manager.persist(self)

    def _emit_text(self, text: str, *, flush: bool = False) -> None:
        """Send text up to its last whitespace; hold the unfinished word back.

        A key is one run of non-space characters, and a provider may stream it
        in pieces; redacting whole words only means no piece of one slips out.
        """
        pending = self._held_text + text
        cut = len(pending) if flush else _last_word_break(pending)
        if not flush and len(pending) - cut > HELD_TEXT_LIMIT:
            cut = len(pending)
        ready, self._held_text = pending[:cut], pending[cut:]
        if ready:
            self.log.append(Delta.kind, event_data(Delta(ready), self.manager.runtime.redact))

    def spawn(self) -> None:
        """Start pi on this session's file (new or resumed)."""
        self._enter(Input.SPAWN)
        self._problem = None
        self._stop_reason = None
        self._translator = PiEventTranslator()
        self._held_text = ""
        manager = self.manager
        child = PiRpcProtocol(
            on_record=self._on_record,
            on_framing_error=self._on_framing_error,
            on_exit=self._on_exit,
            max_line=manager.max_line,
        )
        self.child = child
        try:
            invocation = manager.runtime.invocation("rpc", session_file=self.session_file)
            argv = list(invocation.argv)
            if manager.own_process_group:
                argv = [SETSID, *argv]
            manager.spawner.spawnProcess(
                child, argv[0], argv, env=dict(invocation.env), path=str(invocation.cwd)
            )
        except Exception as error:  # any launch failure fails this session only
            self.child = None
            self._fail("spawn_failed", f"pi could not be started: {error}")
            return
        self._lifetime_call = manager.clock.callLater(
            manager.session_timeout,
            self._timed_out,
            "session_timeout",
            "the session reached its time limit and was stopped",
        )
        self._start_call = manager.clock.callLater(manager.start_timeout, self._start_timed_out)
        # pi would retry some model errors on its own after reporting the turn as ended;
        # a chat client gets the error at once instead and may send the prompt again.
        child.send({"type": "set_auto_retry", "enabled": False}).addErrback(lambda _: None)
        child.send({"type": "get_state"}).addCallbacks(self._ready, self._not_ready)

    def _ready(self, response: dict[str, Any]) -> None:
        self._cancel_start()
        if self.state is not State.STARTING:
            return
        self._enter(Input.READY)
        prompt, self._pending_prompt = self._pending_prompt, None
        if prompt is not None:
            self._send_prompt(prompt)

    def _not_ready(self, failure: Failure) -> None:
        if self.state is State.STARTING and self.child is not None and not self.child.exited:
            self._fail("pi_not_ready", f"pi did not start: {failure.getErrorMessage()}")

    def begin_turn(self, message: str) -> int:
        """Accept a prompt and return the id of its ``session`` event; the reply follows it."""
        if self.turn_open or self.state in (State.STREAMING, State.STOPPING):
            raise Busy("a reply is still streaming; wait for it to finish or abort it")
        if self.state in (State.STOPPED, State.FAILED):
            self.manager.check_can_run()
        self.turn += 1
        self.turn_open = True
        self.unconfirmed.append(message)
        started = self.log.append(
            SessionStarted.kind,
            event_data(
                SessionStarted(self.id, self.title, self.state.value, self.turn),
                self.manager.runtime.redact,
            ),
        )
        if self.state in (State.STOPPED, State.FAILED):
            self._pending_prompt = message
            self.spawn()
        elif self.state is State.STARTING:
            self._pending_prompt = message
        else:
            self._send_prompt(message)
        self.manager.persist(self)
        return started.id

    def _send_prompt(self, message: str) -> None:
        assert self.child is not None
        self._enter(Input.PROMPT)
        self._cancel_idle()

        def refused(failure: Failure) -> None:
            if self.turn_open and self.state is State.STREAMING:
                self.emit(
                    ChatError(
                        "prompt_refused", f"pi refused the prompt: {failure.getErrorMessage()}"
                    )
                )

        self.child.send({"type": "prompt", "message": message}).addErrback(refused)

    def abort(self) -> defer.Deferred[None]:
        """Ask pi to stop the current reply; the turn ends with an ``aborted`` error."""
        if self.state is State.STARTING and self.turn_open:
            self._pending_prompt = None
            self.emit(ChatError("aborted", "the reply was stopped before it started"))
            return defer.succeed(None)
        if self.state is not State.STREAMING or self.child is None:
            return defer.succeed(None)
        result = self.child.send({"type": "abort"})
        result.addErrback(lambda failure: None)
        return result.addCallback(lambda response: None)

    def stop(self, reason: ChatError | None = None) -> defer.Deferred[None]:
        """End the pi child; every call fires when the session is no longer running."""
        waiting: defer.Deferred[None] = defer.Deferred()
        if self._stop_waiters is not None:
            self._stop_waiters.append(waiting)
            return waiting
        if self.state not in RUNNING or self.child is None:
            return defer.succeed(None)
        self._stop_waiters = [waiting]
        self._stop_reason = reason or ChatError("stopped", "the session was stopped")
        self._enter(Input.STOP)
        self._cancel_start()
        self._cancel_lifetime()
        if self.turn_open:
            self._pending_prompt = None
            self.emit(self._stop_reason)
        ended = self.manager.ending.end(self.child, group=self.manager.own_process_group)
        ended.addCallback(self._stopped)
        return waiting

    def _stopped(self, result: None) -> None:
        waiters, self._stop_waiters = self._stop_waiters or [], None
        for waiter in waiters:
            waiter.callback(None)

    def _timed_out(self, code: str, message: str) -> None:
        self._lifetime_call = None if code == "session_timeout" else self._lifetime_call
        self._idle_call = None if code == "idle_timeout" else self._idle_call
        log.info("chat session {id} stopped: {why}", id=self.id, why=code)
        self.stop(ChatError(code, message))

    def _start_timed_out(self) -> None:
        self._start_call = None
        if self.state is not State.STARTING or self.child is None:
            return
        child = self.child
        self._fail(
            "pi_not_ready",
            f"pi did not answer within {self.manager.start_timeout:g} seconds of starting",
        )
        self.manager.ending.end(child, group=self.manager.own_process_group)

    def _cancel_start(self) -> None:
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None

    def _arm_idle(self) -> None:
        self._idle_call = self.manager.clock.callLater(
            self.manager.idle_timeout,
            self._timed_out,
            "idle_timeout",
            "the session was idle too long and was stopped; the next prompt resumes it",
        )

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _cancel_lifetime(self) -> None:
        if self._lifetime_call is not None and self._lifetime_call.active():
            self._lifetime_call.cancel()
        self._lifetime_call = None

    # -- what the child says -----------------------------------------------

    def _on_record(self, record: dict[str, Any]) -> None:
        for event in self._translator.translate(record):
            self.emit(event)

    def _on_framing_error(self, error: FramingError) -> None:
        if self.state in (State.STOPPING, State.STOPPED, State.FAILED):
            return
        self._fail("bad_output", f"pi wrote something unusable ({error.reason}): {error.detail}")
        if self.child is not None:
            self.manager.ending.end(self.child, group=self.manager.own_process_group)

    def _on_exit(self, reason: Failure) -> None:
        self._cancel_start()
        self._cancel_lifetime()
        self._cancel_idle()
        child, self.child = self.child, None
        if self.state is State.STOPPING:
            self._enter(Input.EXITED)
            return
        if self.state in (State.STOPPED, State.FAILED):
            return
        how = "exited"
        if reason.check(ProcessDone) is None:
            how = f"ended ({reason.getErrorMessage()})"
        said = child.stderr_tail.strip().splitlines()[-1:] if child is not None else []
        hint = f": {said[0][:500]}" if said else ""
        self._fail("pi_exited", f"pi {how} unexpectedly{hint}")

    def _fail(self, code: str, message: str) -> None:
        if self.state in RUNNING and self.state is not State.STOPPING:
            self._enter(Input.CRASHED)
        self._cancel_start()
        self._cancel_lifetime()
        self._pending_prompt = None
        self._problem = self.manager.runtime.redact(message)
        log.warn("chat session {id} failed: {message}", id=self.id, message=self._problem)
        error = ChatError(code, message)
        if self.turn_open:
            self.emit(error)
        else:
            self.log.append(error.kind, event_data(error, self.manager.runtime.redact))
        self.manager.persist(self)

    # -- history -----------------------------------------------------------

    def history(self) -> defer.Deferred[list[dict[str, Any]]]:
        """The conversation: from pi while it runs, from its session file otherwise."""
        return defer.Deferred.fromCoroutine(self._history())

    async def _history(self) -> list[dict[str, Any]]:
        messages: list[HistoryMessage] | None = None
        if self.child is not None and self.state in (State.IDLE, State.STREAMING):
            try:
                response = await self.child.send({"type": "get_messages"})
            except Exception:
                log.warn("get_messages failed for {id}; reading the session file", id=self.id)
            else:
                data = response.get("data")
                raw = data.get("messages") if isinstance(data, dict) else None
                messages = to_history(raw if isinstance(raw, list) else [])
        if messages is None:
            messages = to_history(messages_from_session_file(self.session_file))
        full = with_unconfirmed(messages, self.unconfirmed)
        shaped: list[dict[str, Any]] = redact_strings(
            history_json(full), self.manager.runtime.redact
        )
        return shaped


@attrs.define(eq=False)
class ChatManager(Service):
    """Owns every chat session: limits, persistence, startup and shutdown."""

    spawner: IReactorProcess
    clock: IReactorTime
    runtime: ChatRuntime
    state_dir: Path
    max_sessions: int = 8
    idle_timeout: float = 1800.0
    session_timeout: float = 14400.0
    start_timeout: float = 60.0
    log_events: int = DEFAULT_LOG_EVENTS
    max_line: int = DEFAULT_MAX_LINE
    own_process_group: bool = True
    terminator: Terminator | None = None
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex
    sessions: dict[str, ChatSession] = attrs.Factory(dict)
    store: SessionStore = attrs.field(init=False)
    _dirty: set[str] = attrs.field(factory=set, init=False)
    _save_call: IDelayedCall | None = attrs.field(default=None, init=False)
    ending: Terminator = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.store = SessionStore(self.state_dir / "chat")
        if self.terminator is None:
            self.terminator = Terminator(self.clock, kill_group=kill_process_group)
        self.ending = self.terminator
        self.own_process_group = self.own_process_group and Path(SETSID).exists()

    def load(self) -> None:
        """List sessions saved by an earlier run; they come back stopped and resumable."""
        for record in self.store.load_all():
            if record.id in self.sessions:
                continue
            session = ChatSession(
                manager=self,
                id=record.id,
                title=record.title,
                created=record.created,
                session_file=Path(record.session_file),
                log=EventLog(self.log_events, first_id=record.last_event_id + 1),
                unconfirmed=list(record.unconfirmed_prompts),
            )
            self.sessions[record.id] = session
            self.persist(session)

    def startService(self) -> None:
        self.load()
        Service.startService(self)

    def stopService(self) -> defer.Deferred[object]:
        Service.stopService(self)
        stops = [
            session.stop(ChatError("shutdown", "pibridge is shutting down"))
            for session in self.sessions.values()
        ]

        def saved(_: object) -> None:
            self.save_now()

        return defer.gatherResults(stops).addCallback(saved)

    def persist(self, session: ChatSession) -> None:
        """Save the session's record soon: once per reactor turn, off the prompt's path."""
        self._dirty.add(session.id)
        if self._save_call is None:
            self._save_call = self.clock.callLater(0, self.save_now)

    def save_now(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        dirty, self._dirty = self._dirty, set()
        for session_id in sorted(dirty):
            session = self.sessions.get(session_id)
            if session is None:
                continue
            try:
                self.store.save(session.record())
            except OSError as error:
                log.warn(
                    "could not save chat session {id}: {error}", id=session_id, error=str(error)
                )

    @property
    def running_count(self) -> int:
        return sum(1 for session in self.sessions.values() if session.state in RUNNING)

    def check_can_run(self) -> None:
        status = self.runtime.status()
        if not status.ready:
            raise NotReady(
                self.runtime.redact(
                    status.problem or "no provider credential is configured on the server"
                )
            )
        if self.running_count >= self.max_sessions:
            raise TooManySessions(
                f"at most {self.max_sessions} chat sessions can run at once; stop one first"
            )

    def create(self, title: str | None = None) -> ChatSession:
        self.check_can_run()
        session_id = self.new_id()
        self.store.prepare()
        created = utc_now()
        session = ChatSession(
            manager=self,
            id=session_id,
            title=(title or f"Chat {created[:16].replace('T', ' ')}")[:MAX_TITLE],
            created=created,
            session_file=self.store.session_file_for(session_id),
            log=EventLog(self.log_events),
        )
        self.sessions[session_id] = session
        session.spawn()
        return session

    def get(self, session_id: str) -> ChatSession:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(f"no chat session {session_id!r}") from None

    def listing(self) -> list[dict[str, Any]]:
        return [session.view() for session in self.sessions.values()]
