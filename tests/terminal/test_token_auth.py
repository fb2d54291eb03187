"""Tokens and session binding: every refusal case, and no token text in errors."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from pibridge.terminal.auth import (
    Identity,
    RefusalReason,
    Refused,
    SessionRegistry,
    TokenAuthority,
    load_or_create_key,
    main,
    parse_duration,
)

KEY = b"k" * 32
SID = "123e4567-e89b-12d3-a456-426614174000"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _refusal(authority: TokenAuthority, token: str | None) -> Refused:
    with pytest.raises(Refused) as info:
        authority.verify(token)
    if token:
        assert token not in str(info.value)
        assert token not in repr(info.value)
    return info.value


def test_minted_token_verifies_to_its_identity() -> None:
    authority = TokenAuthority(KEY, FakeClock())
    token = authority.mint("alice", "team1")
    assert authority.verify(token) == Identity("alice", "team1")
    claims = jwt.decode(
        token, KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert set(claims) >= {"sub", "grp", "exp", "iat", "jti"}


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_refused(token: str | None) -> None:
    assert _refusal(TokenAuthority(KEY), token).reason is RefusalReason.MISSING


def test_expired_token_is_refused() -> None:
    clock = FakeClock()
    authority = TokenAuthority(KEY, clock)
    token = authority.mint("alice", "team1", ttl_seconds=60)
    clock.now += 60 + 31
    assert _refusal(authority, token).reason is RefusalReason.EXPIRED


def test_token_signed_with_another_key_is_refused_as_forged() -> None:
    token = TokenAuthority(b"x" * 32).mint("alice", "team1")
    assert _refusal(TokenAuthority(KEY), token).reason is RefusalReason.FORGED


def test_tampered_claims_are_refused_as_forged() -> None:
    authority = TokenAuthority(KEY)
    header, payload, signature = authority.mint("alice", "team1").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["grp"] = "admins"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    token = f"{header}.{forged_payload}.{signature}"
    assert _refusal(authority, token).reason is RefusalReason.FORGED


def test_unsigned_alg_none_token_is_refused() -> None:
    token = jwt.encode(
        {"sub": "a", "grp": "g", "exp": 2e9, "iat": 1, "jti": "j"}, None, algorithm="none"
    )
    assert _refusal(TokenAuthority(KEY), token).reason is RefusalReason.MALFORMED


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "x" * 9000, "eyJhbGciOiJIUzI1NiJ9.!!!.sig"],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert _refusal(TokenAuthority(KEY), token).reason is RefusalReason.MALFORMED


def test_token_without_group_claim_is_refused() -> None:
    token = jwt.encode({"sub": "alice", "exp": 2e9, "iat": 1, "jti": "j"}, KEY, algorithm="HS256")
    refusal = _refusal(TokenAuthority(KEY), token)
    assert refusal.reason is RefusalReason.MALFORMED
    assert "grp" in str(refusal)


def test_open_for_a_session_bound_to_another_owner_is_refused() -> None:
    registry = SessionRegistry()
    registry.open(SID, Identity("alice", "team1"), client="conn-a")
    for intruder in (Identity("mallory", "team1"), Identity("alice", "team2")):
        with pytest.raises(Refused) as info:
            registry.open(SID, intruder, client="conn-m")
        assert info.value.reason is RefusalReason.WRONG_OWNER
    assert registry.check(SID, "conn-a").client == "conn-a"


def test_objects_from_anyone_but_the_bound_client_are_refused() -> None:
    registry = SessionRegistry()
    registry.open(SID, Identity("alice", "team1"), client="conn-a")
    with pytest.raises(Refused) as info:
        registry.check(SID, "conn-b")
    assert info.value.reason is RefusalReason.NOT_BOUND_CLIENT
    with pytest.raises(Refused) as info:
        registry.check("00000000-0000-0000-0000-000000000000", "conn-a")
    assert info.value.reason is RefusalReason.UNKNOWN_SESSION


def test_reattach_by_the_owner_replaces_the_old_client() -> None:
    registry = SessionRegistry()
    owner = Identity("alice", "team1")
    registry.open(SID, owner, client="conn-a")
    registry.detach(SID, "conn-a")
    with pytest.raises(Refused):
        registry.check(SID, "conn-a")
    binding, replaced = registry.open(SID, owner, client="conn-b")
    assert replaced is None
    _, replaced = registry.open(SID, owner, client="conn-c")
    assert replaced == "conn-b"
    assert registry.check(SID, "conn-c") == binding.__class__(SID, owner, "conn-c")


def test_session_limit() -> None:
    registry = SessionRegistry(max_sessions=1)
    registry.open(SID, Identity("a", "g"), client=1)
    with pytest.raises(Refused) as info:
        registry.open("00000000-0000-0000-0000-000000000000", Identity("a", "g"), client=1)
    assert info.value.reason is RefusalReason.TOO_MANY_SESSIONS


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    path = tmp_path / "terminal" / "token.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) == 32
    assert load_or_create_key(tmp_path) == key


def test_token_command_prints_a_token_the_bot_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--state-dir", str(tmp_path), "--user", "alice", "--group", "team1", "--ttl", "1h"])
        == 0
    )
    token = capsys.readouterr().out.strip()
    authority = TokenAuthority(load_or_create_key(tmp_path))
    assert authority.verify(token) == Identity("alice", "team1")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600


def test_token_command_help_documents_usage() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from pibridge.terminal.auth import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for word in ("--state-dir", "--user", "--group", "--ttl", "token.key"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
