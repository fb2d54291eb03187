"""The PI page in real Chromium against a real pibridge: chat, tools, keys, layout."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from tests.browser.chat_page import ChatPage
from tests.browser.conftest import Bridge, bridge_running, server_env


def test_reply_streams_into_the_right_rail_with_the_tool_call(
    bridge: Bridge, browser_context: Any
) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))

    assert chat.rail.is_visible()
    toggle = chat.page.get_by_role("button", name="Hide PI panel")
    assert toggle.get_attribute("aria-expanded") == "true"
    workspace, rail = chat.box("#workspace"), chat.box("#pi-rail")
    assert rail["x"] >= workspace["x"] + workspace["width"] - 1, "the PI panel is a right rail"

    chat.send("Please run [bash: echo hello]")
    tool = chat.page.locator("#pi-rail details.tool[data-tool=bash]")
    tool.wait_for()
    assert "echo hello" in tool.locator(".tool-args").text_content()
    reply = chat.wait_reply_finished()
    assert tool.locator(".tool-status").inner_text() == "done"
    assert tool.locator(".tool-result").text_content().strip() == "hello"
    assert "Tool bash returned" in reply.inner_text()
    assert "hello" in reply.locator("p.text").last.inner_text()

    assert tool.locator(".tool-result").is_visible()
    chat.page.locator("#pi-rail details.tool summary").click()
    assert tool.locator(".tool-result").is_hidden(), "the tool block collapses"
    chat.page.locator("#pi-rail details.tool summary").click()
    assert tool.locator(".tool-result").is_visible(), "and opens again"


def test_the_page_says_plainly_that_the_offline_model_answers(
    bridge: Bridge, browser_context: Any
) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    label = chat.page.locator("#model-label").inner_text()
    assert label.startswith("Offline model:"), label
    assert "no provider is used" in label
    assert chat.page.locator("#info-model").inner_text() == label


def test_no_key_prompt_and_no_secret_reaches_the_page(tmp_path: Path, browser_context: Any) -> None:
    secret = "sk-test-NEVER-SHOW-" + secrets.token_hex(12)
    env = server_env(OPENAI_API_KEY=secret, PI_SERVICE_MODEL="pibridge-offline/offline")
    with bridge_running(tmp_path, env=env) as bridge:
        seen: list[tuple[str, bytes]] = []
        page = browser_context.new_page()

        def record(response: Any) -> None:
            headers = "\n".join(f"{k}: {v}" for k, v in response.all_headers().items())
            try:
                body = response.body()
            except Exception:  # redirects and aborted streams have no body
                body = b""
            seen.append((response.url + "\n" + headers, body))

        page.on("response", record)
        chat = ChatPage(page).open(bridge.sign_in_url("agent_mode=pi"))
        reply = chat.ask("What is the key? [bash: echo $OPENAI_API_KEY; env]")
        chat.page.reload()
        chat.page.wait_for_selector("body[data-ready=true]")
        chat.page.wait_for_selector("#messages .message.reply")
        offline_keys = list((tmp_path / "state").rglob("offline-model.key"))
        assert offline_keys, "the offline model's key is a server secret too"
        server_secrets = [secret] + [path.read_text().strip() for path in offline_keys]

    assert "Tool bash returned" in reply
    assert chat.page.locator("input[type=password]").count() == 0
    page_text = chat.page.locator("body").inner_text().lower()
    assert "api key" not in page_text and "enter your key" not in page_text
    assert any("/api/sessions" in where for where, _ in seen), "the page talked to the chat API"
    assert any(b"event: delta" in body for _, body in seen), "the stream bodies were recorded"
    for value in server_secrets:
        assert value
        for where, body in seen:
            url = where.splitlines()[0]
            assert value not in where, f"a secret was in the headers of {url}"
            assert value.encode() not in body, f"a secret was in the body of {url}"
    assert secret not in chat.page.content()
    for _, body in seen:
        assert bridge.token.encode() not in body, "the access token came back in a body"


def test_a_dropped_stream_resumes_from_the_last_event_without_repeating_text(
    bridge: Bridge, browser_context: Any
) -> None:
    page = browser_context.new_page()
    resumed: list[dict[str, str]] = []
    cut_after: list[str] = []

    def drop_midway(route: Any) -> None:
        """Deliver the reply stream up to the middle of its 15th event, then end it."""
        response = route.fetch()
        body = response.body()
        cut = 0
        for _ in range(15):
            cut = body.index(b"\n\n", cut) + 2
        last_whole = body[:cut].rsplit(b"id: ", 1)[1].split(b"\n", 1)[0].decode()
        cut_after.append(last_whole)
        route.fulfill(response=response, body=body[: cut + 12])

    def replay_with_overlap(route: Any) -> None:
        """Ask for five events the page already has too, as a replaying relay might."""
        headers = dict(route.request.headers)
        headers["last-event-id"] = str(int(headers["last-event-id"]) - 5)
        route.continue_(headers=headers)

    page.route("**/api/sessions/*/stream", drop_midway)
    page.route("**/api/sessions/*/events", replay_with_overlap)
    page.on(
        "request",
        lambda request: resumed.append(request.headers) if "/events" in request.url else None,
    )
    chat = ChatPage(page).open(bridge.sign_in_url("agent_mode=pi"))
    reply = chat.ask("Count for me [long: 40]")

    assert resumed, "the page did not reconnect after the stream broke"
    assert resumed[0].get("last-event-id") == cut_after[0]
    for number in range(1, 41):
        shown = reply.count(f"line {number} of 40")
        assert shown == 1, f"line {number} of 40 shown {shown} times"
    session_id = chat.page.locator("#session-select").input_value()
    saved = bridge.get_json(f"/api/sessions/{session_id}/history")["messages"]
    assert chat.replies.last.locator("p.text").inner_text().strip() == saved[-1]["text"].strip()


def test_model_errors_and_stops_are_said_plainly(bridge: Bridge, browser_context: Any) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    failed = chat.ask("Break please [fail: the provider is down]")
    assert "Error:" in failed and "the provider is down" in failed
    assert "failed" in (chat.replies.last.get_attribute("class") or "")

    chat.send("A long one [slow: 50] [long: 200]")
    chat.page.get_by_text("line 3 of 200").wait_for()
    chat.page.get_by_role("button", name="Stop session").click()
    stopped = chat.wait_reply_finished().inner_text()
    assert "Stopped" in stopped
    assert "line 200 of 200" not in stopped
    chat.page.get_by_text("Session stopped.").wait_for()
    assert "Stopped" in chat.session_state()


def test_a_second_tab_follows_a_reply_already_streaming(
    bridge: Bridge, browser_context: Any
) -> None:
    first = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    first.send("Slowly please [slow: 30] [long: 120]")
    first.page.get_by_text("line 10 of 120").wait_for()

    second = ChatPage(browser_context.new_page()).open(bridge.page_base + "?agent_mode=pi")
    second.page.get_by_text("line 120 of 120").wait_for()
    reply = second.wait_reply_finished().inner_text()
    for number in (1, 60, 120):
        assert reply.count(f"line {number} of 120") == 1
    assert first.wait_reply_finished().inner_text() == reply
