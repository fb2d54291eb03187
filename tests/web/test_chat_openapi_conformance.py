"""The served OpenAPI document matches the running API (schemathesis, bounded examples)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.chat.live import LiveStack

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

EXAMPLES = 12


@pytest_twisted.async_yield_fixture
async def stack(tmp_path: Path) -> AsyncIterator[LiveStack]:
    from twisted.internet import reactor

    live = LiveStack(reactor, tmp_path, max_sessions=2)
    live.start()
    try:
        yield live
    finally:
        await live.stop()


def exercise(base_url: str) -> list[str]:
    """Runs in a thread: schemathesis is blocking, the server lives on the reactor."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        exercised.append(operation.label)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: object) -> None:
            response = case.call(base_url=base_url, timeout=20)  # type: ignore[attr-defined]
            case.validate_response(response, checks=checks)  # type: ignore[attr-defined]

        check()
    return exercised


@pytest_twisted.ensureDeferred
async def test_every_operation_conforms_to_the_served_document(stack: LiveStack) -> None:
    # one real session, so generated ids are not the only ones the server knows
    await stack.create("known")
    exercised = await threads.deferToThread(exercise, stack.url)
    assert "POST /api/sessions/{session_id}/stream" in exercised
    assert "POST /api/sessions/create" in exercised
    assert len(exercised) == 9
