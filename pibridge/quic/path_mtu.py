"""Which datagram sizes to try on a path, and what a probe's outcome means.

QUIC starts every path at 1200-byte datagrams, the size every IP path must
carry. Most paths carry more, and each datagram costs aioquic the same Python
work whatever its size, so larger datagrams move more bytes per CPU second.
The sizes tried come from the local route's link MTU (1500 on Ethernet, 65536
on loopback), and a size is only used once a padded PING of exactly that size
was acknowledged (DPLPMTUD: RFC 8899, RFC 9000 section 14.3), so a tunnel or a
smaller hop further along the path cannot black-hole the connection.

The search is pure: the connection asks :meth:`DatagramSizeSearch.next_probe`
and reports each outcome to :meth:`DatagramSizeSearch.probed`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import attrs

#: The size every QUIC path carries (RFC 9000 section 14).
BASE_DATAGRAM_SIZE = 1200
#: aioquic writes a STREAM frame's length as a two-byte varint, so a frame holds at
#: most 16383 bytes; a larger datagram would get a frame it cannot describe.
LARGEST_DATAGRAM_SIZE = 16384
#: UDP payload of a 1500-byte Ethernet frame over IPv6, then over IPv4.
ETHERNET_SIZES = (1452, 1472)
#: A size that is lost this many times in a row is not tried again (RFC 8899 MAX_PROBES is 3;
#: each lost probe also costs a congestion-window reduction, so fewer here).
MAX_ATTEMPTS = 2
#: IP and UDP headers: what separates a link MTU from the datagram it carries.
IPV4_OVERHEAD = 20 + 8
IPV6_OVERHEAD = 40 + 8
# Linux socket options (not exported by every Python build).
_IP_MTU = getattr(socket, "IP_MTU", 14)
_IPV6_MTU = getattr(socket, "IPV6_MTU", 24)


def route_payload_limit(host: str, port: int) -> int | None:
    """The largest UDP payload the local route towards ``host`` carries, if the OS says.

    Connecting a UDP socket sends nothing; Linux then reports the route's MTU
    (including anything it already learned about the path).
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    family, level, option, overhead = (
        (socket.AF_INET6, socket.IPPROTO_IPV6, _IPV6_MTU, IPV6_OVERHEAD)
        if version == 6
        else (socket.AF_INET, socket.IPPROTO_IP, _IP_MTU, IPV4_OVERHEAD)
    )
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port or 9))
        mtu = probe.getsockopt(level, option)
        return int(mtu) - overhead
    return None


def candidate_sizes(current: int, route_limit: int | None, ceiling: int) -> list[int]:
    """The sizes to try, smallest first, above ``current`` and within the route and ceiling."""
    # Nothing known about the link: no more than Ethernet.
    route = max(ETHERNET_SIZES) if route_limit is None else route_limit
    limit = min(ceiling, LARGEST_DATAGRAM_SIZE, route)
    sizes = {size for size in ETHERNET_SIZES if size <= limit} | {limit}
    return sorted(size for size in sizes if size > current)


@attrs.define
class DatagramSizeSearch:
    """Ascending search over candidate sizes; a size is adopted once its probe is acknowledged."""

    current: int
    candidates: list[int]
    attempts: int = 0
    in_flight: int | None = None

    def next_probe(self) -> int | None:
        """The size to probe now, or None when the search is over or a probe is out."""
        if self.in_flight is not None or not self.candidates:
            return None
        self.in_flight = self.candidates[0]
        return self.in_flight

    def probed(self, size: int, acknowledged: bool) -> None:
        """Record a probe's outcome; a loss ends the search after ``MAX_ATTEMPTS``."""
        if size != self.in_flight:
            return
        self.in_flight = None
        if acknowledged:
            self.current = max(self.current, size)
            self.candidates = [candidate for candidate in self.candidates if candidate > size]
            self.attempts = 0
            return
        self.attempts += 1
        if self.attempts >= MAX_ATTEMPTS:
            # Larger sizes would not pass either: the path's limit lies below this one.
            self.candidates = []

    @property
    def finished(self) -> bool:
        return self.in_flight is None and not self.candidates
