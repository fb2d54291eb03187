"""Signed session tokens and the rules that bind a terminal session to its owner.

Tokens are JWTs signed with HS256 under a key the bot generates once into
``<state_dir>/terminal/token.key`` (mode 0600). A token names a user (``sub``)
and an agent group (``grp``) and expires (``exp``). Errors never repeat the
token: it is a credential.
"""

from __future__ import annotations

import argparse
import enum
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Final

import attrs
import jwt
from attrs import define, frozen

from pibridge.secret_files import load_or_create_secret

ALGORITHM: Final = "HS256"
KEY_BYTES: Final = 32
MAX_TOKEN_CHARS: Final = 8 * 1024
DEFAULT_TTL_SECONDS: Final = 12 * 3600
#: Clock skew tolerated between the minting and the verifying host.
LEEWAY_SECONDS: Final = 30.0


class RefusalReason(enum.StrEnum):
    MISSING = "missing"
    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_OWNER = "wrong_owner"
    NOT_BOUND_CLIENT = "not_bound_client"
    UNKNOWN_SESSION = "unknown_session"
    TOO_MANY_SESSIONS = "too_many_sessions"


_MESSAGES: Final = {
    RefusalReason.MISSING: "no token was presented",
    RefusalReason.MALFORMED: "the token is malformed",
    RefusalReason.FORGED: "the token signature is not valid",
    RefusalReason.EXPIRED: "the token has expired",
    RefusalReason.NOT_YET_VALID: "the token is not valid yet",
    RefusalReason.WRONG_OWNER: "the session belongs to another user or group",
    RefusalReason.NOT_BOUND_CLIENT: "this client is not attached to the session",
    RefusalReason.UNKNOWN_SESSION: "no such session",
    RefusalReason.TOO_MANY_SESSIONS: "the session limit is reached",
}


