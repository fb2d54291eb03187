"""How pibridge launches pi: isolated, with server-held keys, confined tools.

``AgentRuntime`` is what the chat and terminal layers call:

* ``runtime.status()`` says whether pi can run now and with which model, and
  if not, the exact thing an operator must configure (the chat API answers
  HTTP 503 with ``problem``).
* ``runtime.invocation("rpc", session_file=...)`` (chat) or
  ``runtime.invocation("tui", term=...)`` (terminal sessions) gives a
  ``PiInvocation`` ready for
  ``reactor.spawnProcess(proto, inv.argv[0], inv.argv, env=dict(inv.env), path=inv.cwd)``.
* ``runtime.redact(text)`` hides every secret value the server knows; use it on
  anything from pi (stderr, error messages) before it is logged or sent.

Isolation, for every pi process:

* ``PI_CODING_AGENT_DIR=<state_dir>/pi-agent`` holding pibridge's own
  ``models.json`` (the offline provider), ``settings.json``, ``auth.json``
  (0600, the only place a provider key is written) and sessions;
  ``PI_OFFLINE=1``; a minimal environment (``PATH``, ``HOME`` under the state
  dir, ``LANG``, ``TERM`` for the TUI) and never a provider key.
* The workspace's own ``.pi/`` (settings, extensions, skills, prompts,
  ``SYSTEM.md``) is not read: pi takes the name of its project config dir from
  the ``package.json`` under ``PI_PACKAGE_DIR``, so pibridge points that at an
  overlay of pi's package whose ``piConfig.configDir`` is a name nobody can
  guess.  ``--no-extensions`` keeps discovered extensions out and loads only
  pibridge's workspace guard (``workspace_guard.js``), which blocks file
  tools from touching paths outside the workspace with a reason the model
  sees.
* pi's bash runs through ``settings.shellPath``: a generated wrapper that runs
  ``bash`` under ``bwrap`` (see ``sandbox.py``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs
from twisted.logger import Logger

from pibridge.agent.credentials import (
    MODEL_ENV_VARIABLE,
    PREFERRED_PROVIDERS,
    PROVIDER_KEY_VARIABLES,
    Credentials,
    ModelRef,
    how_to_configure,
    load_credentials,
    parse_model,
)
from pibridge.agent.offline_model import (
    OFFLINE_MODEL_ID,
    OFFLINE_MODEL_LABEL,
    OFFLINE_PROVIDER,
)
from pibridge.agent.sandbox import SandboxPolicy, find_bwrap, write_sandbox_shell
from pibridge.secret_files import write_private

REDACTED = "[redacted]"
GUARD_EXTENSION = Path(__file__).with_name("workspace_guard.js")
DEFAULT_TERM = "xterm-256color"
_TERM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_log = Logger()


class OfflineEndpoint(Protocol):
    """What the runtime needs of the offline model (``OfflineModelService`` fits)."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...


