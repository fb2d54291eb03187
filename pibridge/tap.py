"""twistd plugin options and service wiring for ``twistd pibridge``.

Options win over the environment variables of the backend plan
(``PI_SERVICE_HOST``, ``PI_SERVICE_PORT``, ``PI_SERVICE_MODEL``,
``PI_SERVICE_MAX_SESSIONS``), which win over the defaults.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import usage

from pibridge import __version__
from pibridge.agent.credentials import parse_model

log = Logger()

DEFAULT_HTTP_PORT = 8080
DEFAULT_MOQ_PORT = 4443
DEFAULT_MAX_SESSIONS = 8
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pibridge"


def default_pi_command() -> str:
    """The pi pinned by the project's lockfile, else whatever ``pi`` is on PATH."""
    pinned = PROJECT_ROOT / "node_modules" / ".bin" / "pi"
    if pinned.exists():
        return str(pinned)
    return shutil.which("pi") or "pi"


@attrs.frozen
class UdpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen
class RelayAddress:
    host: str
    port: int
    url: str


def parse_port(value: str, what: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise usage.UsageError(f"{what}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise usage.UsageError(f"{what}: port {port} is outside 0-65535")
    return port


def parse_udp_address(value: str, what: str = "--moq") -> UdpAddress:
    """``HOST:PORT``, ``[V6]:PORT`` or a bare ``PORT`` (loopback)."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise usage.UsageError(f"{what}: {value!r} should look like [::1]:4443")
        return UdpAddress(host, parse_port(rest[1:], what))
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        if not host:
            raise usage.UsageError(f"{what}: {value!r} has no host before the colon")
        return UdpAddress(host, parse_port(port, what))
    if value.isdigit():
        return UdpAddress("127.0.0.1", parse_port(value, what))
    raise usage.UsageError(f"{what}: {value!r} should be HOST:PORT, [V6]:PORT or PORT")


def parse_relay_url(value: str) -> RelayAddress:
    parts = urlsplit(value)
    if parts.scheme not in ("moqt", "moq"):
        raise usage.UsageError(f"--relay: {value!r} should be a moqt://HOST:PORT URL")
    if not parts.hostname:
        raise usage.UsageError(f"--relay: {value!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise usage.UsageError(f"--relay: {value!r} has a bad port") from None
    return RelayAddress(parts.hostname, port or 443, value)


def parse_positive_int(value: str, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"{what}: {value!r} is not a whole number") from None
    if number < 1:
        raise usage.UsageError(f"{what}: must be at least 1, not {number}")
    return number


def parse_seconds(value: str, what: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"{what}: {value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise usage.UsageError(f"{what}: must be more than 0 seconds, not {value}")
    return seconds


class Options(usage.Options):
    """``twistd pibridge`` options; the environment fills in what is not given."""

    synopsis = "[options]"
    longdesc = (
        "Run the pi coding agent on this host. Terminal sessions are served over "
        "MoQ Transport (QUIC) to pibridge-attach; chat sessions over HTTP with SSE."
    )

    optParameters = [
        [
            "http",
            None,
            None,
            "Twisted endpoint for HTTP [env PI_SERVICE_HOST/PI_SERVICE_PORT; "
            f"default tcp:{DEFAULT_HTTP_PORT}:interface=127.0.0.1]",
        ],
        [
            "moq",
            None,
            None,
            f"UDP address for MoQ over QUIC, HOST:PORT [default 127.0.0.1:{DEFAULT_MOQ_PORT}]",
        ],
        ["workspace", None, None, "Directory pi works in [default: the current directory]"],
        [
            "state-dir",
            None,
            None,
            "Keys, certificates, pi's config and session files [default $XDG_STATE_HOME/pibridge]",
        ],
        ["pi-command", None, None, "The program run in terminal sessions [default: the pinned pi]"],
        [
            "max-sessions",
            None,
            None,
            "Most chat sessions at once "
            f"[env PI_SERVICE_MAX_SESSIONS; default {DEFAULT_MAX_SESSIONS}]",
        ],
        ["model", None, None, "Model pi uses, provider/id [env PI_SERVICE_MODEL; default offline]"],
        [
            "relay",
            None,
            None,
            "Meet clients at this MoQ relay, moqt://HOST:PORT, instead of listening",
        ],
        [
            "secrets-dir",
            None,
            None,
            "Directory of provider keys, one file per key (Vault Agent style)",
        ],
        ["public-url", None, None, "URL clients use to reach the HTTP API [default from --http]"],
        [
            "relay-fingerprint",
            None,
            None,
            "With --relay: the relay certificate's SHA-256 fingerprint "
            "[default: trust on first use]",
        ],
        [
            "access-token",
            None,
            None,
            "Token for the HTTP face [env PIBRIDGE_ACCESS_TOKEN; default: new each start]",
        ],
        ["grace", None, "30", "Seconds a terminal session outlives a dropped client"],
        ["heartbeat", None, "5", "Seconds between terminal heartbeats"],
        ["idle-timeout", None, "1800", "Seconds before an idle chat session is stopped"],
        ["session-timeout", None, "14400", "Seconds before any chat session is stopped"],
    ]
    optFlags = [
        ["no-sandbox", None, "Run pi's shell without bwrap confinement"],
        ["no-offline-model", None, "Never fall back to the built-in offline model"],
        ["debug-bytes", None, "Log terminal bytes (redacted); off by default"],
        ["json-logs", None, "Write log lines as JSON"],
        ["debug", None, "Log debug events too (dropped datagrams, refused streams...)"],
    ]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    def postOptions(self) -> None:
        env = self.environ
        if self["http"] is None:
            host = env.get("PI_SERVICE_HOST", "127.0.0.1")
            port = parse_port(env.get("PI_SERVICE_PORT", str(DEFAULT_HTTP_PORT)), "PI_SERVICE_PORT")
            self["http"] = f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"
        self["moq"] = parse_udp_address(self["moq"] or f"127.0.0.1:{DEFAULT_MOQ_PORT}")
        if self["max-sessions"] is None:
            self["max-sessions"] = env.get("PI_SERVICE_MAX_SESSIONS", str(DEFAULT_MAX_SESSIONS))
            what = "PI_SERVICE_MAX_SESSIONS"
        else:
            what = "--max-sessions"
        self["max-sessions"] = parse_positive_int(self["max-sessions"], what)
        if self["access-token"] is None:
            self["access-token"] = env.get("PIBRIDGE_ACCESS_TOKEN") or None
        if self["model"] is None:
            self["model"] = env.get("PI_SERVICE_MODEL") or None
            what = "PI_SERVICE_MODEL"
        else:
            what = "--model"
        if self["model"] is not None:
            try:
                parse_model(self["model"])
            except ValueError as e:
                raise usage.UsageError(f"{what}: {e}") from None
        if self["relay"] is not None:
            self["relay"] = parse_relay_url(self["relay"])
        self["workspace"] = Path(self["workspace"] or os.getcwd()).resolve()
        if not self["workspace"].is_dir():
            raise usage.UsageError(f"--workspace: {self['workspace']} is not a directory")
        self["state-dir"] = Path(self["state-dir"] or default_state_dir()).resolve()
        if self["secrets-dir"] is not None:
            self["secrets-dir"] = Path(self["secrets-dir"]).resolve()
            if not self["secrets-dir"].is_dir():
                raise usage.UsageError(f"--secrets-dir: {self['secrets-dir']} is not a directory")
        given = self["pi-command"]
        self["terminal-command"] = None
        if given and Path(shlex.split(given)[0] if given.strip() else "pi").name != "pi":
            # Any program can be shown in a terminal session; chat still needs pi.
            self["terminal-command"] = given
            given = None
        self["pi-command"] = given or default_pi_command()
        for name in ("grace", "heartbeat", "idle-timeout", "session-timeout"):
            self[name] = parse_seconds(self[name], f"--{name}")

    def opt_version(self) -> None:
        print(f"pibridge {__version__}")
        raise SystemExit(0)


def makeService(config: Mapping[str, Any], reactor: IReactorCore | None = None) -> IService:
    """Build the pibridge service tree from parsed options."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor  # type: ignore[assignment]
    from pibridge.service import build_service

    return build_service(config, reactor)
