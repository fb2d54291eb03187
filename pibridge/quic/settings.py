"""Tunable parameters of QUIC connections, shared by both roles."""

from __future__ import annotations

import ssl

import attrs
from aioquic.quic.configuration import QuicConfiguration

from pibridge.quic.identity import TlsIdentity
from pibridge.quic.path_mtu import BASE_DATAGRAM_SIZE, LARGEST_DATAGRAM_SIZE

KIB = 1024
MIB = 1024 * KIB

MOQ_ALPN = "moq-00"


@attrs.frozen
class QuicSettings:
    """Connection parameters; the defaults suit MoQ over the Internet.

    ``stream_high_water``/``stream_low_water`` bound a stream's unsent bytes
    (its producer is paused above the first, resumed below the second);
    ``connection_high_water``/``connection_low_water`` do the same for the sum
    over all streams. ``receive_window`` is the flow-control credit a stream
    grants beyond what its protocol has consumed. ``max_datagram_size`` is the
    size a connection starts with (aioquic's 1200 when None); with
    ``probe_datagram_size`` each connection then tries larger ones up to
    ``largest_datagram_size`` and the local route's MTU (``pibridge.quic.path_mtu``).
    """

    alpn_protocols: tuple[str, ...] = (MOQ_ALPN,)
    idle_timeout: float = 30.0
    max_datagram_frame_size: int | None = 65536
    stream_high_water: int = 256 * KIB
    stream_low_water: int = 64 * KIB
    connection_high_water: int = 1 * MIB
    connection_low_water: int = 256 * KIB
    receive_window: int = 1 * MIB
    connection_receive_window: int = 4 * MIB
    max_datagram_size: int | None = None
    probe_datagram_size: bool = True
    largest_datagram_size: int = LARGEST_DATAGRAM_SIZE
    congestion_control_algorithm: str = "reno"
    socket_buffer_size: int = 4 * MIB

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.stream_low_water < self.stream_high_water:
            raise ValueError("need 0 <= stream_low_water < stream_high_water")
        if not 0 <= self.connection_low_water < self.connection_high_water:
            raise ValueError("need 0 <= connection_low_water < connection_high_water")
        if not BASE_DATAGRAM_SIZE <= self.largest_datagram_size <= LARGEST_DATAGRAM_SIZE:
            raise ValueError(
                f"largest_datagram_size must be {BASE_DATAGRAM_SIZE}-{LARGEST_DATAGRAM_SIZE}"
            )
        if not self.alpn_protocols:
            raise ValueError("at least one ALPN protocol is needed")

    def aioquic_configuration(
        self,
        *,
        is_client: bool,
        identity: TlsIdentity | None = None,
        server_name: str | None = None,
    ) -> QuicConfiguration:
        """The aioquic configuration for one role (certificate checks are ours, not aioquic's)."""
        configuration = QuicConfiguration(
            is_client=is_client,
            alpn_protocols=list(self.alpn_protocols),
            idle_timeout=self.idle_timeout,
            max_datagram_frame_size=self.max_datagram_frame_size,
            max_stream_data=self.receive_window,
            max_data=self.connection_receive_window,
            congestion_control_algorithm=self.congestion_control_algorithm,
            server_name=server_name,
            verify_mode=ssl.CERT_NONE,
        )
        if self.max_datagram_size is not None:
            configuration.max_datagram_size = self.max_datagram_size
        if identity is not None:
            configuration.load_cert_chain(identity.certificate_path, identity.key_path)
        return configuration
