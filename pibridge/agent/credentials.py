"""Provider keys and the model choice, taken from the server only.

Keys come from the server's environment or from a secrets directory laid
out the way Vault Agent injection writes it: one file per key, named after
the environment variable (``ANTHROPIC_API_KEY``) or the provider
(``anthropic``), the value being the file's content without the trailing
newline.  A file in the secrets directory wins over the environment, since
that is where rotation happens.  Keys never reach pi's environment: the
runtime writes them to ``auth.json`` (mode 0600) in pi's isolated agent dir.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

# Providers whose keys pi 0.73.1 reads from the environment
# (pi-ai ``env-api-keys``), with the variable names in pi's order of precedence.
PROVIDER_KEY_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_OAUTH_TOKEN", "ANTHROPIC_API_KEY"),
    "openai": ("OPENAI_API_KEY",),
    "azure-openai-responses": ("AZURE_OPENAI_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "google": ("GEMINI_API_KEY",),
    "google-vertex": ("GOOGLE_CLOUD_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "cerebras": ("CEREBRAS_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "vercel-ai-gateway": ("AI_GATEWAY_API_KEY",),
    "zai": ("ZAI_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "minimax": ("MINIMAX_API_KEY",),
    "minimax-cn": ("MINIMAX_CN_API_KEY",),
    "moonshotai": ("MOONSHOT_API_KEY",),
    "moonshotai-cn": ("MOONSHOT_API_KEY",),
    "huggingface": ("HF_TOKEN",),
    "fireworks": ("FIREWORKS_API_KEY",),
    "opencode": ("OPENCODE_API_KEY",),
    "opencode-go": ("OPENCODE_API_KEY",),
    "kimi-coding": ("KIMI_API_KEY",),
    "cloudflare-workers-ai": ("CLOUDFLARE_API_KEY",),
    "cloudflare-ai-gateway": ("CLOUDFLARE_API_KEY",),
    "xiaomi": ("XIAOMI_API_KEY",),
    "xiaomi-token-plan-cn": ("XIAOMI_TOKEN_PLAN_CN_API_KEY",),
    "xiaomi-token-plan-ams": ("XIAOMI_TOKEN_PLAN_AMS_API_KEY",),
    "xiaomi-token-plan-sgp": ("XIAOMI_TOKEN_PLAN_SGP_API_KEY",),
}

# Order in which a provider is picked when keys exist but no model is named.
PREFERRED_PROVIDERS: tuple[str, ...] = ("anthropic", "openai", "google")

MODEL_ENV_VARIABLE = "PI_SERVICE_MODEL"
MIN_SECRET_LENGTH = 6

_MODEL_PATTERN = re.compile(r"^(?P<provider>[a-z0-9][a-z0-9._-]*)/(?P<id>\S+)$")


@attrs.frozen
class ModelRef:
    """A model named as ``provider/id``."""

    provider: str
    model_id: str

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model_id}"


def parse_model(text: str) -> ModelRef:
    """Validate ``provider/id`` (the id may itself contain slashes)."""
    match = _MODEL_PATTERN.match(text.strip())
    if match is None:
        raise ValueError(
            f"model must be given as provider/id (for example anthropic/claude-sonnet-4-5), "
            f"not {text!r}"
        )
    return ModelRef(match.group("provider"), match.group("id"))


@attrs.frozen(repr=False)
class ProviderKey:
    """One provider key and where it came from (the value never shows in a repr)."""

    provider: str
    value: str
    source: str

    def __repr__(self) -> str:
        return f"ProviderKey(provider={self.provider!r}, source={self.source!r})"


@attrs.frozen
class Credentials:
    """The provider keys the server holds, plus every secret value it knows for redaction."""

    keys: tuple[ProviderKey, ...] = ()
    secret_values: frozenset[str] = attrs.field(default=frozenset(), repr=False)

    def key_for(self, provider: str) -> ProviderKey | None:
        return next((key for key in self.keys if key.provider == provider), None)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(key.provider for key in self.keys)


def _read_secret_file(path: Path) -> str | None:
    try:
        if not path.is_file():
            return None
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _secret_files(secrets_dir: Path | None) -> Iterable[Path]:
    if secrets_dir is None or not secrets_dir.is_dir():
        return ()
    return sorted(path for path in secrets_dir.iterdir() if path.is_file())


def load_credentials(environ: Mapping[str, str], secrets_dir: Path | None) -> Credentials:
    """Gather provider keys from a secrets directory and the environment."""
    keys: list[ProviderKey] = []
    secret_values: set[str] = set()
    for path in _secret_files(secrets_dir):
        value = _read_secret_file(path)
        # Every file there is treated as a secret, a known key or not; values too
        # short to be a credential are left alone so redaction stays readable.
        if value is not None and len(value) >= MIN_SECRET_LENGTH:
            secret_values.add(value)
    for variables in PROVIDER_KEY_VARIABLES.values():
        for name in variables:
            value = environ.get(name, "").strip()
            if value:
                secret_values.add(value)
    for provider, variables in PROVIDER_KEY_VARIABLES.items():
        found: ProviderKey | None = None
        if secrets_dir is not None:
            for name in (*variables, provider):
                value = _read_secret_file(secrets_dir / name)
                if value is not None:
                    found = ProviderKey(provider, value, f"secrets file {secrets_dir / name}")
                    break
        if found is None:
            for name in variables:
                value = environ.get(name, "").strip()
                if value:
                    found = ProviderKey(provider, value, f"environment variable {name}")
                    break
        if found is not None:
            keys.append(found)
    return Credentials(tuple(keys), frozenset(secret_values))


def how_to_configure(provider: str, secrets_dir: Path | None) -> str:
    """Tell an operator exactly where a key for ``provider`` is looked for."""
    variables = PROVIDER_KEY_VARIABLES.get(provider)
    if not variables:
        return (
            f"pibridge cannot hold a key for provider {provider!r}; "
            f"use one of: {', '.join(sorted(PROVIDER_KEY_VARIABLES))}"
        )
    variable = variables[-1]
    where = f"set {variable} in the server's environment"
    if secrets_dir is not None:
        where += f" or write it to the file {secrets_dir / variable}"
    else:
        where += (
            " or write it to a file named " + variable + " in the secrets directory (--secrets-dir)"
        )
    return where
