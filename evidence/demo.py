"""Drive a fresh pibridge and its PI page with Rodney, one step per call.

Each step prints only what does not change from run to run (no ids, ports,
times or tokens), so ``showboat verify`` can re-run the document and compare.
State between steps lives in ``$PIBRIDGE_EVIDENCE_RUN`` (default
``/tmp/pibridge-evidence``). ``$PIBRIDGE_DEMO_SERVER`` names another command to
run instead of ``twistd -n pibridge``; it gets the same options.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("PIBRIDGE_EVIDENCE_RUN", "/tmp/pibridge-evidence"))
STATE = RUN / "demo.json"
BIN = Path(sys.executable).parent
SIGN_IN = re.compile(r"open (http://\S+/)\?token=(\S+)")
WIDTH, HEIGHT = 1280, 800


def chromium() -> str:
    """Debian's chromium binary itself: Rodney reads the browser's first output
    lines, and the /usr/bin/chromium wrapper script can print shell noise first
    (its /dev/shm check breaks when /dev/shm is mounted twice)."""
    binary = Path("/usr/lib/chromium/chromium")
    return str(binary) if binary.exists() else "/usr/bin/chromium"


def rodney_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ROD_CHROME_BIN"] = os.environ.get("ROD_CHROME_BIN", chromium())
    env["RODNEY_HOME"] = str(RUN / "rodney")
    env["HOME"] = str(RUN / "home")
    return env


def rodney(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [str(BIN / "rodney"), *args],
        env=rodney_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"rodney {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout.strip()


def js(expression: str) -> str:
    return rodney("js", expression)


def wait_until(expression: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while js(f"!!({expression})") != "true":
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {expression}")
        time.sleep(0.1)


def saved() -> dict[str, Any]:
    state: dict[str, Any] = json.loads(STATE.read_text())
    return state


def serves_page(url: str, token: str) -> bool:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return b'id="pi-rail"' in response.read()
    except urllib.error.HTTPError:
        return False


def up() -> None:
    shutil.rmtree(RUN, ignore_errors=True)
    for folder in ("workspace", "state", "home", "rodney"):
        (RUN / folder).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    log = (RUN / "server.log").open("wb")
    launcher = os.environ.get("PIBRIDGE_DEMO_SERVER")
    twistd = [str(BIN / "twistd"), "-n", "--pidfile=", "pibridge"]
    command = launcher.split() if launcher else twistd
    server = subprocess.Popen(
        [
            *command,
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--moq",
            "127.0.0.1:0",
            "--workspace",
            str(RUN / "workspace"),
            "--state-dir",
            str(RUN / "state"),
        ],
        cwd=RUN,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (found := SIGN_IN.search((RUN / "server.log").read_text(errors="replace"))):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("pibridge did not start:\n" + (RUN / "server.log").read_text())
        time.sleep(0.1)
    url, token = found.group(1), found.group(2)
    state = {"server": server.pid, "url": url, "token": token, "base": url, "proxy": None}
    if not serves_page(url, token):
        # Until pibridge serves the page at / itself, serve it beside the real API.
        proxy = subprocess.Popen(
            [sys.executable, "-m", "tests.browser.static_proxy", url],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=(RUN / "proxy.log").open("wb"),
            start_new_session=True,
            text=True,
        )
        assert proxy.stdout is not None
        state["base"] = proxy.stdout.readline().strip()
        state["proxy"] = proxy.pid
    STATE.write_text(json.dumps(state))
    rodney("start")
    print("pibridge is running with the offline model; a headless Chromium is ready")


def open_page(query: str = "") -> None:
    state = saved()
    extra = f"&{query}" if query else ""
    rodney("open", f"{state['base']}?token={state['token']}{extra}")
    rodney("wait", "body[data-ready=true]")
    print(f"address bar: {address()}")
    print(f"title: {rodney('title')}")
    hidden = js("document.getElementById('pi-rail').hidden") == "true"
    print(f"PI panel: {'collapsed' if hidden else 'expanded'}")
    print(f"model shown: {rodney('text', '#model-label')}")
    print(f"password or key fields on the page: {js(KEY_FIELDS)}")


def address() -> str:
    url = js("location.pathname + location.search")
    return "token still in the address bar" if "token" in url else f"{url} (no token)"


def send(text: str, wait: bool = True) -> None:
    before = int(js("document.querySelectorAll('#messages .message.reply').length"))
    rodney("clear", "#composer-input")
    rodney("input", "#composer-input", text)
    rodney("click", "#send")
    wait_until(f"document.querySelectorAll('#messages .message.reply').length > {before}")
    if wait:
        wait_until("!document.querySelector('#messages .message.reply[aria-busy]')")
    print(f"sent: {text}")


def reply() -> None:
    # The body only: the token count under it depends on the prompt pi builds.
    last = "[...document.querySelectorAll('#messages .message.reply')].pop()"
    print(js(f"{last}.querySelector('.message-body').innerText"))


def sessions() -> None:
    count = js("document.querySelectorAll('#session-select option').length")
    print(f"sessions listed: {count}")
    print(f"this session: {js(SESSION_STATE)}")
    print(f"first message shown: {js(FIRST_MESSAGE)}")


KEY_FIELDS = "document.querySelectorAll('input[type=password], input[name*=key i]').length"
SESSION_STATE = "document.getElementById('session-state').innerText"
FIRST_MESSAGE = (
    "(document.querySelector('#messages .message.user') || {innerText: '(none)'}).innerText"
)


def new_session() -> None:
    before = int(js("document.querySelectorAll('#session-select option').length"))
    rodney("click", "#new-session")
    wait_until(f"document.querySelectorAll('#session-select option').length > {before}")
    wait_until("document.querySelector('#messages .conversation')")
    print("pressed New: a new, empty session is selected")


def stop_session() -> None:
    rodney("click", "#stop-session")
    wait_until("document.getElementById('session-state').dataset.state === 'stopped'")
    print("pressed Stop")


def toggle() -> None:
    before = js("document.getElementById('pi-rail').hidden")
    rodney("click", "#rail-toggle")
    wait_until(f"document.getElementById('pi-rail').hidden !== {before}")
    print(f"pressed the PI panel button; it now reads {rodney('text', '#rail-toggle')!r}")


def switch(index: str) -> None:
    value = js(f"document.querySelectorAll('#session-select option')[{int(index)}].value")
    rodney("select", "#session-select", value)
    wait_until(f"document.querySelector('#messages .conversation[data-session=\"{value}\"]')")
    time.sleep(0.3)
    print(f"switched to session {int(index) + 1}")


def wait_text(text: str) -> None:
    wait_until(f"document.getElementById('messages').innerText.includes({json.dumps(text)})")
    print(f"seen: {text}")


def layout() -> None:
    checks = js(
        "JSON.stringify((() => {"
        " const rail = document.getElementById('pi-rail');"
        " const composer = document.getElementById('composer').getBoundingClientRect();"
        " const list = document.getElementById('messages');"
        " const busy = !!document.querySelector('#messages .message.reply[aria-busy]');"
        " return {"
        "  panel: rail.hidden ? 'collapsed' : 'expanded',"
        "  composer_at_bottom: rail.hidden ? null : Math.abs(composer.bottom - innerHeight) < 1,"
        "  messages_scroll: rail.hidden ? null : list.scrollHeight > list.clientHeight,"
        "  streaming: busy };"
        "})())"
    )
    for key, value in json.loads(checks).items():
        if value is not None:
            print(f"{key}: {json.dumps(value)}")


def shot(name: str) -> None:
    target = RUN / f"{name}.png"
    rodney("screenshot", "-w", str(WIDTH), "-h", str(HEIGHT), str(target))
    print(f"screenshot: {name}.png")


def down() -> None:
    if not STATE.exists():
        return
    state = saved()
    with contextlib.suppress(SystemExit):
        rodney("stop")
    for key in ("proxy", "server"):
        pid = state.get(key)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
    print("stopped pibridge and the browser")


STEPS: dict[str, Callable[..., None]] = {
    "up": up,
    "open": open_page,
    "send": send,
    "send-nowait": lambda text: send(text, wait=False),
    "reply": reply,
    "sessions": sessions,
    "new": new_session,
    "stop": stop_session,
    "toggle": toggle,
    "switch": switch,
    "wait-text": wait_text,
    "layout": layout,
    "shot": shot,
    "down": down,
}

if __name__ == "__main__":
    STEPS[sys.argv[1]](*sys.argv[2:])
