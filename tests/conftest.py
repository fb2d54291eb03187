"""Shared test fixtures: every test fails if a Failure was logged while it ran."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher


@pytest.fixture(autouse=True)
def no_logged_failures(request: pytest.FixtureRequest) -> Iterator[list[dict[str, Any]]]:
    """Fail the test if anything logged a Failure (an unhandled error) during it."""
    failures: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observer)
    if failures and request.node.get_closest_marker("allow_logged_failures") is None:
        texts = [event["log_failure"].getTraceback() for event in failures]
        pytest.fail("Failures were logged during the test:\n" + "\n".join(texts))
