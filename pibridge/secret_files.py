"""Files only their owner may read: keys, tokens and credentials under the state directory.

Every secret pibridge keeps on disk goes through here, so that each one is
created with mode 0600 from its first byte (never briefly readable by others),
lands whole (a reader never sees half a key), and lives in a directory only
its owner can list.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIRECTORY = 0o700


def write_private(path: Path, data: bytes | str, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` readable by its owner alone, replacing any old file atomically."""
    temporary = _write_temporary(path, data.encode() if isinstance(data, str) else data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


def load_or_create_secret(
    path: Path,
    generate: Callable[[], bytes],
    is_valid: Callable[[bytes], bool] = bool,
) -> bytes:
    """Read the secret at ``path``; create it with ``generate()`` when absent or not valid.

    Two processes starting at once agree on one secret: a new file is linked
    into place only if none is there yet, and the loser reads the winner's.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY)
    try:
        existing: bytes | None = path.read_bytes()
    except FileNotFoundError:
        existing = None
    if existing is not None and is_valid(existing):
        return existing
    secret = generate()
    if existing is not None:
        write_private(path, secret)
        return secret
    temporary = _write_temporary(path, secret, PRIVATE_FILE)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        _remove(temporary)
    return secret


def _write_temporary(path: Path, data: bytes, mode: int) -> Path:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # exactly ``mode``, whatever the umask took away
            handle.write(data)
    except BaseException:
        _remove(temporary)
        raise
    return temporary


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
