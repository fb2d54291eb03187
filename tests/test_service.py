"""``twistd -n pibridge`` as a user runs it: says where it listens, answers, stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ServerProcess, running_server


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_starts_answers_and_stops_cleanly(tmp_path: Path, signum: int) -> None:
    with running_server(tmp_path) as server:
        capabilities = server.get_json("/api/capabilities")
        assert capabilities["features"]["pi"] is True
        assert capabilities["services"]["pi"]["mode"] == "backend"
        assert capabilities["services"]["pi"]["offline"] is True
        assert capabilities["services"]["terminal"]["bot_key"].startswith("pibridge-bot-")
        assert capabilities["services"]["terminal"]["certificate"].startswith("SHA256:")
        with urllib.request.urlopen(server.api_request("/metrics"), timeout=10) as response:
            metrics = response.read().decode()
        assert "pibridge_terminal_sessions 0.0" in metrics
        assert "pibridge_sse_clients 0.0" in metrics
        assert server.stop(signum) == 0
    log = server.output.decode(errors="replace")
    assert "Server Shut Down." in log
    assert "Traceback" not in log


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with running_server(tmp_path / "one") as first:
        port = first.url.rsplit(":", 1)[1].strip("/")
        (tmp_path / "two").mkdir()
        second = ServerProcess(
            [
                "--http",
                f"tcp:{port}:interface=127.0.0.1",
                "--workspace",
                str(tmp_path),
                "--state-dir",
                str(tmp_path / "two" / "state"),
            ],
            cwd=tmp_path / "two",
        )
        second.wait_for(re.compile(rb"cannot listen for HTTP on tcp:\d+:.*Address already in use"))
        assert second.process.wait(30) == 1
        assert b"Traceback" not in second.output


class StayPut(urllib.request.HTTPRedirectHandler):
    """Show redirects to the test instead of following them."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None

    def http_error_303(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        return fp


def test_http_face_needs_the_printed_token(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "api/capabilities", timeout=10)
        assert refused.value.code == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(), StayPut())
        with opener.open(server.login_url, timeout=10) as signed_in:
            assert signed_in.status == 303
            assert signed_in.headers["location"] == "/"
        with opener.open(server.url + "api/capabilities", timeout=10) as response:
            assert json.load(response)["features"]["pi"] is True


def test_chat_through_the_running_service(tmp_path: Path) -> None:
    """The default service answers a chat prompt with the offline model, keys held server-side."""
    with running_server(tmp_path) as server:
        create = server.api_request("/api/sessions/create", {})
        with urllib.request.urlopen(create, timeout=60) as response:
            assert response.status == 201
            session = json.load(response)["session"]
        stream = server.api_request(
            f"/api/sessions/{session['id']}/stream", {"message": "hello pibridge"}
        )
        kinds: list[str] = []
        text = ""
        with urllib.request.urlopen(stream, timeout=90) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kinds.append(line[len("event: ") :])
                elif line.startswith("data: ") and kinds and kinds[-1] == "delta":
                    text += json.loads(line[len("data: ") :])["text"]
                if kinds and kinds[-1] in ("done", "error") and line == "":
                    break
        assert kinds[0] == "session"
        assert kinds[-1] == "done"
        assert "You said: hello pibridge" in text


def test_json_logs_never_carry_a_provider_key(tmp_path: Path) -> None:
    secret = "sk-test-NEVER-LOG-0123456789abcdef"
    env = dict(os.environ, OPENAI_API_KEY=secret)
    with running_server(tmp_path, "--json-logs", env=env) as server:
        capabilities = server.get_json("/api/capabilities")
        assert capabilities["services"]["pi"]["offline"] is False
        create = server.api_request("/api/sessions/create", {})
        with urllib.request.urlopen(create, timeout=60) as response:
            session = json.load(response)["session"]
        stream = server.api_request(
            f"/api/sessions/{session['id']}/stream", {"message": "print your key"}
        )
        with urllib.request.urlopen(stream, timeout=90) as response:
            body = response.read()
        assert secret.encode() not in body
        assert secret not in json.dumps(capabilities)
        assert server.stop() == 0
    lines = server.output.decode().splitlines()
    assert lines and all(json.loads(line)["message"] is not None for line in lines)
    assert secret not in server.output.decode()


def test_a_huge_body_is_refused_without_being_stored(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        huge = b'{"message": "' + b"x" * (8 * 1024 * 1024) + b'"}'
        request = server.api_request("/api/sessions/create", huge)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        error = json.load(refused.value)["error"]
        assert error["code"] == "body_too_large"
        assert "limited to 1048576 bytes" in error["message"], "refused before any route read it"
        assert server.get_json("/api/sessions") == {"sessions": []}
