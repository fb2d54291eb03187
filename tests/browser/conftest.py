"""Real Chromium (Debian's, no browser download) driving the page of a real pibridge."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser.static_proxy import page_proxy
from tests.servers import ServerProcess, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SIGN_IN_LINE = re.compile(rb"open (http://\S+/)\?token=(\S+)")
PAGE_MARKER = b'id="pi-rail"'


def browser_environment(home: Path) -> dict[str, str | float | bool]:
    """Chromium writes under HOME and XDG dirs: keep it all in a temporary folder."""
    env: dict[str, str | float | bool] = dict(os.environ)
    for name, sub in (
        ("HOME", ""),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
        ("XDG_RUNTIME_DIR", "runtime"),
    ):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[name] = str(path)
    return env


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            env=browser_environment(home),
        )
        try:
            yield browser
        finally:
            browser.close()


class Bridge:
    """A running pibridge and the URL a person would open to reach its page."""

    def __init__(self, server: ServerProcess, page_base: str) -> None:
        self.server = server
        self.page_base = page_base
        found = SIGN_IN_LINE.search(server.output) or server.wait_for(SIGN_IN_LINE)
        self.token = found.group(2).decode()

    def get_json(self, path: str) -> Any:
        """What a program holding the token sees (not through the page)."""
        request = urllib.request.Request(
            self.server.url.rstrip("/") + path, headers={"authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def sign_in_url(self, query: str = "") -> str:
        extra = f"&{query}" if query else ""
        return f"{self.page_base}?token={self.token}{extra}"


def serves_page(server_url: str, token: str) -> bool:
    request = urllib.request.Request(server_url, headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return PAGE_MARKER in response.read()
    except urllib.error.HTTPError:
        return False


@contextmanager
def page_base_for(server: ServerProcess) -> Iterator[str]:
    """The server itself when it serves the page, else a static proxy in front of it."""
    token = server.wait_for(SIGN_IN_LINE).group(2).decode()
    if serves_page(server.url, token):
        yield server.url
        return
    with page_proxy(server.url) as base:
        yield base


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(extra)
    return env


@contextmanager
def bridge_running(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Bridge]:
    with ExitStack() as stack:
        server = stack.enter_context(running_server(tmp_path, *args, env=env or server_env()))
        base = stack.enter_context(page_base_for(server))
        yield Bridge(server, base)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    with bridge_running(tmp_path) as running:
        yield running


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()
