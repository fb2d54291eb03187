"""A MoQ Transport session over one QUIC connection, for either role.

The session is the ``IQuicConnectionHandler`` of its connection. It speaks the
control stream (the first client-initiated bidirectional stream), keeps the
request-id books in both directions, answers SUBSCRIBEs from a
:class:`~pibridge.moq.publisher.TrackRegistry` and feeds subscribed tracks to
Twisted protocols. Any protocol violation, wherever it is found, ends in one
place: :meth:`MoqSession._violation` closes the connection with the draft's
error code.

The lifecycle is the table ``LIFECYCLE`` below.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import pibridge
from pibridge.moq.codec import SUPPORTED_VERSIONS, codec_for_version
from pibridge.moq.draft14.control import (
    ControlStreamParser,
    decode_token,
    encode_message,
    encode_token,
)
from pibridge.moq.draft14.messages import (
    AliasType,
    AuthorizationToken,
    ClientSetup,
    ControlMessage,
    Fetch,
    FetchError,
    GoAway,
    KeyValuePair,
    MaxRequestId,
    Namespace,
    Parameters,
    Publish,
    PublishDone,
    PublishError,
    PublishNamespace,
    PublishNamespaceCancel,
    PublishNamespaceDone,
    PublishNamespaceError,
    PublishNamespaceOk,
    RequestsBlocked,
    ServerSetup,
    SetupParameter,
    Subscribe,
    SubscribeError,
    SubscribeNamespace,
    SubscribeNamespaceError,
    SubscribeNamespaceOk,
    SubscribeOk,
    SubscribeUpdate,
    TrackStatus,
    TrackStatusError,
    Unsubscribe,
    UnsubscribeNamespace,
    UnsupportedRequest,
    VersionParameter,
)
from pibridge.moq.errors import (
    ProtocolViolation,
    SessionErrorCode,
    StreamResetCode,
    SubscribeErrorCode,
    SubscribeNamespaceErrorCode,
)
from pibridge.moq.filters import AbsoluteStart, Start, filter_fields
from pibridge.moq.publisher import (
    SubscribeRequest,
    TrackRegistry,
    _Delivery,
)
from pibridge.moq.subscriber import (
    IncomingSubgroup,
    SessionClosed,
    SubscribeRefused,
    Subscription,
)
from pibridge.quic.errors import ConnectionClosed

_log = Logger()

#: How many requests we let the peer have open at once (advertised in SETUP).
DEFAULT_MAX_REQUESTS = 100
#: Subgroup streams with an unknown alias we hold at once, and for how long.
MAX_ORPHAN_STREAMS = 32
ORPHAN_TIMEOUT = 10.0
#: Our own requests waiting for the peer's MAX_REQUEST_ID.
MAX_QUEUED_REQUESTS = 1024


class SessionState(enum.Enum):
    AWAITING_SETUP = "awaiting setup"
    ESTABLISHED = "established"
    DRAINING = "draining"
    CLOSED = "closed"


class SessionEvent(enum.Enum):
    SETUP_COMPLETED = "setup completed"
    GOAWAY_SENT = "GOAWAY sent"
    GOAWAY_RECEIVED = "GOAWAY received"
    CLOSED = "closed"


_S = SessionState
_E = SessionEvent

#: (state, event) -> next state. Anything missing is not allowed.
LIFECYCLE: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (_S.AWAITING_SETUP, _E.SETUP_COMPLETED): _S.ESTABLISHED,
    (_S.AWAITING_SETUP, _E.CLOSED): _S.CLOSED,
    (_S.ESTABLISHED, _E.GOAWAY_SENT): _S.DRAINING,
    (_S.ESTABLISHED, _E.GOAWAY_RECEIVED): _S.DRAINING,
    (_S.ESTABLISHED, _E.CLOSED): _S.CLOSED,
    (_S.DRAINING, _E.GOAWAY_SENT): _S.DRAINING,
    (_S.DRAINING, _E.GOAWAY_RECEIVED): _S.DRAINING,
    (_S.DRAINING, _E.CLOSED): _S.CLOSED,
    (_S.CLOSED, _E.CLOSED): _S.CLOSED,
}


class GoingAway(Exception):
    """The peer sent GOAWAY: make new requests on a new session (at ``uri``, if given)."""

    def __init__(self, uri: bytes) -> None:
        super().__init__(f"the peer is going away (new session at {uri!r})")
        self.uri = uri


@attrs.frozen
class NamespaceAnnouncement:
    """A PUBLISH_NAMESPACE (``active``) or PUBLISH_NAMESPACE_DONE seen on a session."""

    session: MoqSession
    namespace: Namespace
    active: bool
    authorization: tuple[bytes, ...] = ()


NamespaceCallback = Callable[[NamespaceAnnouncement], None]


class _Connection(Protocol):
    def openStream(self, protocol: IProtocol, *, unidirectional: bool = False) -> Any: ...
    def close(self, error_code: int = 0, reason: str = "") -> None: ...


@attrs.define(eq=False)
class RequestIds:
    """Request-id books: ours (parity, MAX_REQUEST_ID from the peer) and the peer's.

    The peer may have ``window`` requests open; as its requests finish we raise
    the limit (like QUIC's MAX_STREAMS), in steps of half a window.
    """

    is_client: bool
    window: int
    next_ours: int = 0
    peer_limit: int = 0
    blocked_reported: int | None = None
    expected_theirs: int = 0
    granted: int = 0
    finished_theirs: int = 0

    def __attrs_post_init__(self) -> None:
        self.next_ours = 0 if self.is_client else 1
        self.expected_theirs = 1 if self.is_client else 0
        self.granted = self.expected_theirs + 2 * self.window

    def canSend(self) -> bool:
        return self.next_ours < self.peer_limit

    def take(self) -> int:
        request_id = self.next_ours
        self.next_ours += 2
        return request_id

    def raisePeerLimit(self, limit: int) -> None:
        if limit <= self.peer_limit:
            raise ProtocolViolation(f"MAX_REQUEST_ID {limit} does not increase {self.peer_limit}")
        self.peer_limit = limit

    def acceptTheirs(self, request_id: int) -> None:
        if request_id != self.expected_theirs:
            raise ProtocolViolation(
                f"request id {request_id}, expected {self.expected_theirs}",
                SessionErrorCode.INVALID_REQUEST_ID,
            )
        if request_id >= self.granted:
            raise ProtocolViolation(
                f"request id {request_id} is not below MAX_REQUEST_ID {self.granted}",
                SessionErrorCode.TOO_MANY_REQUESTS,
            )
        self.expected_theirs += 2

    def finishTheirs(self) -> int | None:
        """One of the peer's requests ended; return a new limit to advertise, if due."""
        self.finished_theirs += 1
        first = 1 if self.is_client else 0
        limit = first + 2 * (self.window + self.finished_theirs)
        if limit - self.granted >= self.window:  # half a window of ids (2 per request)
            self.granted = limit
            return limit
        return None


@attrs.define(eq=False)
class _OutgoingRequest:
    message: ControlMessage
    deferred: Deferred[Any]
    subscription: Subscription | None = None
    callback: NamespaceCallback | None = None


class _ControlStream(TwistedProtocol):
    """The control stream's protocol: bytes in, messages to the session."""

    def __init__(self, session: MoqSession) -> None:
        self.session = session
        self.parser = ControlStreamParser()

    def dataReceived(self, data: bytes) -> None:
        if self.session.state == SessionState.CLOSED:
            return
        try:
            messages = self.parser.feed(data)
            for message in messages:
                if self.session.isClosed:
                    return
                self.session._controlMessage(message)
        except ProtocolViolation as violation:
            self.session._violation(violation)
        except Exception:
            # A bug here or in an application hook: end this session, keep the process.
            _log.failure("MoQ control message handling failed")
            self.session.close(SessionErrorCode.INTERNAL_ERROR, "internal error")

    def readConnectionLost(self) -> None:
        self.session._violation(ProtocolViolation("the peer closed the control stream"))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if reason.check(ConnectionClosed):
            return  # the whole connection ended; the session hears it next
        if self.session.state != SessionState.CLOSED and self.session._connection_open:
            self.session._violation(ProtocolViolation("the control stream ended"))


def _implementation() -> str:
    return f"pibridge/{pibridge.__version__}"


@attrs.define(eq=False)
class MoqSession:
    """One MoQ session; give it to the QUIC adapter as the connection handler.

    ``tracks`` are the local tracks peers may SUBSCRIBE to. A client sends
    ``path`` (PATH) and ``authorization`` (an AUTHORIZATION TOKEN, USE_VALUE) in
    CLIENT_SETUP; ``on_namespace`` hears every PUBLISH_NAMESPACE(_DONE) from the
    peer, whether or not it matches a :meth:`subscribeNamespace` prefix.
    """

    clock: IReactorTime
    is_client: bool
    tracks: TrackRegistry = attrs.field(factory=TrackRegistry)
    path: str | None = None
    authorization: bytes | None = None
    max_requests: int = DEFAULT_MAX_REQUESTS
    on_namespace: NamespaceCallback | None = None
    setup_timeout: float | None = 10.0
    implementation: str = attrs.field(factory=_implementation)
    state: SessionState = SessionState.AWAITING_SETUP
    version: int | None = None
    peer_path: str | None = None
    peer_authorization: tuple[bytes, ...] = ()
    peer_implementation: str | None = None
    goaway_uri: bytes | None = None
    peer_blocked_at: int | None = None
    close_code: int | None = None
    close_reason: str = ""
    _connection: _Connection | None = None
    _connection_open: bool = False
    _control: Any = None
    _control_protocol: _ControlStream | None = None
    _ids: RequestIds = attrs.field(init=False)
    _queued: list[tuple[Callable[[int], ControlMessage], _OutgoingRequest]] = attrs.field(
        factory=list
    )
    _outgoing: dict[int, _OutgoingRequest] = attrs.field(factory=dict)
    _subscriptions_by_alias: dict[int, Subscription] = attrs.field(factory=dict)
    _subscriptions: dict[int, Subscription] = attrs.field(factory=dict)
    _ended_aliases: set[int] = attrs.field(factory=set)
    _orphans: list[IncomingSubgroup] = attrs.field(factory=list)
    _deliveries: dict[int, _Delivery] = attrs.field(factory=dict)
    _subscribed_tracks: set[tuple[Namespace, bytes]] = attrs.field(factory=set)
    _next_alias: int = 0
    _published: dict[Namespace, int] = attrs.field(factory=dict)
    _peer_namespaces: dict[Namespace, int] = attrs.field(factory=dict)
    _peer_namespace_subscriptions: dict[Namespace, int] = attrs.field(factory=dict)
    _namespace_subscriptions: dict[Namespace, NamespaceCallback] = attrs.field(factory=dict)
    _goaway_received: bool = False
    _goaway_sent: bool = False
    _ready: list[Deferred[MoqSession]] = attrs.field(factory=list)
    _closed: list[Deferred[SessionClosed]] = attrs.field(factory=list)
    _close_failure: Failure | None = None
    _seen_bidi: bool = False
    _setup_timer: IDelayedCall | None = None

    def __attrs_post_init__(self) -> None:
        self._ids = RequestIds(self.is_client, self.max_requests)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def isClosed(self) -> bool:
        return self.state == SessionState.CLOSED

    def _fire(self, event: SessionEvent) -> None:
        try:
            self.state = LIFECYCLE[(self.state, event)]
        except KeyError:
            raise ProtocolViolation(f"{event.value} while {self.state.value}") from None

    def whenReady(self) -> Deferred[MoqSession]:
        """Fires with the session once SETUP is exchanged (errback if it closes first)."""
        if self.state in (SessionState.ESTABLISHED, SessionState.DRAINING):
            return succeed(self)
        if self._close_failure is not None:
            return fail(self._closedError())
        d: Deferred[MoqSession] = Deferred()
        self._ready.append(d)
        return d

    def whenClosed(self) -> Deferred[SessionClosed]:
        """Fires with a :class:`SessionClosed` (code and reason) once the session has ended."""
        if self._close_failure is not None:
            return succeed(self._closedError())
        d: Deferred[SessionClosed] = Deferred()
        self._closed.append(d)
        return d

    def close(self, code: int = SessionErrorCode.NO_ERROR, reason: str = "") -> None:
        """Close the session (and its QUIC connection) with ``code``."""
        if self.state == SessionState.CLOSED:
            return
        self.close_code = code
        self.close_reason = reason
        self._fire(SessionEvent.CLOSED)
        if self._connection is not None and self._connection_open:
            self._connection.close(code, reason)

    def goAway(self, new_session_uri: bytes = b"", timeout: float | None = None) -> None:
        """Tell the peer we will close soon (a client never sends a URI).

        With ``timeout``, the session closes with GOAWAY_TIMEOUT if the peer has
        not closed it by then.
        """
        if self._goaway_sent or self.state not in (SessionState.ESTABLISHED, SessionState.DRAINING):
            return
        if self.is_client and new_session_uri:
            raise ValueError("a client's GOAWAY carries no URI")
        self._goaway_sent = True
        self._fire(SessionEvent.GOAWAY_SENT)
        self._send(GoAway(new_session_uri))
        if timeout is not None:
            self.clock.callLater(
                timeout, self.close, SessionErrorCode.GOAWAY_TIMEOUT, "GOAWAY not honoured in time"
            )

    def _violation(self, violation: ProtocolViolation) -> None:
        """The one exit for a misbehaving peer: close with the draft's error code."""
        if self.state == SessionState.CLOSED:
            return
        _log.warn(
            "closing MoQ session: {code} {reason}",
            code=violation.code.name,
            reason=violation.reason,
        )
        self.close(violation.code, violation.reason)

    # -- IQuicConnectionHandler ---------------------------------------------------------

    def connectionMade(self, connection: _Connection) -> None:
        self._connection = connection
        self._connection_open = True
        if self.setup_timeout is not None:
            self._setup_timer = self.clock.callLater(self.setup_timeout, self._setupTimedOut)
        if self.is_client:
            protocol = _ControlStream(self)
            self._control_protocol = protocol
            self._control = connection.openStream(protocol)
            self._send(self._clientSetup())

    def streamOpened(self, stream: Any) -> IProtocol | None:
        if stream.isUnidirectional:
            return IncomingSubgroup(self)
        if self.is_client or self._seen_bidi:
            self._violation(ProtocolViolation("a second bidirectional stream"))
            return None
        self._seen_bidi = True
        protocol = _ControlStream(self)
        self._control_protocol = protocol
        self._control = stream
        return protocol

    def connectionLost(self, reason: Failure) -> None:
        self._connection_open = False
        if self.state != SessionState.CLOSED:
            code = getattr(reason.value, "error_code", SessionErrorCode.INTERNAL_ERROR)
            self.close_code = code
            self.close_reason = getattr(reason.value, "reason", reason.getErrorMessage())
            self._fire(SessionEvent.CLOSED)
        self._teardown(reason)

    def _teardown(self, reason: Failure) -> None:
        self._cancelSetupTimer()
        self._close_failure = reason
        closed = self._closedError()
        for orphan in self._orphans:
            orphan.discard()
        self._orphans.clear()
        for delivery in list(self._deliveries.values()):
            delivery.cancel(StreamResetCode.SESSION_CLOSED)
        self._deliveries.clear()
        for subscription in list(self._subscriptions.values()):
            subscription._end(Failure(closed))
        pending = list(self._outgoing.values()) + [request for _, request in self._queued]
        self._outgoing.clear()
        self._queued.clear()
        for request in pending:
            if not request.deferred.called:
                request.deferred.errback(Failure(closed))
        ready, self._ready = self._ready, []
        for d in ready:
            d.errback(Failure(closed))
        waiters, self._closed = self._closed, []
        for waiter in waiters:
            waiter.callback(closed)

    def _closedError(self) -> SessionClosed:
        return SessionClosed(
            self.close_code if self.close_code is not None else 0, self.close_reason
        )

    # -- setup --------------------------------------------------------------------------

    def _clientSetup(self) -> ClientSetup:
        parameters: list[KeyValuePair] = []
        if self.path is not None:
            parameters.append(KeyValuePair(SetupParameter.PATH, self.path.encode()))
        parameters.append(KeyValuePair(SetupParameter.MAX_REQUEST_ID, self._ids.granted))
        if self.authorization is not None:
            token = AuthorizationToken.use_value(self.authorization)
            parameters.append(KeyValuePair(SetupParameter.AUTHORIZATION_TOKEN, encode_token(token)))
        parameters.append(KeyValuePair(SetupParameter.IMPLEMENTATION, self.implementation.encode()))
        return ClientSetup(SUPPORTED_VERSIONS, tuple(parameters))

    def _serverSetup(self, version: int) -> ServerSetup:
        return ServerSetup(
            version,
            (
                KeyValuePair(SetupParameter.MAX_REQUEST_ID, self._ids.granted),
                KeyValuePair(SetupParameter.IMPLEMENTATION, self.implementation.encode()),
            ),
        )

    def _setupParameters(self, parameters: Parameters) -> None:
        seen: set[int] = set()
        tokens: list[bytes] = []
        for parameter in parameters:
            if parameter.type in (SetupParameter.PATH, SetupParameter.MAX_REQUEST_ID):
                if parameter.type in seen:
                    raise ProtocolViolation(f"setup parameter {parameter.type} repeated")
                seen.add(parameter.type)
            if parameter.type == SetupParameter.PATH:
                if self.is_client:
                    raise ProtocolViolation("PATH from a server", SessionErrorCode.INVALID_PATH)
                assert isinstance(parameter.value, bytes)
                try:
                    self.peer_path = parameter.value.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolViolation(
                        "PATH is not UTF-8", SessionErrorCode.MALFORMED_PATH
                    ) from None
            elif parameter.type == SetupParameter.MAX_REQUEST_ID:
                assert isinstance(parameter.value, int)
                self._ids.peer_limit = parameter.value
            elif parameter.type == SetupParameter.AUTHORIZATION_TOKEN:
                assert isinstance(parameter.value, bytes)
                tokens.append(self._setupToken(parameter.value))
            elif parameter.type == SetupParameter.IMPLEMENTATION:
                assert isinstance(parameter.value, bytes)
                self.peer_implementation = parameter.value.decode("utf-8", errors="replace")
        self.peer_authorization = tuple(tokens)

    def _setupToken(self, raw: bytes) -> bytes:
        token = decode_token(raw)
        # Our MAX_AUTH_TOKEN_CACHE_SIZE is the default 0: a REGISTER in SETUP is
        # treated as USE_VALUE, and no alias can ever be in use.
        if token.alias_type in (AliasType.REGISTER, AliasType.USE_VALUE):
            assert token.value is not None
            return token.value
        raise ProtocolViolation(
            f"token alias {token.alias} is not registered",
            SessionErrorCode.UNKNOWN_AUTH_TOKEN_ALIAS,
        )

    def _requestTokens(self, parameters: Parameters) -> tuple[bytes, ...]:
        tokens = []
        for parameter in parameters:
            if parameter.type == VersionParameter.AUTHORIZATION_TOKEN:
                assert isinstance(parameter.value, bytes)
                token = decode_token(parameter.value)
                if token.alias_type == AliasType.REGISTER:
                    raise ProtocolViolation(
                        "token cache is 0 bytes", SessionErrorCode.AUTH_TOKEN_CACHE_OVERFLOW
                    )
                if token.alias_type != AliasType.USE_VALUE:
                    raise ProtocolViolation(
                        f"token alias {token.alias} is not registered",
                        SessionErrorCode.UNKNOWN_AUTH_TOKEN_ALIAS,
                    )
                assert token.value is not None
                tokens.append(token.value)
        return tuple(tokens)

    def _tokenParameters(self, authorization: bytes | None) -> Parameters:
        if authorization is None:
            return ()
        token = encode_token(AuthorizationToken.use_value(authorization))
        return (KeyValuePair(VersionParameter.AUTHORIZATION_TOKEN, token),)

    def _setupTimedOut(self) -> None:
        self._setup_timer = None
        self._violation(
            ProtocolViolation("no SETUP in time", SessionErrorCode.CONTROL_MESSAGE_TIMEOUT)
        )

    def _cancelSetupTimer(self) -> None:
        if self._setup_timer is not None and self._setup_timer.active():
            self._setup_timer.cancel()
        self._setup_timer = None

    def _established(self) -> None:
        self._cancelSetupTimer()
        self._fire(SessionEvent.SETUP_COMPLETED)
        ready, self._ready = self._ready, []
        for d in ready:
            d.callback(self)
        self._flushQueued()

    # -- control messages in ---------------------------------------------------------------

    def _controlMessage(self, message: ControlMessage) -> None:
        if self.state == SessionState.AWAITING_SETUP:
            self._setupMessage(message)
            return
        handler = _HANDLERS.get(type(message))
        if handler is None:
            raise ProtocolViolation(f"{type(message).__name__} after setup")
        handler(self, message)

    def _setupMessage(self, message: ControlMessage) -> None:
        if self.is_client:
            if not isinstance(message, ServerSetup):
                raise ProtocolViolation(f"{type(message).__name__} before SERVER_SETUP")
            if message.version not in SUPPORTED_VERSIONS:
                raise ProtocolViolation(
                    f"server chose version {message.version:#x}, which we did not offer",
                    SessionErrorCode.VERSION_NEGOTIATION_FAILED,
                )
            self.version = message.version
            self._setupParameters(message.parameters)
            self._established()
            return
        if not isinstance(message, ClientSetup):
            raise ProtocolViolation(f"{type(message).__name__} before CLIENT_SETUP")
        chosen = next((v for v in message.versions if v in SUPPORTED_VERSIONS), None)
        if chosen is None:
            raise ProtocolViolation(
                "no offered version is supported", SessionErrorCode.VERSION_NEGOTIATION_FAILED
            )
        codec_for_version(chosen)
        self.version = chosen
        self._setupParameters(message.parameters)
        self._send(self._serverSetup(chosen))
        self._established()

    def _onGoAway(self, message: GoAway) -> None:
        if self._goaway_received:
            raise ProtocolViolation("a second GOAWAY")
        if not self.is_client and message.new_session_uri:
            raise ProtocolViolation("a client's GOAWAY carried a URI")
        self._goaway_received = True
        self.goaway_uri = message.new_session_uri
        self._fire(SessionEvent.GOAWAY_RECEIVED)
        _log.info("peer sent GOAWAY {uri!r}", uri=message.new_session_uri)

    def _onMaxRequestId(self, message: MaxRequestId) -> None:
        self._ids.raisePeerLimit(message.request_id)
        self._flushQueued()

    def _onRequestsBlocked(self, message: RequestsBlocked) -> None:
        self.peer_blocked_at = message.maximum_request_id
        _log.debug("peer is blocked at request id {limit}", limit=message.maximum_request_id)

    def _finishTheirs(self) -> None:
        limit = self._ids.finishTheirs()
        if limit is not None:
            self._send(MaxRequestId(limit))

    # SUBSCRIBE from the peer: we are the publisher.
    def _onSubscribe(self, message: Subscribe) -> None:
        self._ids.acceptTheirs(message.request_id)
        tokens = self._requestTokens(message.parameters)
        key = (message.namespace, message.track_name)
        if key in self._subscribed_tracks:
            raise ProtocolViolation("a second SUBSCRIBE to the same track")
        if self._goaway_sent:
            self._refuse(message.request_id, SubscribeErrorCode.INTERNAL_ERROR, "going away")
            return
        track = self.tracks.get(*key)
        if track is None:
            self._refuse(
                message.request_id, SubscribeErrorCode.TRACK_DOES_NOT_EXIST, "no such track"
            )
            return
        if track.check_subscriber is not None:
            request = SubscribeRequest(self, message.namespace, message.track_name, tokens, message)
            refusal = track.check_subscriber(request)
            if refusal is not None:
                _log.info(
                    "refused SUBSCRIBE to {track}: {reason}", track=track, reason=refusal.reason
                )
                self._refuse(message.request_id, refusal.code, refusal.reason)
                return
        if message.end_group is not None and message.end_group < track.group_id:
            self._refuse(message.request_id, SubscribeErrorCode.INVALID_RANGE, "range has ended")
            return
        alias = self._next_alias
        self._next_alias += 1
        self._subscribed_tracks.add(key)
        self._send(
            SubscribeOk(
                request_id=message.request_id,
                track_alias=alias,
                largest_location=track._largestLocation(),
            )
        )
        self._deliveries[message.request_id] = track._subscribe(self, message, alias)

    def _refuse(self, request_id: int, code: int, reason: str) -> None:
        self._send(SubscribeError(request_id, code, reason))
        self._finishTheirs()

    def _onUnsubscribe(self, message: Unsubscribe) -> None:
        delivery = self._deliveries.pop(message.request_id, None)
        if delivery is None:
            return  # already ended with PUBLISH_DONE: the messages crossed
        self._subscribed_tracks.discard((delivery.track.namespace, delivery.track.name))
        delivery.cancel(StreamResetCode.CANCELLED)
        self._finishTheirs()

    def _publishDone(self, delivery: _Delivery, code: int, reason: str) -> None:
        """A local track ended a subscription; called by the delivery after its FINs."""
        if self._deliveries.pop(delivery.request_id, None) is None:
            return
        self._subscribed_tracks.discard((delivery.track.namespace, delivery.track.name))
        self._send(PublishDone(delivery.request_id, code, delivery.stream_count, reason))
        self._finishTheirs()

    def _openDataStream(self, protocol: IProtocol) -> Any:
        assert self._connection is not None
        return self._connection.openStream(protocol, unidirectional=True)

    def _onUnsupportedRequest(self, message: UnsupportedRequest) -> None:
        """Requests outside our subset: the id is counted, the request refused."""
        self._ids.acceptTheirs(message.request_id)
        refusal: ControlMessage | None = None
        if isinstance(message, Fetch):
            refusal = FetchError(message.request_id, _NOT_SUPPORTED, "no history to fetch")
        elif isinstance(message, Publish):
            refusal = PublishError(message.request_id, _NOT_SUPPORTED, "PUBLISH not supported")
        elif isinstance(message, TrackStatus):
            refusal = TrackStatusError(message.request_id, _NOT_SUPPORTED, "not supported")
        if refusal is not None:
            self._send(refusal)
        self._finishTheirs()

    # Responses to our SUBSCRIBE.
    def _takeResponse(self, request_id: int, kind: type[Any]) -> _OutgoingRequest:
        request = self._outgoing.get(request_id)
        if request is None or not isinstance(request.message, kind):
            raise ProtocolViolation(f"response to unknown request {request_id}")
        del self._outgoing[request_id]
        return request

    def _onSubscribeOk(self, message: SubscribeOk) -> None:
        request = self._takeResponse(message.request_id, Subscribe)
        subscription = request.subscription
        assert subscription is not None
        if message.track_alias in self._subscriptions_by_alias:
            raise ProtocolViolation(
                f"track alias {message.track_alias} is in use",
                SessionErrorCode.DUPLICATE_TRACK_ALIAS,
            )
        subscription.alias = message.track_alias
        subscription.largest = message.largest_location
        self._ended_aliases.discard(message.track_alias)
        self._subscriptions_by_alias[message.track_alias] = subscription
        subscription.protocol.makeConnection(subscription)  # type: ignore[arg-type]
        request.deferred.callback(subscription)
        for orphan in [o for o in self._orphans if o.parser.header is not None]:
            assert orphan.parser.header is not None
            if orphan.parser.header.track_alias == message.track_alias:
                self._orphans.remove(orphan)
                if orphan.orphan_timer is not None and orphan.orphan_timer.active():
                    orphan.orphan_timer.cancel()
                orphan.orphan_timer = None
                subscription._attachStream(orphan)

    def _onSubscribeError(self, message: SubscribeError) -> None:
        request = self._takeResponse(message.request_id, Subscribe)
        subscription = request.subscription
        assert subscription is not None
        self._subscriptions.pop(subscription.request_id, None)
        subscription.ended = True
        request.deferred.errback(Failure(SubscribeRefused(message.error_code, message.reason)))

    def _onPublishDone(self, message: PublishDone) -> None:
        subscription = self._subscriptions.get(message.request_id)
        if subscription is None:
            return  # we unsubscribed already
        subscription._publishDone(message.status_code, message.stream_count, message.reason)

    # Namespaces published by the peer.
    def _onPublishNamespace(self, message: PublishNamespace) -> None:
        self._ids.acceptTheirs(message.request_id)
        tokens = self._requestTokens(message.parameters)
        previous = self._peer_namespaces.get(message.namespace)
        self._peer_namespaces[message.namespace] = message.request_id
        self._send(PublishNamespaceOk(message.request_id))
        if previous is not None:
            self._finishTheirs()
        self._announce(NamespaceAnnouncement(self, message.namespace, True, tokens))

    def _onPublishNamespaceDone(self, message: PublishNamespaceDone) -> None:
        if self._peer_namespaces.pop(message.namespace, None) is None:
            return
        self._finishTheirs()
        self._announce(NamespaceAnnouncement(self, message.namespace, False))

    def _announce(self, announcement: NamespaceAnnouncement) -> None:
        if self.on_namespace is not None:
            self.on_namespace(announcement)
        for prefix, callback in list(self._namespace_subscriptions.items()):
            if announcement.namespace[: len(prefix)] == prefix:
                callback(announcement)

    # Responses to our PUBLISH_NAMESPACE.
    def _onPublishNamespaceOk(self, message: PublishNamespaceOk) -> None:
        request = self._takeResponse(message.request_id, PublishNamespace)
        request.deferred.callback(None)

    def _onPublishNamespaceError(self, message: PublishNamespaceError) -> None:
        request = self._takeResponse(message.request_id, PublishNamespace)
        assert isinstance(request.message, PublishNamespace)
        self._published.pop(request.message.namespace, None)
        request.deferred.errback(Failure(SubscribeRefused(message.error_code, message.reason)))

    def _onPublishNamespaceCancel(self, message: PublishNamespaceCancel) -> None:
        if self._published.pop(message.namespace, None) is not None:
            _log.info(
                "peer cancelled our namespace {ns}: {reason}",
                ns=message.namespace,
                reason=message.reason,
            )

    # SUBSCRIBE_NAMESPACE from the peer.
    def _onSubscribeNamespace(self, message: SubscribeNamespace) -> None:
        self._ids.acceptTheirs(message.request_id)
        self._requestTokens(message.parameters)
        prefix = message.namespace_prefix
        for active in self._peer_namespace_subscriptions:
            shorter = min(len(active), len(prefix))
            if active[:shorter] == prefix[:shorter]:
                self._send(
                    SubscribeNamespaceError(
                        message.request_id,
                        SubscribeNamespaceErrorCode.NAMESPACE_PREFIX_OVERLAP,
                        "overlaps an active namespace subscription",
                    )
                )
                self._finishTheirs()
                return
        self._peer_namespace_subscriptions[prefix] = message.request_id
        self._send(SubscribeNamespaceOk(message.request_id))

    def _onUnsubscribeNamespace(self, message: UnsubscribeNamespace) -> None:
        if self._peer_namespace_subscriptions.pop(message.namespace_prefix, None) is not None:
            self._finishTheirs()

    def _onSubscribeNamespaceOk(self, message: SubscribeNamespaceOk) -> None:
        request = self._takeResponse(message.request_id, SubscribeNamespace)
        request.deferred.callback(None)

    def _onSubscribeNamespaceError(self, message: SubscribeNamespaceError) -> None:
        request = self._takeResponse(message.request_id, SubscribeNamespace)
        assert isinstance(request.message, SubscribeNamespace)
        self._namespace_subscriptions.pop(request.message.namespace_prefix, None)
        request.deferred.errback(Failure(SubscribeRefused(message.error_code, message.reason)))

    # -- control messages out --------------------------------------------------------------

    def _send(self, message: ControlMessage) -> None:
        if self.state == SessionState.CLOSED or self._control is None:
            return
        self._control.write(encode_message(message))

    def _request(self, build: Callable[[int], ControlMessage], request: _OutgoingRequest) -> None:
        """Send a new request now, or queue it until the peer raises MAX_REQUEST_ID."""
        if self.state == SessionState.CLOSED:
            request.deferred.errback(Failure(SessionClosed(self.close_code or 0, "closed")))
            return
        if self._goaway_received:
            # The draft: after a GOAWAY, initiate no new requests on this session.
            request.deferred.errback(Failure(GoingAway(self.goaway_uri or b"")))
            return
        if self.state == SessionState.AWAITING_SETUP or self._queued or not self._ids.canSend():
            if len(self._queued) >= MAX_QUEUED_REQUESTS:
                request.deferred.errback(Failure(RuntimeError("too many queued MoQ requests")))
                return
            self._queued.append((build, request))
            if self.state != SessionState.AWAITING_SETUP:
                self._reportBlocked()
            return
        self._sendRequest(build, request)

    def _sendRequest(
        self, build: Callable[[int], ControlMessage], request: _OutgoingRequest
    ) -> None:
        request_id = self._ids.take()
        message = build(request_id)
        request.message = message
        self._outgoing[request_id] = request
        if request.subscription is not None:
            request.subscription.request_id = request_id
            self._subscriptions[request_id] = request.subscription
        self._send(message)

    def _flushQueued(self) -> None:
        while self._queued and self._ids.canSend() and self.state != SessionState.CLOSED:
            build, request = self._queued.pop(0)
            self._sendRequest(build, request)
        if self._queued:
            self._reportBlocked()

    def _reportBlocked(self) -> None:
        if self._ids.blocked_reported != self._ids.peer_limit:
            self._ids.blocked_reported = self._ids.peer_limit
            self._send(RequestsBlocked(self._ids.peer_limit))

    # -- public API ---------------------------------------------------------------------

    def publishNamespace(
        self, namespace: Namespace | tuple[str, ...], authorization: bytes | None = None
    ) -> Deferred[None]:
        """PUBLISH_NAMESPACE: fires on PUBLISH_NAMESPACE_OK, errbacks on _ERROR."""
        ns = _namespace(namespace)
        d: Deferred[None] = Deferred()
        parameters = self._tokenParameters(authorization)

        def build(request_id: int) -> ControlMessage:
            self._published[ns] = request_id
            return PublishNamespace(request_id, ns, parameters)

        self._request(build, _OutgoingRequest(PublishNamespace(0, ns), d))
        return d

    def publishNamespaceDone(self, namespace: Namespace | tuple[str, ...]) -> None:
        """Withdraw a namespace published with :meth:`publishNamespace`."""
        ns = _namespace(namespace)
        if self._published.pop(ns, None) is not None:
            self._send(PublishNamespaceDone(ns))

    def subscribeNamespace(
        self,
        prefix: Namespace | tuple[str, ...],
        callback: NamespaceCallback,
        authorization: bytes | None = None,
    ) -> Deferred[None]:
        """SUBSCRIBE_NAMESPACE: ``callback`` hears every matching PUBLISH_NAMESPACE(_DONE).

        Namespaces the peer already published are reported at once. The Deferred
        fires on SUBSCRIBE_NAMESPACE_OK; some relays never answer, so callers
        should not wait for it before expecting announcements.
        """
        ns = _namespace(prefix)
        self._namespace_subscriptions[ns] = callback
        for namespace in list(self._peer_namespaces):
            if namespace[: len(ns)] == ns:
                callback(NamespaceAnnouncement(self, namespace, True))
        d: Deferred[None] = Deferred()
        parameters = self._tokenParameters(authorization)
        self._request(
            lambda request_id: SubscribeNamespace(request_id, ns, parameters),
            _OutgoingRequest(SubscribeNamespace(0, ns), d, callback=callback),
        )
        return d

    def unsubscribeNamespace(self, prefix: Namespace | tuple[str, ...]) -> None:
        ns = _namespace(prefix)
        if self._namespace_subscriptions.pop(ns, None) is not None:
            self._send(UnsubscribeNamespace(ns))

    def subscribe(
        self,
        namespace: Namespace | tuple[str, ...],
        track: bytes | str,
        protocol: IProtocol,
        start: Start | None = None,
        authorization: bytes | None = None,
        priority: int = 128,
    ) -> Deferred[Subscription]:
        """SUBSCRIBE to a track; each object's payload goes to ``protocol.dataReceived``.

        Fires with the :class:`Subscription` (the protocol's transport) on
        SUBSCRIBE_OK; errbacks with :class:`SubscribeRefused` on SUBSCRIBE_ERROR.
        """
        ns = _namespace(namespace)
        name = track.encode() if isinstance(track, str) else bytes(track)
        filter_type, location, end_group = filter_fields(start or AbsoluteStart(0, 0))
        parameters = self._tokenParameters(authorization)
        d: Deferred[Subscription] = Deferred()
        subscription = Subscription(self, -1, ns, name, protocol)

        def build(request_id: int) -> ControlMessage:
            return Subscribe(
                request_id=request_id,
                namespace=ns,
                track_name=name,
                filter_type=filter_type,
                start=location,
                end_group=end_group,
                subscriber_priority=priority,
                parameters=parameters,
            )

        self._request(
            build,
            _OutgoingRequest(build(0), d, subscription=subscription),
        )
        return d

    # -- used by subscriptions and streams ---------------------------------------------------

    @property
    def _clock(self) -> IReactorTime:
        return self.clock

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription.request_id in self._subscriptions:
            self._send(Unsubscribe(subscription.request_id))

    def _subscriptionEnded(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription.request_id, None)
        if subscription.alias is not None:
            if self._subscriptions_by_alias.get(subscription.alias) is subscription:
                del self._subscriptions_by_alias[subscription.alias]
            self._ended_aliases.add(subscription.alias)

    def _subgroupHeader(self, stream: IncomingSubgroup) -> None:
        assert stream.parser.header is not None
        alias = stream.parser.header.track_alias
        subscription = self._subscriptions_by_alias.get(alias)
        if subscription is not None:
            subscription._attachStream(stream)
            return
        if alias in self._ended_aliases:
            stream.discard()
            return
        if len(self._orphans) >= MAX_ORPHAN_STREAMS:
            _log.info("dropping a subgroup stream for unknown alias {alias}", alias=alias)
            stream.discard()
            return
        self._orphans.append(stream)
        stream.orphan_timer = self.clock.callLater(ORPHAN_TIMEOUT, self._orphanExpired, stream)

    def _orphanExpired(self, stream: IncomingSubgroup) -> None:
        stream.orphan_timer = None
        if stream in self._orphans:
            self._orphans.remove(stream)
            stream.discard()

    def _orphanGone(self, stream: IncomingSubgroup) -> None:
        # A stream for a not-yet-known alias finished; keep its objects until the
        # alias arrives (the timer still bounds how long).
        if stream.parser.header is None and stream in self._orphans:
            self._orphans.remove(stream)


def _namespace(value: Namespace | tuple[str, ...]) -> Namespace:
    return tuple(v.encode() if isinstance(v, str) else bytes(v) for v in value)


_NOT_SUPPORTED = 0x3  # the same code in FETCH_ERROR, PUBLISH_ERROR and SUBSCRIBE_ERROR

_HANDLERS: dict[type[Any], Callable[[MoqSession, Any], None]] = {
    SubscribeUpdate: MoqSession._onUnsupportedRequest,
    TrackStatus: MoqSession._onUnsupportedRequest,
    Fetch: MoqSession._onUnsupportedRequest,
    Publish: MoqSession._onUnsupportedRequest,
    GoAway: MoqSession._onGoAway,
    MaxRequestId: MoqSession._onMaxRequestId,
    RequestsBlocked: MoqSession._onRequestsBlocked,
    Subscribe: MoqSession._onSubscribe,
    SubscribeOk: MoqSession._onSubscribeOk,
    SubscribeError: MoqSession._onSubscribeError,
    Unsubscribe: MoqSession._onUnsubscribe,
    PublishDone: MoqSession._onPublishDone,
    PublishNamespace: MoqSession._onPublishNamespace,
    PublishNamespaceOk: MoqSession._onPublishNamespaceOk,
    PublishNamespaceError: MoqSession._onPublishNamespaceError,
    PublishNamespaceDone: MoqSession._onPublishNamespaceDone,
    PublishNamespaceCancel: MoqSession._onPublishNamespaceCancel,
    SubscribeNamespace: MoqSession._onSubscribeNamespace,
    SubscribeNamespaceOk: MoqSession._onSubscribeNamespaceOk,
    SubscribeNamespaceError: MoqSession._onSubscribeNamespaceError,
    UnsubscribeNamespace: MoqSession._onUnsubscribeNamespace,
}
