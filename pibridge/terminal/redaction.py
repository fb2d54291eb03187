"""How raw terminal bytes may appear in logs: never, unless debugging, and then redacted.

PTY output and keyboard input carry whatever the user sees and types
(passwords, keys, private code). Even in debug mode a log line shows only the
length and a short digest, which is enough to match the two ends of a stream
against each other without revealing content.
"""

from __future__ import annotations

import hashlib

from twisted.logger import Logger


def describe_bytes(data: bytes) -> str:
    """``len=5 sha256:2cf24dba`` — the length and a digest prefix, never the content."""
    return f"len={len(data)} sha256:{hashlib.sha256(data).hexdigest()[:8]}"


def log_io(log: Logger, enabled: bool, direction: str, data: bytes) -> None:
    """Log one object of terminal I/O, redacted, only when debug I/O logging is enabled."""
    if enabled:
        log.debug("{direction} {what}", direction=direction, what=describe_bytes(data))
