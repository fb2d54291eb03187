"""A seeded UDP relay that impairs a path the way bad Wi-Fi and long links do.

QUIC runs over UDP, so a user-space relay between client and server can add
what this kernel cannot (it has no netem): delay with jitter, random loss,
reordering, duplication, a rate limit with a bounded queue, a cut link, and a
NAT rebinding that gives the client a new source port. Every decision comes
from a ``random.Random`` seeded per direction, drawing the same number of
values for every datagram, so the same seed and the same datagram sequence
give the same drops, delays and copies.

:class:`ImpairedLink` is one direction as a clocked queue (no sockets; test it
with ``twisted.internet.task.Clock``); :class:`ImpairmentRelay` puts two of
them between a loopback UDP port and the real server.
"""

from __future__ import annotations

import contextlib
import enum
import math
import random
import socket
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from pibridge.quic.path_mtu import IPV4_OVERHEAD

Address = tuple[str, int]


class Jitter(enum.Enum):
    """How a datagram's extra delay is drawn around the base delay."""

    UNIFORM = "uniform"  # delay - jitter .. delay + jitter
    NORMAL = "normal"  # mean delay, standard deviation jitter (clipped at zero)


@attrs.frozen
class LinkConditions:
    """What one direction of the path does to datagrams; replace it to change conditions.

    ``delay``/``jitter`` are seconds. ``loss``, ``reorder`` and ``duplicate``
    are probabilities per datagram. A reordered datagram is held back by
    ``reorder_delay`` more, so later ones overtake it. With ``keep_order``
    jitter alone never reorders (a datagram leaves no earlier than the one
    before it), as on a real link; only ``reorder`` does. ``rate`` (bytes per
    second) serialises datagrams through a queue of at most ``queue_bytes``;
    arrivals that do not fit are dropped (tail drop). ``cut`` drops everything,
    including datagrams already on their way. ``mtu`` is the link's IP MTU
    (Ethernet's by default, None for none): larger datagrams are dropped, as a
    router that may not fragment does.
    """

    delay: float = 0.0
    jitter: float = 0.0
    jitter_distribution: Jitter = Jitter.UNIFORM
    keep_order: bool = True
    loss: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    duplicate: float = 0.0
    rate: float | None = None
    queue_bytes: int = 64 * 1024
    cut: bool = False
    mtu: int | None = 1500

    def __attrs_post_init__(self) -> None:
        for name in ("loss", "reorder", "duplicate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if self.delay < 0 or self.jitter < 0 or self.reorder_delay < 0:
            raise ValueError("delays must not be negative")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")

    def replace(self, **changes: Any) -> LinkConditions:
        """A copy with some fields changed."""
        return attrs.evolve(self, **changes)


@attrs.define
class LinkCounters:
    """What a direction did, so a test can check the impairment really happened."""

    received: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    lost: int = 0
    cut: int = 0
    queue_dropped: int = 0
    too_big: int = 0
    duplicated: int = 0
    reordered: int = 0

    @property
    def dropped(self) -> int:
        """Datagrams that never left the relay, for any reason."""
        return self.lost + self.cut + self.queue_dropped + self.too_big


# Every datagram draws exactly this many uniforms, whatever the conditions, so a
# change of conditions mid-run does not shift the decisions for later datagrams.
_DRAWS_PER_DATAGRAM = 5


@attrs.define(eq=False)
class ImpairedLink:
    """One direction of the path: a clocked queue applying :class:`LinkConditions`.

    ``deliver`` is called with each datagram (and each duplicate) when it
    leaves; the relay sends it on from there.
    """

    clock: IReactorTime
    rng: random.Random
    deliver: Callable[[bytes], None]
    conditions: LinkConditions = attrs.field(factory=LinkConditions)
    counters: LinkCounters = attrs.field(factory=LinkCounters)
    _pending: dict[int, IDelayedCall] = attrs.field(factory=dict, init=False)
    _watchers: list[tuple[int, Deferred[None]]] = attrs.field(factory=list, init=False)
    _sequence: int = attrs.field(default=0, init=False)
    _serialised_until: float = attrs.field(default=0.0, init=False)
    _last_departure: float = attrs.field(default=0.0, init=False)

    def cut(self) -> None:
        """Take the link down: everything is dropped until :meth:`restore`."""
        self.conditions = self.conditions.replace(cut=True)

    def restore(self) -> None:
        """Bring the link back up with the other conditions unchanged."""
        self.conditions = self.conditions.replace(cut=False)

    @property
    def in_flight(self) -> int:
        """Datagrams accepted and not yet delivered."""
        return len(self._pending)

    def received_at_least(self, count: int) -> Deferred[None]:
        """Fires once ``count`` datagrams have entered this direction and met their fate."""
        watcher: Deferred[None] = Deferred()
        if self.counters.received >= count:
            watcher.callback(None)
        else:
            self._watchers.append((count, watcher))
        return watcher

    def submit(self, data: bytes) -> None:
        """A datagram entered this direction: drop it, or schedule it (and maybe a copy)."""
        self._decide(data)
        if self._watchers:
            self._wake(self.counters.received)

    def _decide(self, data: bytes) -> None:
        conditions = self.conditions
        counters = self.counters
        counters.received += 1
        draws = [self.rng.random() for _ in range(_DRAWS_PER_DATAGRAM)]
        lose, jitter_a, jitter_b, reorder, duplicate = draws
        if conditions.cut:
            counters.cut += 1
            return
        # The relay speaks IPv4: IP and UDP headers count against the MTU.
        if conditions.mtu is not None and len(data) + IPV4_OVERHEAD > conditions.mtu:
            counters.too_big += 1
            return
        if lose < conditions.loss:
            counters.lost += 1
            return
        now = self.clock.seconds()
        leaves = now
        if conditions.rate is not None:
            start = max(now, self._serialised_until)
            queued = (start - now) * conditions.rate
            if queued + len(data) > conditions.queue_bytes:
                counters.queue_dropped += 1
                return
            self._serialised_until = start + len(data) / conditions.rate
            leaves = self._serialised_until
        departure = leaves + _delay(conditions, jitter_a, jitter_b)
        if conditions.keep_order:
            departure = max(departure, self._last_departure)
        if reorder < conditions.reorder:
            counters.reordered += 1
            departure += conditions.reorder_delay
        else:
            self._last_departure = departure
        self._schedule(departure - now, data)
        if duplicate < conditions.duplicate:
            counters.duplicated += 1
            self._schedule(departure - now, data)

    def _wake(self, received: int) -> None:
        ready = [w for c, w in self._watchers if received >= c]
        self._watchers = [(c, w) for c, w in self._watchers if received < c]
        for watcher in ready:
            watcher.callback(None)

    def stop(self) -> None:
        """Forget every datagram still on its way."""
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.active():
                call.cancel()

    def _schedule(self, delay: float, data: bytes) -> None:
        self._sequence += 1
        key = self._sequence
        self._pending[key] = self.clock.callLater(max(0.0, delay), self._depart, key, data)

    def _depart(self, key: int, data: bytes) -> None:
        self._pending.pop(key, None)
        if self.conditions.cut:
            self.counters.cut += 1
            return
        self.counters.forwarded += 1
        self.counters.forwarded_bytes += len(data)
        self.deliver(data)


def _delay(conditions: LinkConditions, u1: float, u2: float) -> float:
    """The one-way delay for a datagram from two uniform draws."""
    if conditions.jitter == 0:
        return conditions.delay
    if conditions.jitter_distribution is Jitter.UNIFORM:
        offset = (2.0 * u1 - 1.0) * conditions.jitter
    else:  # Box-Muller: a fixed number of draws, unlike random.gauss
        offset = math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)
        offset *= conditions.jitter
    return max(0.0, conditions.delay + offset)