@attrs.frozen
class PiInvocation:
    """Everything needed to spawn one pi process."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str


@attrs.frozen
class CredentialStatus:
    """Whether pi can run, with what, and if not what to configure."""

    ready: bool
    offline: bool
    model_label: str
    problem: str | None = None


class AgentNotReady(Exception):
    """pi cannot be started; the message says what to configure."""


@attrs.frozen
class _Selection:
    status: CredentialStatus
    provider: str | None = None
    model_id: str | None = None


def _command_tuple(command: str | Iterable[str]) -> tuple[str, ...]:
    """A command given as one program path or as an argv prefix."""
    if isinstance(command, str):
        return (command,)
    return tuple(command)


def _optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.define(eq=False)
class AgentRuntime:
    """Builds pi invocations for one workspace, state dir and credential source.

    ``offline_model`` is the running offline model (``None`` when it is turned
    off); its URL is read at each invocation, so the service may start after
    the runtime is built.  ``model`` (``provider/id``) falls back to the
    ``PI_SERVICE_MODEL`` entry of ``environ``.
    """

    pi_command: tuple[str, ...] = attrs.field(converter=_command_tuple)
    workspace: Path = attrs.field(converter=Path)
    state_dir: Path = attrs.field(converter=Path)
    model: str | None = None
    secrets_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    environ: Mapping[str, str] = attrs.field(factory=dict)
    sandbox: bool = True
    offline_model: OfflineEndpoint | None = None
    sandbox_network: bool = False
    _warned_unsandboxed: bool = attrs.field(default=False, init=False)
    _known_secrets: set[str] = attrs.field(factory=set, init=False)
    _secrets_loaded: bool = attrs.field(default=False, init=False)
    _secret_pattern: re.Pattern[str] | None = attrs.field(default=None, init=False)

    # -- paths ----------------------------------------------------------------

    @property
    def agent_dir(self) -> Path:
        return self.state_dir / "pi-agent"

    @property
    def home_dir(self) -> Path:
        return self.state_dir / "home"

    @property
    def package_overlay_dir(self) -> Path:
        return self.state_dir / "pi-package"

    @property
    def sessions_dir(self) -> Path:
        return self.agent_dir / "sessions"

    @property
    def sandbox_shell(self) -> Path:
        return self.state_dir / "sandbox" / "bash"

    # -- credentials and status -----------------------------------------------

    def credentials(self) -> Credentials:
        """The keys as they are now (re-read so a rotated secret file takes effect).

        Every value seen is remembered for ``redact``, old ones included.
        """
        credentials = load_credentials(self.environ, self.secrets_dir)
        self._secrets_loaded = True
        self._remember_secrets(credentials.secret_values)
        if self.offline_model is not None:
            self._remember_secrets([self.offline_model.api_key])
        return credentials

    def _remember_secrets(self, values: Iterable[str]) -> None:
        new = {value for value in values if value} - self._known_secrets
        if new:
            self._known_secrets |= new
            ordered = sorted(self._known_secrets, key=len, reverse=True)
            self._secret_pattern = re.compile("|".join(re.escape(value) for value in ordered))

    def _offline_available(self) -> bool:
        endpoint = self.offline_model
        if endpoint is None:
            return False
        try:
            endpoint.url  # noqa: B018 - raises until the service listens
        except RuntimeError:
            return False
        return True

    def _select(self, credentials: Credentials) -> _Selection:
        offline_available = self._offline_available()
        requested = self.model or self.environ.get(MODEL_ENV_VARIABLE) or None
        setup_problem = self._setup_problem()
        if requested is not None:
            try:
                ref = parse_model(requested)
            except ValueError as error:
                return _Selection(CredentialStatus(False, False, requested, str(error)))
            if ref.provider == OFFLINE_PROVIDER:
                if not offline_available:
                    problem = (
                        f"model {ref.label} is pibridge's offline model, which is turned off; "
                        "enable it or name a provider model"
                    )
                    return _Selection(CredentialStatus(False, True, OFFLINE_MODEL_LABEL, problem))
                return self._ready(
                    True, OFFLINE_MODEL_LABEL, OFFLINE_PROVIDER, ref.model_id, setup_problem
                )
            if credentials.key_for(ref.provider) is None:
                problem = (
                    f"model {ref.label} needs a key for provider {ref.provider!r}: "
                    + how_to_configure(ref.provider, self.secrets_dir)
                )
                return _Selection(CredentialStatus(False, False, ref.label, problem))
            return self._ready(False, ref.label, ref.provider, ref.model_id, setup_problem)
        providers = credentials.providers
        if providers:
            provider = next((p for p in PREFERRED_PROVIDERS if p in providers), providers[0])
            label = f"{provider} (pi's default model)"
            return self._ready(False, label, provider, None, setup_problem)
        if offline_available:
            return self._ready(
                True, OFFLINE_MODEL_LABEL, OFFLINE_PROVIDER, OFFLINE_MODEL_ID, setup_problem
            )
        names = ", ".join(PROVIDER_KEY_VARIABLES[p][-1] for p in PREFERRED_PROVIDERS)
        where = (
            f"a file of that name in {self.secrets_dir}"
            if self.secrets_dir is not None
            else "a file of that name in the secrets directory (--secrets-dir)"
        )
        problem = (
            "no model provider key is configured and the offline model is off: "
            f"set one of {names} (or another key pi knows) in the server's environment "
            f"or write it to {where}, optionally choosing the model with "
            f"{MODEL_ENV_VARIABLE}=provider/id"
        )
        return _Selection(CredentialStatus(False, False, "no model", problem))

    def _ready(
        self,
        offline: bool,
        label: str,
        provider: str,
        model_id: str | None,
        setup_problem: str | None,
    ) -> _Selection:
        return _Selection(
            CredentialStatus(setup_problem is None, offline, label, setup_problem),
            provider,
            model_id,
        )

    def _setup_problem(self) -> str | None:
        if not GUARD_EXTENSION.is_file():
            return (
                f"pibridge's workspace guard for pi is missing ({GUARD_EXTENSION}); "
                "reinstall pibridge with its package data"
            )
        if self.sandbox and find_bwrap() is None:
            return (
                "the tool sandbox needs bubblewrap, which is not installed: "
                "install it (apt-get install bubblewrap) or run with --no-sandbox"
            )
        return None

    def status(self) -> CredentialStatus:
        """Whether pi can be started now, with which model, or what is missing."""
        return self._select(self.credentials()).status

    def redact(self, text: str) -> str:
        """Replace every secret value the server knows with ``[redacted]``.

        Cheap enough to run on every streamed delta: the keys are read on first
        use and again at each ``status()``/``invocation()``.
        """
        if not self._secrets_loaded:
            self.credentials()
        if self._secret_pattern is None:
            return text
        return self._secret_pattern.sub(REDACTED, text)

    # -- invocation -------------------------------------------------------------

    def invocation(
        self,
        mode: Literal["rpc", "tui"] | str,
        *,
        session_file: Path | None = None,
        term: str | None = None,
    ) -> PiInvocation:
        """Prepare the isolated agent dir and describe the pi process to spawn.

        Raises ``AgentNotReady`` (with the operator-facing problem) when
        ``status()`` is not ready, ``ValueError`` for an unknown mode.
        """
        if mode not in ("rpc", "tui"):
            raise ValueError(f"pi runs in mode 'rpc' or 'tui', not {mode!r}")
        credentials = self.credentials()
        selection = self._select(credentials)
        if not selection.status.ready:
            raise AgentNotReady(selection.status.problem or "pi is not ready")
        overlay = self._prepare(credentials)
        argv: list[str] = [*self.pi_command]
        if mode == "rpc":
            argv += ["--mode", "rpc"]
        argv += ["--offline", "--no-extensions", "--extension", str(GUARD_EXTENSION)]
        if selection.provider is not None:
            argv += ["--provider", selection.provider]
        if selection.model_id is not None:
            argv += ["--model", selection.model_id]
        if session_file is not None:
            # pi silently keeps nothing when the session file's directory is missing.
            session_file.parent.mkdir(parents=True, exist_ok=True)
            argv += ["--session", str(session_file)]
        else:
            argv += ["--session-dir", str(self.sessions_dir)]
        env = {
            "PATH": self.environ.get("PATH") or DEFAULT_PATH,
            "HOME": str(self.home_dir),
            "LANG": "C.UTF-8",
            "PI_CODING_AGENT_DIR": str(self.agent_dir),
            "PI_OFFLINE": "1",
            "PI_SKIP_VERSION_CHECK": "1",
            "PIBRIDGE_WORKSPACE": str(self.workspace),
            "PIBRIDGE_HIDDEN_PATHS": json.dumps(self._hidden_paths()),
        }
        if overlay:
            env["PI_PACKAGE_DIR"] = str(self.package_overlay_dir)
        if mode == "tui":
            # TERM comes from the remote client: only a plain terminal name is passed on.
            env["TERM"] = term if term and _TERM_NAME.fullmatch(term) else DEFAULT_TERM
        return PiInvocation(tuple(argv), env, str(self.workspace))

    def _hidden_paths(self) -> list[str]:
        hidden = [str(self.state_dir.resolve())]
        if self.secrets_dir is not None:
            hidden.append(str(self.secrets_dir.resolve()))
        return hidden

    def _prepare(self, credentials: Credentials) -> bool:
        """Write pi's agent dir; says whether the package overlay is in place."""
        for directory in (self.state_dir, self.agent_dir, self.home_dir, self.sessions_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.agent_dir.chmod(0o700)
        self.workspace.mkdir(parents=True, exist_ok=True)
        overlay = self._write_package_overlay()
        write_private(self.agent_dir / "models.json", json.dumps(self._models(), indent=2))
        auth = {key.provider: {"type": "api_key", "key": key.value} for key in credentials.keys}
        write_private(self.agent_dir / "auth.json", json.dumps(auth, indent=2))
        write_private(self.agent_dir / "settings.json", json.dumps(self._settings(), indent=2))
        return overlay

    def _models(self) -> dict[str, Any]:
        endpoint = self.offline_model
        if not self._offline_available() or endpoint is None:
            return {"providers": {}}
        return {
            "providers": {
                OFFLINE_PROVIDER: {
                    "baseUrl": endpoint.url,
                    "api": "openai-completions",
                    "apiKey": endpoint.api_key,
                    "compat": {
                        "supportsDeveloperRole": False,
                        "supportsReasoningEffort": False,
                        "supportsStore": False,
                    },
                    "models": [
                        {
                            "id": OFFLINE_MODEL_ID,
                            "name": OFFLINE_MODEL_LABEL,
                            "reasoning": False,
                            "input": ["text"],
                            "contextWindow": 128000,
                            "maxTokens": 16384,
                        }
                    ],
                }
            }
        }

    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "quietStartup": True,
            "enableInstallTelemetry": False,
            "collapseChangelog": True,
            "sessionDir": str(self.sessions_dir),
            "packages": [],
            "extensions": [],
        }
        selection = self._select(self.credentials())
        if selection.status.offline:
            # The offline model fails on purpose; retrying only slows tests down.
            settings["retry"] = {"enabled": False, "provider": {"maxRetries": 0}}
        if self.sandbox:
            bwrap = find_bwrap()
            if bwrap is None:
                raise AgentNotReady(self._setup_problem() or "bwrap is missing")
            policy = SandboxPolicy(
                bwrap=bwrap,
                workspace=self.workspace.resolve(),
                hidden=tuple(Path(path) for path in self._hidden_paths()),
                network=self.sandbox_network,
                path=self.environ.get("PATH") or DEFAULT_PATH,
            )
            write_sandbox_shell(self.sandbox_shell, policy)
            settings["shellPath"] = str(self.sandbox_shell)
        else:
            if not self._warned_unsandboxed:
                self._warned_unsandboxed = True
                _log.warn(
                    "SANDBOX OFF: pi's bash tool runs unconfined as this server's user; "
                    "it can read the state dir, the secrets dir and provider keys"
                )
        return settings

    def _write_package_overlay(self) -> bool:
        """Mirror pi's package with a project config dir name a workspace cannot use.

        Without it a workspace's ``.pi/settings.json`` could replace the
        sandboxed ``shellPath``, so a sandboxed runtime refuses to go on when
        the command is not a recognisable pi install.
        """
        package_dir = _pi_package_dir(self.pi_command)
        if package_dir is None:
            problem = (
                f"cannot find pi's package from the command {list(self.pi_command)!r}, so a "
                "workspace's .pi/settings.json could not be kept from changing how pi runs"
            )
            if self.sandbox:
                raise AgentNotReady(problem + "; give the path of pi's own executable")
            _log.warn("{problem}", problem=problem)
            return False
        overlay = self.package_overlay_dir
        overlay.mkdir(parents=True, exist_ok=True)
        manifest = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
        token_file = overlay / ".config-dir-name"
        if token_file.exists():
            config_dir_name = token_file.read_text(encoding="utf-8").strip()
        else:
            config_dir_name = ".pibridge-ignored-" + secrets.token_hex(12)
            write_private(token_file, config_dir_name)
        manifest.setdefault("piConfig", {})["configDir"] = config_dir_name
        write_private(overlay / "package.json", json.dumps(manifest, indent=1), 0o644)
        for entry in package_dir.iterdir():
            if entry.name == "package.json":
                continue
            link = overlay / entry.name
            if link.is_symlink() and Path(os.readlink(link)) == entry:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(entry)
        return True


def _pi_package_dir(pi_command: Sequence[str]) -> Path | None:
    """The installed pi package directory, found from the command that runs pi."""
    for part in reversed(pi_command):
        found = shutil.which(part) or (part if os.path.exists(part) else None)
        if found is None:
            continue
        directory = Path(found).resolve().parent
        while directory != directory.parent:
            manifest = directory / "package.json"
            if manifest.is_file():
                name = json.loads(manifest.read_text(encoding="utf-8")).get("name")
                if name == "@mariozechner/pi-coding-agent":
                    return directory
            directory = directory.parent
    return None


__all__ = [
    "AgentNotReady",
    "AgentRuntime",
    "CredentialStatus",
    "ModelRef",
    "OfflineEndpoint",
    "PiInvocation",
]
