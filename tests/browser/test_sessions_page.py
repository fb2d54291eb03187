"""Sessions from the page: create, switch, stop; sign-in loss; server restarts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.chat_page import ChatPage
from tests.browser.conftest import Bridge, bridge_running, server_env
from tests.servers import ServerProcess


def test_create_switch_and_stop_sessions(bridge: Bridge, browser_context: Any) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    assert chat.ask("alpha here") and "You said: alpha here" in chat.replies.last.inner_text()
    assert len(chat.session_options()) == 1

    chat.page.get_by_role("button", name="New session").click()
    # A function, not a bare expression: the page's CSP forbids eval, as it should.
    chat.page.wait_for_function(
        "() => document.querySelectorAll('#session-select option').length === 2"
    )
    assert chat.replies.count() == 0, "a new session starts with an empty conversation"
    assert "You said: bravo here" in chat.ask("bravo here")
    second = chat.page.locator("#session-select").input_value()

    first = next(
        value
        for value in chat.page.locator("#session-select option").evaluate_all(
            "options => options.map(o => o.value)"
        )
        if value != second
    )
    chat.page.locator("#session-select").select_option(first)
    chat.page.get_by_text("You said: alpha here").wait_for()
    assert chat.page.get_by_text("bravo here").count() == 0, "switching shows only that session"

    chat.page.get_by_role("button", name="Stop session").click()
    chat.page.get_by_text("Session stopped.").wait_for()
    chat.page.wait_for_function(
        "() => document.getElementById('session-state').dataset.state === 'stopped'"
    )
    assert "Stopped" in chat.session_state()
    assert chat.page.get_by_role("button", name="Stop session").is_disabled()
    listing = _listing(bridge.get_json("/api/sessions"))
    states = {session["id"]: session["state"] for session in listing}
    assert states[first] == "stopped" and states[second] != "stopped"

    chat.page.locator("#session-select").select_option(second)
    chat.page.get_by_text("You said: bravo here").wait_for()
    assert "Ready" in chat.session_state()

    chat.page.reload()
    chat.page.wait_for_selector("body[data-ready=true]")
    labels = chat.session_options()
    assert len(labels) == 2 and any("(stopped)" in label for label in labels)
    chat.page.locator("#session-select").select_option(first)
    chat.page.get_by_text("You said: alpha here").wait_for()
    assert "Stopped" in chat.session_state()
    assert "You said: again" in chat.ask("again"), "a stopped session resumes when sent a message"


def test_a_lost_sign_in_says_to_open_the_printed_url(bridge: Bridge, browser_context: Any) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    assert chat.page.locator("#auth-problem").is_hidden()
    browser_context.clear_cookies()
    chat.input.fill("hello")
    chat.page.get_by_role("button", name="Send message").click()
    problem = chat.page.locator("#auth-problem")
    problem.wait_for()
    assert "open the URL the server printed" in problem.inner_text()
    assert bridge.token not in chat.page.content()
    assert chat.input.input_value() == "hello", "the message is kept to send again"


def test_the_page_keeps_working_across_a_server_restart(
    tmp_path: Path, browser_context: Any
) -> None:
    with bridge_running(tmp_path) as bridge:
        chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
        assert "You said: before restart" in chat.ask("before restart")
        old_session = chat.page.locator("#session-select").input_value()
        url = bridge.server.url
        assert bridge.server.stop() == 0
        chat.page.get_by_text("Server unreachable").wait_for()

        port = re.search(r":(\d+)/$", url)
        assert port is not None
        restarted = ServerProcess(
            [
                "--http",
                f"tcp:{port.group(1)}:interface=127.0.0.1",
                "--moq",
                "127.0.0.1:0",
                "--workspace",
                str(tmp_path / "workspace"),
                "--state-dir",
                str(tmp_path / "state"),
            ],
            cwd=tmp_path,
            env=server_env(),
        )
        try:
            assert restarted.started() == url
            # The page stays where it was; only the server behind it changed.
            chat.page.locator("#connection", has_text="Connected").wait_for()
            assert chat.page.locator("#session-select").input_value() == old_session
            assert chat.page.get_by_text("You said: before restart").is_visible()
            assert "You said: after restart" in chat.ask("after restart")
        finally:
            restarted.stop()


def _listing(body: Any) -> list[dict[str, Any]]:
    return body if isinstance(body, list) else list(body["sessions"])
