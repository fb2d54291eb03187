"""aioquic's ``QuicConnection`` with receive credit tied to what the application consumed.

aioquic raises a stream's MAX_STREAM_DATA as soon as data *arrives*, doubling
the window without bound, so a reader that pauses cannot slow the sender and
the adapter would have to buffer without limit. Here the credit granted is
``consumed + receive_window``: while a stream protocol is paused the peer can
send at most one window more. It also records why the connection ended (by
peer, idle timeout), which aioquic's ``ConnectionTerminated`` does not say.

This relies on two internals of aioquic 1.7 (``_write_stream_limits`` and
``_close_begin``); the tests exercise both.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

# A MAX_STREAM_DATA frame: type, stream id and limit, each a varint of at most 8 bytes.
_MAX_STREAM_DATA_CAPACITY = 1 + 2 * 8


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
