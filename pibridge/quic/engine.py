"""aioquic's ``QuicConnection`` with receive credit tied to what the application consumed.

aioquic raises a stream's MAX_STREAM_DATA as soon as data *arrives*, doubling
the window without bound, so a reader that pauses cannot slow the sender and
the adapter would have to buffer without limit. Here the credit granted is
``consumed + receive_window``: while a stream protocol is paused the peer can
send at most one window more. It also records why the connection ended (by
peer, idle timeout), which aioquic's ``ConnectionTerminated`` does not say.

It also carries pending ACKs in outgoing data packets, and sends the padded
PINGs that find a path's datagram size (``pibridge.quic.path_mtu``).

This relies on internals of aioquic 1.7 (``_write_stream_limits``,
``_close_begin``, ``_write_ping_frame``, ``_on_ping_delivery``, the packet
spaces and the loss recovery's window); the tests exercise each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from aioquic import tls
from aioquic.buffer import Buffer  # type: ignore[attr-defined]
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import QuicEvent
from aioquic.quic.packet import QuicFrameType, pull_quic_transport_parameters
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

# A MAX_STREAM_DATA frame: type, stream id and limit, each a varint of at most 8 bytes.
_MAX_STREAM_DATA_CAPACITY = 1 + 2 * 8
_MICROSECOND = 1e-6
# The PING uid of datagram-size probes (application PINGs are never negative).
_PROBE_UID = -1


@attrs.frozen
class DatagramSizeProbed(QuicEvent):
    """A padded PING of ``size`` bytes was acknowledged, or lost."""

    size: int
    acknowledged: bool


class CreditedQuicConnection(QuicConnection):
    """A ``QuicConnection`` whose per-stream receive credit follows consumption."""

    def __init__(self, *, configuration: QuicConfiguration, **kwargs: Any) -> None:
        super().__init__(configuration=configuration, **kwargs)
        self.receive_window: int = configuration.max_stream_data
        # stream id -> bytes the application has consumed; streams absent here
        # keep aioquic's own policy (e.g. refused streams being stopped).
        self.consumed_offsets: dict[int, int] = {}
        self.closed_by_peer = False
        self.idle_timed_out = False
        #: The peer's max_udp_payload_size transport parameter, once known.
        self.peer_max_udp_payload: int | None = None
        self._probe_size: int | None = None
        self._probe_queued = False
        self._probe_full = False

    @property
    def datagram_size(self) -> int:
        """The size of the datagrams sent now."""
        return int(self._max_datagram_size)

    def probe_datagram_size(self, size: int) -> None:
        """Send one PING padded to ``size`` bytes; a `DatagramSizeProbed` event tells the outcome.

        Until it is acknowledged every other packet keeps the current size.
        """
        self._probe_size = size
        self._probe_queued = True

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        stream_id = stream.stream_id
        consumed = None if stream_id is None else self.consumed_offsets.get(stream_id)
        if stream_id is None or consumed is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        target = consumed + self.receive_window
        # Announce in steps of half a window, not on every packet.
        if target - stream.max_stream_data_local >= self.receive_window // 2:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        """Send what is due, carrying a pending ACK in any packet that goes out anyway.

        aioquic holds an ACK until its delay expires even when it is about to
        send stream data, then sends the ACK on its own: every keystroke and
        its echo would cost two extra datagrams, each built, encrypted,
        received and decrypted by Python. RFC 9000 (13.2.1) lets an ACK ride
        in any packet, so when stream data is waiting the ACK is made due now.
        """
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and space.ack_at > now:
            for stream in self._streams.values():
                sender = stream.sender
                # ``buffer_is_empty`` is only refreshed when aioquic next looks.
                if len(sender._pending) or sender._pending_eof:
                    space.ack_at = now
                    break
        datagrams = super().datagrams_to_send(now=now)
        if self._probe_queued:
            datagrams += self._send_size_probe(now)
        return datagrams

    def _send_size_probe(self, now: float) -> list[tuple[bytes, Any]]:
        """The probe goes in a datagram of its own.

        Like a PTO probe it may exceed the congestion window, by this one
        datagram: a connection carrying keystrokes never grows its window to
        the size being probed.
        """
        size = self._probe_size
        if (
            size is None
            or not self._handshake_confirmed
            or self._state is not QuicConnectionState.CONNECTED
        ):
            return []
        usual_size = self._max_datagram_size
        control = self._loss._cc
        window = control.congestion_window
        self._max_datagram_size = size
        control.congestion_window = max(window, self._loss.bytes_in_flight + size)
        self._ping_pending.append(_PROBE_UID)
        space = self._spaces[tls.Epoch.ONE_RTT]
        if len(space.ack_queue) and (space.ack_at is None or space.ack_at >= now):
            # A packet carrying an ACK is not paced: the probe goes now, not
            # after a bulk transfer's pacer has let everything else through.
            space.ack_at = now - _MICROSECOND
        try:
            datagrams = super().datagrams_to_send(now=now)
        finally:
            self._max_datagram_size = usual_size
            control.congestion_window = window
        if _PROBE_UID in self._ping_pending:  # held back (pacing): try again later
            self._ping_pending.remove(_PROBE_UID)
        else:
            self._probe_queued = False
        return datagrams

    def _write_ping_frame(
        self,
        builder: QuicPacketBuilder,
        uids: Sequence[int] = (),
        comment: str = "",
    ) -> None:
        super()._write_ping_frame(builder, list(uids), comment)
        if _PROBE_UID not in uids:
            return
        room = min(builder.remaining_buffer_space, builder.remaining_flight_space)
        # Only a datagram padded to the full probe size says anything about the path.
        self._probe_full = builder.remaining_flight_space >= builder.remaining_buffer_space
        if room > 0:
            padding = builder.start_frame(QuicFrameType.PADDING, capacity=room)
            padding.push_bytes(bytes(room - 1))

    def _on_ping_delivery(self, delivery: QuicDeliveryState, uids: Sequence[int]) -> None:
        if _PROBE_UID in uids:
            uids = [uid for uid in uids if uid != _PROBE_UID]
            size = self._probe_size
            if size is not None:
                if delivery != QuicDeliveryState.ACKED:
                    self._probe_size = None
                    self._events.append(DatagramSizeProbed(size=size, acknowledged=False))
                elif self._probe_full:
                    self._probe_size = None
                    self._max_datagram_size = max(self._max_datagram_size, size)
                    self._events.append(DatagramSizeProbed(size=size, acknowledged=True))
                else:
                    self._probe_queued = True  # went out short: ask again
        super()._on_ping_delivery(delivery, uids)

    def _parse_transport_parameters(self, data: bytes, from_session_ticket: bool = False) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        parameters = pull_quic_transport_parameters(Buffer(data=data))
        self.peer_max_udp_payload = parameters.max_udp_payload_size

    def _close_begin(self, is_initiator: bool, now: float) -> None:
        self.closed_by_peer = not is_initiator
        super()._close_begin(is_initiator, now)

    def handle_timer(self, now: float) -> None:
        close_at = self._close_at
        if self._close_event is None and close_at is not None and now >= close_at:
            self.idle_timed_out = True
        super().handle_timer(now)

    def unsent_bytes(self, stream: QuicStream) -> int:
        """Bytes written to ``stream`` that aioquic has not yet put in a packet."""
        sender = stream.sender
        if sender._reset_error_code is not None:
            return 0
        return sender._buffer_stop - sender.highest_offset

    def peer_certificate(self) -> Any:
        """The leaf certificate and chain the peer presented in the handshake."""
        return self.tls._peer_certificate, list(self.tls._peer_certificate_chain)
