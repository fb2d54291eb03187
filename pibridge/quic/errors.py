"""Failures the QUIC adapter hands to connection handlers and stream protocols.

Every way a connection or a stream can end has its own type, so the layer above
can tell an idle timeout from a peer's close or a refused certificate without
parsing messages.
"""

from __future__ import annotations

import attrs


class QuicError(Exception):
    """Base class of every failure raised or delivered by the QUIC adapter."""


@attrs.define(auto_exc=True, eq=False)
class ConnectionClosed(QuicError):
    """The connection ended: closed by the peer, by us, or by a protocol error.

    ``error_code`` is the QUIC error code (transport codes below 0x100, TLS
    alerts at 0x100 + alert, application codes otherwise), ``reason`` the
    reason phrase and ``by_peer`` whether the peer sent CONNECTION_CLOSE.
    """

    error_code: int
    reason: str
    by_peer: bool
    frame_type: int | None = None

    def __str__(self) -> str:
        who = "peer" if self.by_peer else "local end"
        text = f"QUIC connection closed by {who} (error code 0x{self.error_code:x}"
        if self.reason:
            text += f", reason {self.reason!r}"
        return text + ")"


@attrs.define(auto_exc=True, eq=False)
class IdleTimeout(ConnectionClosed):
    """Nothing was heard from the peer for the negotiated idle timeout."""

    def __str__(self) -> str:
        return "QUIC connection idle timeout: no packets from the peer"


@attrs.define(auto_exc=True, eq=False)
class HandshakeFailed(QuicError):
    """The handshake did not complete; ``message`` says why in plain words."""

    message: str
    error_code: int | None = None

    def __str__(self) -> str:
        return self.message


@attrs.define(auto_exc=True, eq=False)
class HandshakeTimeout(HandshakeFailed):
    """The server did not complete the handshake in time."""


@attrs.define(auto_exc=True, eq=False)
class CertificateRefused(HandshakeFailed):
    """The peer's certificate was refused by the configured verification."""


@attrs.define(auto_exc=True, eq=False)
class FingerprintMismatch(CertificateRefused):
    """A pinned certificate fingerprint did not match what the server presented.

    ``known_hosts`` and ``line`` name the entry to edit when the pin comes from a
    known-hosts file (both ``None`` for a pin given explicitly).
    """

    known_hosts: str | None = None
    line: int | None = None


@attrs.define(auto_exc=True, eq=False)
class StreamReset(QuicError):
    """The peer abandoned its sending side of the stream with RESET_STREAM."""

    error_code: int

    def __str__(self) -> str:
        return f"QUIC stream reset by peer (error code {self.error_code})"


@attrs.define(auto_exc=True, eq=False)
class StreamStopped(QuicError):
    """The peer asked us to stop sending (STOP_SENDING) and nothing is left to read."""

    error_code: int

    def __str__(self) -> str:
        return f"QUIC stream stopped by peer (error code {self.error_code})"


@attrs.define(auto_exc=True, eq=False)
class StreamAborted(QuicError):
    """We aborted the stream locally (``abortConnection``)."""

    error_code: int

    def __str__(self) -> str:
        return f"QUIC stream aborted locally (error code {self.error_code})"
