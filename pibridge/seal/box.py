"""End-to-end sealing of terminal objects between a client and a bot, across a relay.

A relay is untrusted: it may read, drop, replay or forge objects. Every object
payload is sealed with libsodium's ``crypto_box`` (X25519 + XSalsa20-Poly1305,
through PyNaCl) between a fresh ephemeral key the client makes for each attach
and the bot's long-term identity key, which the client pins. Only the bot can
open what the client seals, only the bot can produce what the client accepts,
and the user's token travels inside.

Wire form of a sealed object::

    version (1) | bot key id (8) | client ephemeral public key (32) | counter (8) | box

The nonce is ``direction (1) | channel (1) | 14 zero bytes | counter (8)``:
each (direction, channel) pair counts up from 1 under a key used for one
attach only, so a nonce is never reused. A receiver accepts only counters
above the last one it opened on that channel, so a replayed or reordered
object is refused rather than delivered twice.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from pathlib import Path
from typing import Final

import attrs
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from pibridge.secret_files import load_or_create_secret

VERSION: Final = 1
KEY_ID_BYTES: Final = 8
HEADER_BYTES: Final = 1 + KEY_ID_BYTES + 32 + 8
#: Poly1305 tag that every box carries.
MAC_BYTES: Final = 16
KEY_PREFIX: Final = "pibridge-bot-"


class SealError(Exception):
    """An object that cannot be opened: not for us, forged, replayed or damaged."""


class Direction(enum.IntEnum):
    CLIENT_TO_BOT = 1
    BOT_TO_CLIENT = 2


class Channel(enum.IntEnum):
    CONTROL = 1
    STDIN = 2
    RESIZE = 3
    STDOUT = 4


def key_id(public: PublicKey) -> bytes:
    return hashlib.blake2b(bytes(public), digest_size=KEY_ID_BYTES).digest()


def format_public_key(public: PublicKey) -> str:
    """How a person sees and pins a bot's identity: ``pibridge-bot-<base64url>``."""
    return KEY_PREFIX + base64.urlsafe_b64encode(bytes(public)).decode().rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"a bot key starts with {KEY_PREFIX!r}")
    body = text[len(KEY_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise ValueError("a bot key is base64url after its prefix") from None
    if len(raw) != 32:
        raise ValueError(f"a bot key holds 32 bytes, not {len(raw)}")
    return PublicKey(raw)


def load_or_create_identity(state_dir: Path) -> PrivateKey:
    """The bot's long-term key, kept 0600 under the state directory."""
    raw = load_or_create_secret(
        state_dir / "identity" / "bot.key",
        lambda: bytes(PrivateKey.generate()),
        lambda raw: len(raw) == 32,
    )
    return PrivateKey(raw)


def _nonce(direction: Direction, channel: Channel, counter: int) -> bytes:
    return bytes([direction, channel]) + bytes(14) + counter.to_bytes(8, "big")


@attrs.frozen
class SealedHeader:
    bot_key_id: bytes
    client_key: PublicKey
    counter: int

    @classmethod
    def parse(cls, data: bytes) -> SealedHeader:
        if len(data) < HEADER_BYTES + MAC_BYTES:
            raise SealError("object too short to be sealed")
        if data[0] != VERSION:
            raise SealError(f"unknown sealing version {data[0]}")
        bot_id = data[1 : 1 + KEY_ID_BYTES]
        client = PublicKey(data[1 + KEY_ID_BYTES : 1 + KEY_ID_BYTES + 32])
        counter = int.from_bytes(data[HEADER_BYTES - 8 : HEADER_BYTES], "big")
        return cls(bot_id, client, counter)


@attrs.define(eq=False)
class SealedLink:
    """One attach's sealed link, the same object on both ends with ``sending`` swapped."""

    box: Box = attrs.field(repr=False)
    bot_key_id: bytes
    client_key: PublicKey
    sending: Direction
    _sent: dict[Channel, int] = attrs.field(factory=dict, init=False)
    _opened: dict[Channel, int] = attrs.field(factory=dict, init=False)
    failures: int = attrs.field(default=0, init=False)

    @classmethod
    def for_client(cls, bot_key: PublicKey) -> SealedLink:
        """A fresh ephemeral key for one attach to the bot whose key the client pinned."""
        ephemeral = PrivateKey.generate()
        return cls(
            Box(ephemeral, bot_key), key_id(bot_key), ephemeral.public_key, Direction.CLIENT_TO_BOT
        )

    @classmethod
    def for_bot(cls, identity: PrivateKey, first_object: bytes) -> SealedLink:
        """The bot's end, from the first object a client sealed to it."""
        header = SealedHeader.parse(first_object)
        if header.bot_key_id != key_id(identity.public_key):
            raise SealError("sealed for another bot")
        return cls(
            Box(identity, header.client_key),
            header.bot_key_id,
            header.client_key,
            Direction.BOT_TO_CLIENT,
        )

    @property
    def receiving(self) -> Direction:
        return (
            Direction.BOT_TO_CLIENT
            if self.sending is Direction.CLIENT_TO_BOT
            else Direction.CLIENT_TO_BOT
        )

    def seal(self, channel: Channel, payload: bytes) -> bytes:
        counter = self._sent.get(channel, 0) + 1
        self._sent[channel] = counter
        sealed = self.box.encrypt(payload, _nonce(self.sending, channel, counter)).ciphertext
        header = (
            bytes([VERSION]) + self.bot_key_id + bytes(self.client_key) + counter.to_bytes(8, "big")
        )
        return header + sealed

    def open(self, channel: Channel, data: bytes) -> bytes:
        """The payload, or `SealError` (and a failure counted) for anything not genuine."""
        try:
            header = SealedHeader.parse(data)
            if header.bot_key_id != self.bot_key_id or header.client_key != self.client_key:
                raise SealError("sealed under another key")
            if header.counter <= self._opened.get(channel, 0):
                raise SealError("replayed or reordered object")
            try:
                payload: bytes = self.box.decrypt(
                    data[HEADER_BYTES:], _nonce(self.receiving, channel, header.counter)
                )
            except CryptoError:
                raise SealError("object does not open: forged or damaged") from None
        except SealError:
            self.failures += 1
            raise
        self._opened[channel] = header.counter
        return payload