class _ClientSide(DatagramProtocol):
    """The port clients talk to; whoever sent last is the client (as a NAT sees it)."""

    def __init__(self, relay: ImpairmentRelay) -> None:
        self._relay = relay

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._relay._fromClient(datagram, (addr[0], addr[1]))


class _ServerSide(DatagramProtocol):
    """One upstream socket: the client's address as the server sees it."""

    def __init__(self, relay: ImpairmentRelay) -> None:
        self._relay = relay

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._relay._fromServer(self, datagram, (addr[0], addr[1]))


@attrs.define(eq=False)
class ImpairmentRelay:
    """A loopback UDP relay in front of ``server``, impairing each direction on its own.

    Clients connect to :attr:`address`. ``upstream`` (client to server) and
    ``downstream`` (server to client) are :class:`ImpairedLink`; set their
    ``conditions`` at any time. :meth:`rebind` moves the client's traffic to a
    new upstream source port, so the server sees the client at a new address.
    Seeds are per direction, derived from ``seed``.
    """

    reactor: Any  # IReactorUDP and IReactorTime
    server: Address
    seed: int | str = 0
    interface: str = "127.0.0.1"
    socket_buffer: int = 4 * 1024 * 1024
    upstream: ImpairedLink = attrs.field(init=False)
    downstream: ImpairedLink = attrs.field(init=False)
    client_address: Address | None = attrs.field(default=None, init=False)
    client_addresses: list[Address] = attrs.field(factory=list, init=False)
    rebinds: int = attrs.field(default=0, init=False)
    _listening: Any = attrs.field(default=None, init=False)
    _upstream_port: Any = attrs.field(default=None, init=False)
    _upstream_protocol: _ServerSide | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.upstream = ImpairedLink(
            self.reactor, random.Random(f"{self.seed}/upstream"), self._sendToServer
        )
        self.downstream = ImpairedLink(
            self.reactor, random.Random(f"{self.seed}/downstream"), self._sendToClient
        )

    @property
    def address(self) -> Address:
        """Where clients send: the relay's listening address."""
        if self._listening is None:
            raise RuntimeError("the relay is not started")
        host = self._listening.getHost()
        return (host.host, host.port)

    @property
    def server_side_address(self) -> Address:
        """The client's address as the server sees it now (changes on :meth:`rebind`)."""
        if self._upstream_port is None:
            raise RuntimeError("the relay is not started")
        host = self._upstream_port.getHost()
        return (host.host, host.port)

    def start(self) -> Address:
        """Listen on an ephemeral loopback port and open the first upstream socket."""
        self._listening = self.reactor.listenUDP(
            0, _ClientSide(self), interface=self.interface, maxPacketSize=65535
        )
        _raise_buffers(self._listening, self.socket_buffer)
        self._openUpstream()
        return self.address

    def set(
        self,
        upstream: LinkConditions | None = None,
        downstream: LinkConditions | None = None,
        *,
        both: LinkConditions | None = None,
    ) -> None:
        """Change conditions now; ``both`` applies the same to each direction."""
        if both is not None:
            upstream = downstream = both
        if upstream is not None:
            self.upstream.conditions = upstream
        if downstream is not None:
            self.downstream.conditions = downstream

    def cut(self) -> None:
        """Link down in both directions."""
        self.upstream.cut()
        self.downstream.cut()

    def restore(self) -> None:
        """Link up again in both directions."""
        self.upstream.restore()
        self.downstream.restore()

    def rebind(self) -> Address:
        """Send the client's traffic from a new source port from now on; return it.

        The old mapping is gone, as after a NAT rebinding or a move from Wi-Fi
        to cellular: replies the server still sends to it are dropped.
        """
        if self._upstream_port is not None:
            self._upstream_port.stopListening()
        self._openUpstream()
        self.rebinds += 1
        return self.server_side_address

    def stop(self) -> Deferred[Any]:
        """Close every socket and drop whatever is still on its way."""
        self.upstream.stop()
        self.downstream.stop()
        stops = []
        for port in (self._listening, self._upstream_port):
            if port is not None:
                result = port.stopListening()
                if isinstance(result, Deferred):
                    stops.append(result)
        self._listening = self._upstream_port = self._upstream_protocol = None
        return DeferredList(stops)

    def _openUpstream(self) -> None:
        protocol = _ServerSide(self)
        self._upstream_port = self.reactor.listenUDP(
            0, protocol, interface=self.interface, maxPacketSize=65535
        )
        _raise_buffers(self._upstream_port, self.socket_buffer)
        self._upstream_protocol = protocol

    def _fromClient(self, datagram: bytes, addr: Address) -> None:
        if addr != self.client_address:
            self.client_address = addr
            self.client_addresses.append(addr)
        self.upstream.submit(datagram)

    def _fromServer(self, protocol: _ServerSide, datagram: bytes, addr: Address) -> None:
        if protocol is not self._upstream_protocol or addr != self.server:
            return  # a mapping that no longer exists, or a stranger
        self.downstream.submit(datagram)

    def _sendToServer(self, datagram: bytes) -> None:
        if self._upstream_port is not None:
            _send(self._upstream_port, datagram, self.server)

    def _sendToClient(self, datagram: bytes) -> None:
        if self._listening is not None and self.client_address is not None:
            _send(self._listening, datagram, self.client_address)


def _send(port: Any, datagram: bytes, address: Address) -> None:
    """Send one datagram; a full socket buffer or an absent peer is a lost packet."""
    with contextlib.suppress(OSError):
        port.write(datagram, address)


def _raise_buffers(port: Any, size: int) -> None:
    """Bigger socket buffers, so the relay itself does not add kernel drops.

    Root may pass ``net.core.rmem_max`` with the ``*BUFFORCE`` options.
    """
    handle = port.getHandle()
    for forced, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", socket.SO_RCVBUF), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", socket.SO_SNDBUF), socket.SO_SNDBUF),
    ):
        for option in (forced, plain):
            try:
                handle.setsockopt(socket.SOL_SOCKET, option, size)
                break
            except OSError:
                continue
