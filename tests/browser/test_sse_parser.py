"""The page's SSE parser, run as the browser runs it (an ES module in Chromium)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.static_proxy import page_proxy


@pytest.fixture
def module_page(browser_context: Any) -> Any:
    with page_proxy("http://127.0.0.1:9/") as base:
        page = browser_context.new_page()
        page.goto(base + "static/sse.js")
        yield page


def parse(page: Any, chunks: list[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate(
        """async (chunks) => {
          const { SseParser } = await import('/static/sse.js');
          const parser = new SseParser();
          return chunks.flatMap((chunk) => parser.feed(chunk));
        }""",
        chunks,
    )
    return events


def test_events_split_anywhere_come_out_whole(module_page: Any) -> None:
    stream = (
        'id: 7\nevent: delta\ndata: {"text":"hé"}\n\n'
        ": keep-alive\n\n"
        "id: 8\nevent: done\ndata: {}\n\n"
    )
    whole = parse(module_page, [stream])
    assert whole == [
        {"type": "delta", "data": '{"text":"hé"}', "id": "7"},
        {"type": "done", "data": "{}", "id": "8"},
    ]
    for cut in range(1, len(stream)):
        assert parse(module_page, [stream[:cut], stream[cut:]]) == whole, cut


def test_line_endings_multi_line_data_and_defaults(module_page: Any) -> None:
    events = parse(module_page, ["data: one\r", "\ndata: two\r\rdata:x\r\n\r\n", "event: e\n"])
    assert events == [
        {"type": "message", "data": "one\ntwo", "id": None},
        {"type": "message", "data": "x", "id": None},
    ]
    assert parse(module_page, ["event: only\n\n", "id: 3\n\n"]) == [], "no data, no event"
