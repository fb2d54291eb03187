"""The moq-rs relay every test in this directory meets its bots and clients at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.harness import FixedRelay, start_relay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[FixedRelay]:
    rust = start_relay(tmp_path)
    yield rust
    rust.stop()
