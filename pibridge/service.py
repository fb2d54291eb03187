"""The service tree behind ``twistd pibridge``: one place where the layers meet."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.web.server import Site

from pibridge import __version__
from pibridge.agent.log_redaction import RedactingLogObserver
from pibridge.agent.offline_model import OfflineModelService
from pibridge.agent.runtime import AgentRuntime
from pibridge.bot.service import build_terminal
from pibridge.chat.wiring import build_chat
from pibridge.log_lines import JsonLinesObserver
from pibridge.metrics import build_registry, metrics_text
from pibridge.web.access import AccessGuard, AccessPolicy
from pibridge.web.app import HttpApi
from pibridge.web.bounded import BoundedRequest

log = Logger()


class QuietSite(Site):
    """A Site that stays quiet per request and refuses oversized bodies early."""

    noisy = False
    requestFactory = BoundedRequest

    def log(self, request: Any) -> None:
        return None


@attrs.define(eq=False)
class HttpService(Service):
    """Listens on a Twisted endpoint and says where, so ``tcp:0`` is usable."""

    reactor: Any
    description: str
    site: Site
    access: AccessPolicy
    port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        """Listen before dropping privileges, and refuse to start if we cannot."""
        super().privilegedStartService()
        endpoint = endpoints.serverFromString(self.reactor, self.description)
        failures: list[Failure] = []
        endpoint.listen(self.site).addCallbacks(self.listened, failures.append)
        if failures:
            log.critical(
                "cannot listen for HTTP on {where}: {why}",
                where=self.description,
                why=failures[0].getErrorMessage(),
            )
            raise SystemExit(1)

    def listened(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        base = f"http://{getattr(address, 'host', '?')}:{getattr(address, 'port', '?')}/"
        log.info("pibridge {version}: HTTP API on {base}", version=__version__, base=base)
        log.info(
            "pibridge: open {base}?token={token} (programs send Authorization: Bearer TOKEN)",
            base=base,
            token=self.access.token,
        )

    def stopService(self) -> Deferred[object] | None:  # type: ignore[override]
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        stopped: Deferred[object] = maybeDeferred(port.stopListening)  # type: ignore[arg-type]
        return stopped


@attrs.define(eq=False)
class PibridgeService(MultiService):
    """The root service: stops its children, and treats SIGTERM/SIGINT as a clean stop.

    Twisted re-raises the stopping signal at exit so the exit status says
    "killed"; for pibridge a signal is how an operator asks it to stop, and a
    stop that closed every listener and reaped every child exits 0.
    """

    reactor: Any
    #: Where log events go: stdout, as text or JSON lines, with secrets redacted.
    log_observer: ILogObserver | None = None

    def __attrs_post_init__(self) -> None:
        MultiService.__init__(self)

    def setServiceParent(self, parent: Any) -> None:
        """Under twistd the parent is the application; tell its logger what to use."""
        super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)

    def stopService(self) -> Deferred[None]:
        stopping: Deferred[None] = super().stopService()

        def clean_exit(result: object) -> object:
            if getattr(self.reactor, "_exitSignal", None) is not None:
                self.reactor._exitSignal = None
            return result

        stopping.addBoth(clean_exit)
        return stopping


def build_agent_runtime(
    config: Mapping[str, Any], reactor: Any
) -> tuple[AgentRuntime, OfflineModelService | None]:
    """pi as both faces run it, and the offline model that stands in for a provider."""
    state_dir: Path = config["state-dir"]
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    offline = None if config.get("no-offline-model") else OfflineModelService(reactor, state_dir)
    runtime = AgentRuntime(
        pi_command=shlex.split(config["pi-command"]),
        workspace=config["workspace"],
        state_dir=state_dir,
        model=config.get("model"),
        secrets_dir=config.get("secrets-dir"),
        environ=dict(os.environ),
        sandbox=not config.get("no-sandbox"),
        offline_model=offline,
    )
    return runtime, offline


def log_observer(
    json_lines: bool, redact: Callable[[str], str], level: LogLevel = LogLevel.info
) -> ILogObserver:
    """Every log line passes through redaction, whatever its format.

    Debug events (one per dropped datagram, for one) are left out unless asked
    for, so nobody who can reach a port can fill the log.
    """
    sink = JsonLinesObserver(sys.stdout) if json_lines else textFileLogObserver(sys.stdout)
    return FilteringLogObserver(
        RedactingLogObserver(sink, redact),
        [LogLevelFilterPredicate(defaultLogLevel=level)],
    )


def build_service(config: Mapping[str, Any], reactor: Any) -> IService:
    root = PibridgeService(reactor)
    runtime, offline = build_agent_runtime(config, reactor)
    level = LogLevel.debug if config.get("debug") else LogLevel.info
    root.log_observer = log_observer(bool(config.get("json-logs")), runtime.redact, level)
    if offline is not None:
        offline.setServiceParent(root)
    terminal = build_terminal(config, reactor, runtime)
    terminal.setServiceParent(root)
    chat = build_chat(config, reactor, runtime)
    chat.setServiceParent(root)
    api = HttpApi(
        config=config,
        chat=chat,
        terminal=terminal.public_facts(),
        model_status=runtime.status,
        metrics=partial(metrics_text, build_registry(terminal.bot, chat)),
    )
    access = AccessPolicy.for_state_dir(config["state-dir"], config.get("access-token"))
    site = QuietSite(AccessGuard(api.app.resource(), access))
    HttpService(reactor, config["http"], site, access).setServiceParent(root)
    log.info("pibridge workspace: {workspace}", workspace=str(config["workspace"]))
    return root