class Refused(Exception):
    """An open or object that must be rejected; ``reason`` is machine-readable."""

    def __init__(self, reason: RefusalReason, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        text = _MESSAGES[reason] if detail is None else f"{_MESSAGES[reason]}: {detail}"
        super().__init__(text)


@frozen
class Identity:
    user: str
    group: str


def load_or_create_key(state_dir: Path) -> bytes:
    """Read the signing key, creating it (0600, never overwritten) on first use."""
    path = state_dir / "terminal" / "token.key"
    key = load_or_create_secret(path, lambda: secrets.token_bytes(KEY_BYTES), lambda _key: True)
    if len(key) < KEY_BYTES:
        # Replacing it would quietly void every token minted with it: say so instead.
        raise ValueError(f"{path} is shorter than {KEY_BYTES} bytes")
    return key


@define(eq=False)
class TokenAuthority:
    """Mints and verifies session tokens; the clock is injected so expiry is testable."""

    key: bytes = attrs.field(repr=False)
    clock: Callable[[], float] = time.time

    def mint(
        self,
        user: str,
        group: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        not_before: float | None = None,
    ) -> str:
        if not user or not group:
            raise ValueError("user and group must not be empty")
        if ttl_seconds <= 0:
            raise ValueError("ttl must be positive")
        now = int(self.clock())
        claims: dict[str, object] = {
            "sub": user,
            "grp": group,
            "iat": now,
            "exp": now + int(ttl_seconds),
            "jti": str(uuid.uuid4()),
        }
        if not_before is not None:
            claims["nbf"] = int(not_before)
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> Identity:
        """The identity a token proves, or `Refused` saying why not (never quoting it)."""
        if not token:
            raise Refused(RefusalReason.MISSING)
        if len(token) > MAX_TOKEN_CHARS:
            raise Refused(RefusalReason.MALFORMED, "too long")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                options={
                    "require": ["sub", "grp", "exp", "iat", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise Refused(RefusalReason.FORGED) from None
        except jwt.MissingRequiredClaimError as e:
            raise Refused(RefusalReason.MALFORMED, f"missing claim {e.claim}") from None
        except jwt.InvalidTokenError:
            raise Refused(RefusalReason.MALFORMED) from None
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, object]) -> Identity:
        user, group = claims["sub"], claims["grp"]
        if not isinstance(user, str) or not isinstance(group, str) or not user or not group:
            raise Refused(RefusalReason.MALFORMED, "sub and grp must be non-empty strings")
        times = {name: claims.get(name) for name in ("exp", "iat", "nbf")}
        for name, value in times.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise Refused(RefusalReason.MALFORMED, f"{name} must be a number")
        now = self.clock()
        expires = times["exp"]
        assert isinstance(expires, int | float)
        if now >= expires + LEEWAY_SECONDS:
            raise Refused(RefusalReason.EXPIRED)
        not_before = times["nbf"]
        if isinstance(not_before, int | float) and now + LEEWAY_SECONDS < not_before:
            raise Refused(RefusalReason.NOT_YET_VALID)
        return Identity(user=user, group=group)


@frozen
class Binding:
    """Who owns a session, and which attached client may speak for it now."""

    session_id: str
    owner: Identity
    client: Hashable


@define(eq=False)
class SessionRegistry:
    """Pure authorisation decisions for terminal sessions.

    A session is bound at its first open to (user, group). Later opens by the
    same owner reattach (and replace the previous client); opens by anyone
    else are refused. Objects are accepted only from the bound client.
    """

    max_sessions: int = 64
    _bindings: dict[str, Binding] = attrs.field(factory=dict, init=False)

    def open(self, session_id: str, owner: Identity, client: Hashable) -> tuple[Binding, Hashable]:
        """Bind or reattach; return the binding and the client it replaced (or None)."""
        current = self._bindings.get(session_id)
        if current is None:
            if len(self._bindings) >= self.max_sessions:
                raise Refused(RefusalReason.TOO_MANY_SESSIONS)
            binding = Binding(session_id, owner, client)
            self._bindings[session_id] = binding
            return binding, None
        if current.owner != owner:
            raise Refused(RefusalReason.WRONG_OWNER)
        binding = attrs.evolve(current, client=client)
        self._bindings[session_id] = binding
        replaced = None if current.client == client else current.client
        return binding, replaced

    def check(self, session_id: str, client: Hashable) -> Binding:
        """The binding, if ``client`` is the one attached to the session; else `Refused`."""
        current = self._bindings.get(session_id)
        if current is None:
            raise Refused(RefusalReason.UNKNOWN_SESSION)
        if current.client != client:
            raise Refused(RefusalReason.NOT_BOUND_CLIENT)
        return current

    def detach(self, session_id: str, client: Hashable) -> None:
        """Forget the client (the session stays bound to its owner for reattach)."""
        current = self._bindings.get(session_id)
        if current is not None and current.client == client:
            self._bindings[session_id] = attrs.evolve(current, client=None)

    def release(self, session_id: str) -> None:
        self._bindings.pop(session_id, None)

    def binding(self, session_id: str) -> Binding | None:
        return self._bindings.get(session_id)

    def __len__(self) -> int:
        return len(self._bindings)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h`` or ``7d`` as seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 12h, 7d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pibridge-token",
        description=(
            "Print a signed token that lets USER attach terminal sessions of agent "
            "group GROUP on this bot. The signing key is created on first use in "
            "STATE_DIR/terminal/token.key (mode 0600); run this on the bot host with "
            "the same --state-dir as the service. Give the token to pibridge-attach "
            "with --token-file (preferred) or --token."
        ),
        epilog=(
            "Example: pibridge-token --state-dir /var/lib/pibridge --user alice "
            "--group team1 --ttl 12h > ~/.pibridge-token"
        ),
    )
    parser.add_argument("--state-dir", required=True, type=Path, help="the service's state dir")
    parser.add_argument("--user", required=True, help="the user the token identifies")
    parser.add_argument("--group", required=True, help="the agent group the user may reach")
    parser.add_argument(
        "--ttl",
        default="12h",
        type=parse_duration,
        help="lifetime: seconds or a number with s/m/h/d (default: 12h)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pibridge-token``."""
    arguments = _argument_parser().parse_args(argv)
    authority = TokenAuthority(load_or_create_key(arguments.state_dir))
    sys.stdout.write(authority.mint(arguments.user, arguments.group, arguments.ttl) + "\n")
    return 0
