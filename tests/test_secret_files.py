"""Secrets on disk: 0600 from the first byte, whole or absent, one winner when two race."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pibridge.secret_files import load_or_create_secret, write_private


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_secret_is_private_and_its_directory_too(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys" / "token.key"
    secret = load_or_create_secret(path, lambda: b"k" * 32)
    assert secret == b"k" * 32
    assert path.read_bytes() == secret
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert os.listdir(path.parent) == ["token.key"]  # no temporary file left behind


def test_an_existing_secret_is_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    first = load_or_create_secret(path, lambda: b"first")
    before = path.stat()
    again = load_or_create_secret(path, lambda: b"second")
    assert first == again == b"first"
    assert path.stat().st_ino == before.st_ino
    assert path.stat().st_mtime_ns == before.st_mtime_ns


def test_an_invalid_secret_is_replaced_and_made_private(tmp_path: Path) -> None:
    path = tmp_path / "cookie.key"
    path.write_bytes(b"short")
    path.chmod(0o644)
    secret = load_or_create_secret(path, lambda: b"x" * 32, lambda key: len(key) == 32)
    assert secret == b"x" * 32
    assert path.read_bytes() == secret
    assert mode(path) == 0o600
    assert os.listdir(tmp_path) == ["cookie.key"]


def test_two_creators_agree_on_the_first_secret(tmp_path: Path) -> None:
    path = tmp_path / "bot.key"

    def slow_generate() -> bytes:
        # Another process finishes its own secret while this one is generating.
        load_or_create_secret(path, lambda: b"winner")
        return b"loser"

    assert load_or_create_secret(path, slow_generate) == b"winner"
    assert path.read_bytes() == b"winner"
    assert os.listdir(tmp_path) == ["bot.key"]


def test_write_private_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text("old and much longer content")
    path.chmod(0o644)
    write_private(path, '{"key": "new"}')
    assert path.read_text() == '{"key": "new"}'
    assert mode(path) == 0o600
    write_private(path, b"bytes too")
    assert path.read_bytes() == b"bytes too"
    assert os.listdir(tmp_path) == ["auth.json"]


def test_write_private_can_share_a_file_that_is_not_secret(tmp_path: Path) -> None:
    path = tmp_path / "package.json"
    write_private(path, "{}", mode=0o644)
    assert mode(path) == 0o644


def test_the_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    os.umask(0o177)  # would leave an executable script unexecutable
    script = tmp_path / "sandbox-shell"
    write_private(script, "#!/bin/sh\n", mode=0o700)
    assert mode(script) == 0o700
