"""Session metadata on disk, so chat sessions outlive a restart of pibridge.

One JSON file per session under ``<state_dir>/chat/``; pi's own session files
(the conversation) sit beside them in ``<state_dir>/chat/pi-sessions/``.
Writes go to a temporary file first and are renamed into place, so a crash
never leaves half a record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import cattrs
from twisted.logger import Logger

log = Logger()
converter = cattrs.Converter()


@attrs.frozen
class SessionRecord:
    id: str
    title: str
    created: str
    session_file: str
    state: str
    last_event_id: int = 0
    unconfirmed_prompts: tuple[str, ...] = ()


@attrs.define(eq=False)
class SessionStore:
    root: Path

    @property
    def pi_sessions(self) -> Path:
        return self.root / "pi-sessions"

    def prepare(self) -> None:
        self.pi_sessions.mkdir(parents=True, exist_ok=True, mode=0o700)

    def session_file_for(self, session_id: str) -> Path:
        return self.pi_sessions / f"{session_id}.jsonl"

    def save(self, record: SessionRecord) -> None:
        self.prepare()
        target = self.root / f"{record.id}.json"
        scratch = target.with_suffix(".json.tmp")
        scratch.write_text(json.dumps(converter.unstructure(record), indent=1))
        os.replace(scratch, target)

    def load_all(self) -> list[SessionRecord]:
        if not self.root.is_dir():
            return []
        records = []
        for path in sorted(self.root.glob("*.json")):
            try:
                records.append(converter.structure(json.loads(path.read_text()), SessionRecord))
            except (OSError, ValueError, cattrs.BaseValidationError) as error:
                log.warn(
                    "skipping unreadable chat session record {path}: {error}",
                    path=str(path),
                    error=str(error),
                )
        return sorted(records, key=lambda record: record.created)
