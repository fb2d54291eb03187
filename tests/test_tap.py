"""Options for ``twistd pibridge``: defaults, environment, precedence and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from pibridge.tap import Options, RelayAddress, UdpAddress


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Options:
    options = Options(environ={} if environ is None else environ)
    options.parseOptions(argv)
    return options


def test_defaults_listen_on_loopback(tmp_path: Path) -> None:
    options = parse(["--workspace", str(tmp_path)])
    assert options["http"] == "tcp:8080:interface=127.0.0.1"
    assert options["moq"] == UdpAddress("127.0.0.1", 4443)
    assert options["max-sessions"] == 8
    assert options["model"] is None
    assert options["relay"] is None
    assert options["workspace"] == tmp_path.resolve()


def test_environment_of_the_backend_plan_is_honoured(tmp_path: Path) -> None:
    environ = {
        "PI_SERVICE_HOST": "0.0.0.0",
        "PI_SERVICE_PORT": "9090",
        "PI_SERVICE_MODEL": "anthropic/claude-sonnet-4-5",
        "PI_SERVICE_MAX_SESSIONS": "3",
    }
    options = parse(["--workspace", str(tmp_path)], environ)
    assert options["http"] == "tcp:9090:interface=0.0.0.0"
    assert options["model"] == "anthropic/claude-sonnet-4-5"
    assert options["max-sessions"] == 3


def test_options_win_over_environment(tmp_path: Path) -> None:
    environ = {"PI_SERVICE_PORT": "9090", "PI_SERVICE_MAX_SESSIONS": "3", "PI_SERVICE_MODEL": "a/b"}
    options = parse(
        [
            "--workspace",
            str(tmp_path),
            "--http",
            "tcp:7000",
            "--max-sessions",
            "5",
            "--model",
            "openai/gpt-4o",
        ],
        environ,
    )
    assert options["http"] == "tcp:7000"
    assert options["max-sessions"] == 5
    assert options["model"] == "openai/gpt-4o"


def test_ipv6_host_from_environment_is_escaped_for_the_endpoint(tmp_path: Path) -> None:
    options = parse(["--workspace", str(tmp_path)], {"PI_SERVICE_HOST": "::1"})
    assert options["http"] == "tcp:8080:interface=\\:\\:1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:4443", UdpAddress("127.0.0.1", 4443)),
        ("[::1]:5000", UdpAddress("::1", 5000)),
        ("0.0.0.0:0", UdpAddress("0.0.0.0", 0)),
        ("4444", UdpAddress("127.0.0.1", 4444)),
    ],
)
def test_moq_addresses(tmp_path: Path, value: str, expected: UdpAddress) -> None:
    assert parse(["--workspace", str(tmp_path), "--moq", value])["moq"] == expected


def test_relay_url(tmp_path: Path) -> None:
    options = parse(["--workspace", str(tmp_path), "--relay", "moqt://relay.example:4443"])
    assert options["relay"] == RelayAddress("relay.example", 4443, "moqt://relay.example:4443")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--moq", "localhost:http"], {}, "--moq: 'http' is not a port number"),
        (["--moq", "127.0.0.1:70000"], {}, "--moq: port 70000 is outside 0-65535"),
        (["--moq", "[::1]4443"], {}, "--moq: '[::1]4443' should look like [::1]:4443"),
        (["--moq", ":4443"], {}, "--moq: ':4443' has no host before the colon"),
        (["--max-sessions", "0"], {}, "--max-sessions: must be at least 1, not 0"),
        (["--max-sessions", "many"], {}, "--max-sessions: 'many' is not a whole number"),
        (
            [],
            {"PI_SERVICE_MAX_SESSIONS": "x"},
            "PI_SERVICE_MAX_SESSIONS: 'x' is not a whole number",
        ),
        ([], {"PI_SERVICE_PORT": "eighty"}, "PI_SERVICE_PORT: 'eighty' is not a port number"),
        (
            ["--relay", "https://relay"],
            {},
            "--relay: 'https://relay' should be a moqt://HOST:PORT URL",
        ),
        (["--relay", "moqt://:4443"], {}, "--relay: 'moqt://:4443' has no host"),
        (["--grace", "-1"], {}, "--grace: must be more than 0 seconds, not -1"),
        (["--heartbeat", "soon"], {}, "--heartbeat: 'soon' is not a number of seconds"),
    ],
)
def test_bad_values_are_refused_precisely(
    tmp_path: Path, argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(["--workspace", str(tmp_path), *argv], environ)
    assert str(raised.value) == message


def test_missing_workspace_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(usage.UsageError, match=r"--workspace: .*nowhere is not a directory"):
        parse(["--workspace", str(missing)])


def test_missing_secrets_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match=r"--secrets-dir: .* is not a directory"):
        parse(["--workspace", str(tmp_path), "--secrets-dir", str(tmp_path / "no")])


@pytest.mark.parametrize(
    ("argv", "environ", "start"),
    [
        (["--model", "claude"], {}, "--model: model must be given as provider/id"),
        ([], {"PI_SERVICE_MODEL": "nope"}, "PI_SERVICE_MODEL: model must be given as provider/id"),
    ],
)
def test_models_are_provider_slash_id(
    tmp_path: Path, argv: list[str], environ: dict[str, str], start: str
) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(["--workspace", str(tmp_path), *argv], environ)
    assert str(raised.value).startswith(start)


def test_a_non_pi_program_runs_in_terminals_while_chat_keeps_pi(tmp_path: Path) -> None:
    options = parse(["--workspace", str(tmp_path), "--pi-command", "bash --norc"])
    assert options["terminal-command"] == "bash --norc"
    assert options["pi-command"].endswith("pi")
    options = parse(["--workspace", str(tmp_path), "--pi-command", "/opt/pi/bin/pi --verbose"])
    assert options["terminal-command"] is None
    assert options["pi-command"] == "/opt/pi/bin/pi --verbose"
