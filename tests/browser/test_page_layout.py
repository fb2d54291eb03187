"""The right rail's layout: composer pinned, list scrolling, typing while a reply streams."""

from __future__ import annotations

from typing import Any

from tests.browser.chat_page import ChatPage
from tests.browser.conftest import Bridge

VIEWPORT_HEIGHT = 800


def test_composer_stays_at_the_bottom_and_the_messages_scroll(
    bridge: Bridge, browser_context: Any
) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    before = chat.box("#composer")
    assert before["y"] + before["height"] <= VIEWPORT_HEIGHT

    reply = chat.ask("Tell me a long story [long: 200]")
    assert "line 200 of 200" in reply
    chat.ask("And once more [long: 50]")

    after = chat.box("#composer")
    assert after["y"] + after["height"] <= VIEWPORT_HEIGHT, "composer left the viewport"
    assert after == before, "the composer moved while the conversation grew"
    metrics = chat.scroll_metrics()
    assert metrics["scrollHeight"] > metrics["clientHeight"], "the message list does not scroll"
    chat.page.wait_for_function(
        "() => { const m = document.getElementById('messages');"
        " return m.scrollHeight - m.scrollTop - m.clientHeight < 2; }"
    )
    last_line = chat.page.get_by_text("line 50 of 50")
    assert last_line.is_visible()
    assert chat.page.evaluate("document.scrollingElement.scrollHeight") <= VIEWPORT_HEIGHT, (
        "the page itself grew instead of the message list"
    )

    chat.messages.evaluate("m => { m.scrollTop = 0; }")
    first_prompt = chat.page.locator("#messages .message.user").first
    assert "Tell me a long story" in first_prompt.inner_text()
    assert first_prompt.is_visible(), "older messages scroll back into view"
    assert chat.box("#composer") == before


def test_typing_stays_responsive_while_a_long_reply_streams(
    bridge: Bridge, browser_context: Any
) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url("agent_mode=pi"))
    chat.page.evaluate(
        """() => {
          const input = document.getElementById('composer-input');
          window.keyLatencies = [];
          let pressed = null;
          input.addEventListener('keydown', (event) => { pressed = event.timeStamp; });
          input.addEventListener('input', () => {
            if (pressed !== null) window.keyLatencies.push(performance.now() - pressed);
            pressed = null;
          });
        }"""
    )
    chat.send("Stream slowly [slow: 20] [long: 300]")
    chat.page.get_by_text("line 5 of 300").wait_for()
    chat.page.evaluate(
        "() => { window.earlyNodes = [document.querySelector('#messages .message.user'),"
        " document.querySelector('#messages .message.reply p.text')]; }"
    )

    typed = "typing while pi replies"
    chat.input.click()
    streaming_states = []
    for character in typed:
        chat.page.keyboard.type(character)
        streaming_states.append(chat.replies.last.get_attribute("aria-busy") == "true")

    assert chat.input.input_value() == typed, "characters were lost while the reply streamed"
    assert all(streaming_states), "the reply finished before typing ended; nothing was shown"
    latencies = chat.page.evaluate("window.keyLatencies")
    assert len(latencies) == len(typed)
    ordered = sorted(latencies)
    print(
        f"keypress-to-value latency while streaming: median {ordered[len(ordered) // 2]:.2f} ms,"
        f" max {ordered[-1]:.2f} ms over {len(ordered)} keys"
    )

    reply = chat.wait_reply_finished().inner_text()
    assert "line 300 of 300" in reply
    assert reply.count("line 150 of 300") == 1
    kept = chat.page.evaluate(
        "() => window.earlyNodes.map(node => node.isConnected)"
        " .concat([window.earlyNodes[1].textContent.includes('line 300 of 300')])"
    )
    assert kept == [True, True, True], "the list was rebuilt while streaming, not appended to"
    assert chat.input.input_value() == typed, "the draft survived the end of the reply"


def test_the_rail_collapses_expands_and_is_remembered(bridge: Bridge, browser_context: Any) -> None:
    chat = ChatPage(browser_context.new_page()).open(bridge.sign_in_url())
    page = chat.page
    toggle = page.locator("#rail-toggle")
    assert chat.rail.is_visible() and toggle.get_attribute("aria-expanded") == "true"
    rail_width = chat.box("#pi-rail")["width"]

    page.get_by_role("button", name="Hide PI panel").click()
    assert chat.rail.is_hidden()
    assert toggle.get_attribute("aria-expanded") == "false"
    assert chat.box("#workspace")["width"] > rail_width, "the workspace takes the room"

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert chat.rail.is_hidden(), "collapsed stays collapsed on the next visit"

    chat.open(page.url.split("?")[0] + "?agent_mode=pi")
    assert chat.rail.is_visible(), "?agent_mode=pi opens the PI panel"
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert chat.rail.is_visible()
    assert page.get_by_role("button", name="Hide PI panel").is_visible()
