"""What a person does with the PI page, as calls a test can read."""

from __future__ import annotations

from typing import Any

STREAM_TIMEOUT_MS = 60_000


class ChatPage:
    def __init__(self, page: Any) -> None:
        self.page = page

    def open(self, url: str) -> ChatPage:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]")
        return self

    @property
    def rail(self) -> Any:
        return self.page.locator("#pi-rail")

    @property
    def composer(self) -> Any:
        return self.page.locator("#composer")

    @property
    def input(self) -> Any:
        return self.page.locator("#composer-input")

    @property
    def messages(self) -> Any:
        return self.page.locator("#messages")

    @property
    def replies(self) -> Any:
        return self.page.locator("#messages .message.reply")

    def send(self, text: str) -> None:
        replies_before = self.replies.count()
        self.input.fill(text)
        self.page.get_by_role("button", name="Send message").click()
        self.page.wait_for_function(
            "n => document.querySelectorAll('#messages .message.reply').length > n",
            arg=replies_before,
            timeout=STREAM_TIMEOUT_MS,
        )

    def wait_reply_finished(self) -> Any:
        """The newest reply once it ended (done, error or stopped)."""
        last = self.replies.last
        self.page.wait_for_function(
            "() => { const replies = document.querySelectorAll('#messages .message.reply');"
            " const r = replies[replies.length - 1];"
            " return r && !r.hasAttribute('aria-busy'); }",
            timeout=STREAM_TIMEOUT_MS,
        )
        return last

    def ask(self, text: str) -> str:
        self.send(text)
        return str(self.wait_reply_finished().inner_text())

    def session_options(self) -> list[str]:
        return [str(text) for text in self.page.locator("#session-select option").all_inner_texts()]

    def session_state(self) -> str:
        return str(self.page.locator("#session-state").inner_text())

    def box(self, selector: str) -> dict[str, float]:
        box = self.page.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not visible"
        return dict(box)

    def scroll_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = self.page.evaluate(
            "() => { const m = document.getElementById('messages');"
            " return {scrollHeight: m.scrollHeight, clientHeight: m.clientHeight,"
            " scrollTop: m.scrollTop}; }"
        )
        return metrics
