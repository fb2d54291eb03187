"""Sealed objects: only the pinned bot opens them; forgeries and replays are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.public import PrivateKey

from pibridge.seal.box import (
    Channel,
    SealedLink,
    SealError,
    format_public_key,
    load_or_create_identity,
    parse_public_key,
)


def pair() -> tuple[SealedLink, SealedLink, PrivateKey]:
    bot_key = PrivateKey.generate()
    client = SealedLink.for_client(bot_key.public_key)
    first = client.seal(Channel.CONTROL, b'{"type":"open"}')
    bot = SealedLink.for_bot(bot_key, first)
    assert bot.open(Channel.CONTROL, first) == b'{"type":"open"}'
    return client, bot, bot_key


@given(st.lists(st.tuples(st.sampled_from(list(Channel)), st.binary(max_size=2048)), max_size=20))
def test_objects_open_in_order_on_both_ends(objects: list[tuple[Channel, bytes]]) -> None:
    client, bot, _ = pair()
    for channel, payload in objects:
        assert bot.open(channel, client.seal(channel, payload)) == payload
        assert client.open(channel, bot.seal(channel, payload)) == payload


def test_the_relay_sees_no_plaintext() -> None:
    client, _, _ = pair()
    secret = b"token=eyJhbGciOiJIUzI1NiJ9.SECRET"
    assert secret not in client.seal(Channel.CONTROL, secret)


def test_a_replayed_object_is_refused_and_counted() -> None:
    client, bot, _ = pair()
    keystroke = client.seal(Channel.STDIN, b"rm -rf /\r")
    assert bot.open(Channel.STDIN, keystroke) == b"rm -rf /\r"
    with pytest.raises(SealError, match="replayed"):
        bot.open(Channel.STDIN, keystroke)
    assert bot.failures == 1


def test_an_object_moved_to_another_channel_does_not_open() -> None:
    client, bot, _ = pair()
    resize = client.seal(Channel.RESIZE, b'{"type":"resize"}')
    with pytest.raises(SealError, match="forged or damaged"):
        bot.open(Channel.STDIN, resize)


def test_a_flipped_bit_does_not_open() -> None:
    client, bot, _ = pair()
    sealed = bytearray(client.seal(Channel.STDIN, b"ls\r"))
    sealed[-1] ^= 1
    with pytest.raises(SealError):
        bot.open(Channel.STDIN, bytes(sealed))


def test_a_forger_without_the_clients_key_cannot_inject() -> None:
    _, bot, bot_key = pair()
    forger = SealedLink.for_client(bot_key.public_key)  # knows the bot's public key only
    with pytest.raises(SealError, match="another key"):
        bot.open(Channel.STDIN, forger.seal(Channel.STDIN, b"evil\r"))


def test_objects_for_another_bot_are_recognised_without_trying_keys() -> None:
    client = SealedLink.for_client(PrivateKey.generate().public_key)
    with pytest.raises(SealError, match="another bot"):
        SealedLink.for_bot(PrivateKey.generate(), client.seal(Channel.CONTROL, b"{}"))


def test_an_impostor_bot_cannot_answer_the_client() -> None:
    client, _, _ = pair()
    impostor_key = PrivateKey.generate()
    impostor = SealedLink.for_bot(
        impostor_key, SealedLink.for_client(impostor_key.public_key).seal(Channel.CONTROL, b"x")
    )
    with pytest.raises(SealError):
        client.open(Channel.STDOUT, impostor.seal(Channel.STDOUT, b"fake prompt $ "))


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02" + bytes(80), bytes(48)])
def test_garbage_is_a_seal_error(data: bytes) -> None:
    _, bot, _ = pair()
    with pytest.raises(SealError):
        bot.open(Channel.CONTROL, data)


def test_identity_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_identity(tmp_path)
    again = load_or_create_identity(tmp_path)
    assert bytes(first) == bytes(again)
    assert (tmp_path / "identity" / "bot.key").stat().st_mode & 0o777 == 0o600


def test_public_keys_round_trip_as_text() -> None:
    public = PrivateKey.generate().public_key
    text = format_public_key(public)
    assert text.startswith("pibridge-bot-")
    assert parse_public_key(text) == public
    with pytest.raises(ValueError, match="starts with"):
        parse_public_key("ssh-ed25519 AAAA")
    with pytest.raises(ValueError, match="32 bytes"):
        parse_public_key("pibridge-bot-AAAA")
