"""Connect and listen for MoQ sessions over the QUIC adapter (ALPN ``moq-00``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import classImplements

from pibridge.moq.publisher import TrackRegistry
from pibridge.moq.session import (
    DEFAULT_MAX_REQUESTS,
    MoqSession,
    NamespaceCallback,
)
from pibridge.quic import (
    IQuicConnectionHandler,
    PeerVerification,
    QuicListeningPort,
    QuicServerService,
    QuicSettings,
    TlsIdentity,
    connectQuic,
    listenQuic,
)

ALPN = "moq-00"

classImplements(MoqSession, IQuicConnectionHandler)


def moqSettings(settings: QuicSettings | None = None) -> QuicSettings:
    """QUIC settings for MoQ: ALPN ``moq-00`` (DATAGRAM stays negotiated, as MoQ requires)."""
    settings = settings or QuicSettings()
    return attrs.evolve(settings, alpn_protocols=(ALPN,))


def connectMoq(
    reactor: Any,
    host: str,
    port: int,
    *,
    verification: PeerVerification,
    tracks: TrackRegistry | None = None,
    path: str | None = None,
    authorization: bytes | None = None,
    on_namespace: NamespaceCallback | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    settings: QuicSettings | None = None,
    timeout: float = 10.0,
) -> Deferred[MoqSession]:
    """Open a QUIC connection and a MoQ session; fires once SETUP is exchanged.

    Fails with the QUIC adapter's handshake errors, or with
    :class:`~pibridge.moq.subscriber.SessionClosed` if the server closes the
    session during setup (for one, when no version is in common).
    """
    session = MoqSession(
        reactor,
        is_client=True,
        tracks=tracks if tracks is not None else TrackRegistry(),
        path=path,
        authorization=authorization,
        on_namespace=on_namespace,
        max_requests=max_requests,
        setup_timeout=timeout,
    )
    connected = connectQuic(
        reactor,
        host,
        port,
        session,
        verification=verification,
        settings=moqSettings(settings),
        timeout=timeout,
    )
    return connected.addCallback(lambda _connection: session.whenReady())


def moqSessionFactory(
    reactor: Any,
    *,
    tracks: TrackRegistry | None = None,
    on_session: Callable[[MoqSession], object] | None = None,
    on_namespace: NamespaceCallback | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    setup_timeout: float = 10.0,
) -> Callable[[], MoqSession]:
    """A QUIC handler factory making one server-side :class:`MoqSession` per connection.

    Every session shares ``tracks``; ``on_session`` gets each one once it is set up.
    """
    registry = tracks if tracks is not None else TrackRegistry()

    def handler() -> MoqSession:
        session = MoqSession(
            reactor,
            is_client=False,
            tracks=registry,
            on_namespace=on_namespace,
            max_requests=max_requests,
            setup_timeout=setup_timeout,
        )
        if on_session is not None:
            ready = session.whenReady()
            ready.addCallback(on_session)
            ready.addErrback(lambda _failure: None)  # closed during setup: nothing to report
        return session

    return handler


def listenMoq(
    reactor: Any,
    port: int,
    identity: TlsIdentity,
    *,
    tracks: TrackRegistry | None = None,
    on_session: Callable[[MoqSession], object] | None = None,
    on_namespace: NamespaceCallback | None = None,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    interface: str = "",
    settings: QuicSettings | None = None,
    setup_timeout: float = 10.0,
) -> QuicListeningPort:
    """Serve MoQ on ``interface:port``; see :func:`moqSessionFactory` for the options."""
    factory = moqSessionFactory(
        reactor,
        tracks=tracks,
        on_session=on_session,
        on_namespace=on_namespace,
        max_requests=max_requests,
        setup_timeout=setup_timeout,
    )
    return listenQuic(
        reactor, port, identity, factory, interface=interface, settings=moqSettings(settings)
    )


class MoqServerService(QuicServerService):
    """A Twisted service serving MoQ while running (stopping closes every session)."""

    def __init__(
        self,
        reactor: Any,
        port: int,
        identity: TlsIdentity,
        *,
        tracks: TrackRegistry | None = None,
        on_session: Callable[[MoqSession], object] | None = None,
        on_namespace: NamespaceCallback | None = None,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        interface: str = "",
        settings: QuicSettings | None = None,
    ) -> None:
        super().__init__(
            reactor,
            port,
            identity,
            moqSessionFactory(
                reactor,
                tracks=tracks,
                on_session=on_session,
                on_namespace=on_namespace,
                max_requests=max_requests,
            ),
            interface=interface,
            settings=moqSettings(settings),
        )
