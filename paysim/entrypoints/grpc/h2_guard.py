"""h2's server connection with the bounds a hostile peer needs.

h2 3.2 (the last release purerpc 0.8.0 accepts) parses frames faithfully but
trusts its peer: it buffers a frame of any announced length before checking it,
accepts 64 CONTINUATION frames of any size, treats a WINDOW_UPDATE or RST_STREAM
for a stream it has closed as a connection error, answers every PING and
SETTINGS without limit, and copies its receive buffer once per frame. The frame
buffer's bounds are in ``h2_frames``; the connection here closes the others;
everything else stays h2's.

Policy decisions (each a bound a peer cannot argue with):

* frame size and header block bounds: ``h2_frames.GuardedFrameBuffer``;
* WINDOW_UPDATE, RST_STREAM and PRIORITY for a stream that is already closed
  are ignored (RFC 9113 §5.1: they may legitimately cross our END_STREAM);
* PINGs, SETTINGS, RST_STREAMs and "empty" frames (zero-length DATA without
  END_STREAM, unknown extension frames, PRIORITY) each spend from a token bucket
  of the connection; an empty bucket ends the connection with ENHANCE_YOUR_CALM
  (the answer nginx, nghttp2 and Go gave to Rapid Reset, CVE-2023-44487, and to
  the 2019 PING/SETTINGS/empty-frame floods);
* h2's own concurrency check (a connection error) is replaced by the
  transport's, which refuses one stream with REFUSED_STREAM instead;
* h2 remembers at most ``MAX_CLOSED_STREAMS`` closed streams (not 65,536) per
  connection: a late frame for an older one is answered as for any closed stream.

Sending takes a shortcut on the hot path, with h2's checks and state kept:
``send_headers`` with a header list that ``constant_headers`` has pre-encoded,
and ``send_data`` without padding, run the same state-machine inputs and
flow-control checks and raise the same errors as h2, but write the frame bytes
directly instead of building and serializing hyperframe objects (about a
quarter of h2's cost per call). Anything else goes through h2 unchanged.

Receiving takes the same kind of shortcut: the common frames come out of the
frame buffer without hyperframe objects (``h2_frames``) and go through h2's own
handlers. A HEADERS frame that opens a stream with a header block h2
has already turned into a request on this connection (same bytes, HPACK table
unchanged: ``CachingDecoder.requests``) runs h2's connection and stream state
machines but reuses that header list (and the content-length h2 read from it)
instead of decoding it again; at most 32 such blocks per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.stream import StreamInputs
from hyperframe.frame import (
    DataFrame,
    ExtensionFrame,
    Frame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from paysim.entrypoints.grpc.h2_frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    HEADERS,
    Calm,
    FrameLimits,
    GuardedFrameBuffer,
    Rate,
    RawData,
    RawFrame,
    RawHeaders,
    RawWindowUpdate,
)
from paysim.entrypoints.grpc.hpack_cache import CachingDecoder

__all__ = ["Calm", "FrameLimits", "GuardedH2Connection", "Rate", "RawData", "RawHeaders"]

_KNOWN_REQUESTS = 32  # request header blocks remembered per connection (``_learn``)
_LATE_FRAMES = (RawWindowUpdate, WindowUpdateFrame, RstStreamFrame, PriorityFrame)


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


def _no_constant(headers: Any) -> bytes | None:
    return None


class _Bucket:
    __slots__ = ("_per_second", "_size", "_stamp", "_tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self._size = rate.burst
        self._per_second = rate.per_second
        self._tokens = rate.burst
        self._stamp = now

    def spend(self, now: float) -> bool:
        tokens = min(self._size, self._tokens + (now - self._stamp) * self._per_second)
        self._stamp = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True


class GuardedH2Connection(h2.connection.H2Connection):  # type: ignore[misc]
    MAX_CLOSED_STREAMS = 1_024
    decoder: CachingDecoder

    def __init__(
        self,
        config: h2.config.H2Configuration,
        limits: FrameLimits,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(config=config)
        self.incoming_buffer = GuardedFrameBuffer(limits)
        self._clock = clock
        now = clock()
        self._pings = _Bucket(limits.pings, now)
        self._settings_frames = _Bucket(limits.settings, now)
        self._resets = _Bucket(limits.resets, now)
        self._empty = _Bucket(limits.empty_frames, now)
        self._tidy_at = 64
        self.decoder = CachingDecoder(self.decoder)
        self._frame_dispatch_table[RawData] = self._receive_data_frame
        self._frame_dispatch_table[RawHeaders] = self._receive_raw_headers
        self._frame_dispatch_table[RawWindowUpdate] = self._receive_window_update_frame
        # The HPACK block of a constant header list, or None (``hpack_cache``).
        self.constant_headers: Callable[[Any], bytes | None] = _no_constant

    def send_headers(
        self, stream_id: int, headers: Any, end_stream: bool = False, **kw: Any
    ) -> None:
        """h2's ``send_headers``; a constant header list skips the frame objects."""
        stream = self.streams.get(stream_id)
        block = self.constant_headers(headers) if stream is not None and not kw else None
        if block is None or len(block) > self.max_outbound_frame_size:
            super().send_headers(stream_id, headers, end_stream, **kw)
            return
        # h2's order: connection input, stream input, END_STREAM, then the trailers check.
        self.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_HEADERS)
        flags = END_HEADERS
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= END_STREAM
        elif machine.trailers_sent:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set.")
        stream.request_method = None  # a response's headers carry no :method
        self._data_to_send += _frame_header(len(block), HEADERS, flags, stream_id) + block

    def send_data(
        self, stream_id: int, data: bytes, end_stream: bool = False, pad_length: Any = None
    ) -> None:
        """h2's ``send_data``; without padding it skips the frame objects."""
        stream = self.streams.get(stream_id)
        if stream is None or pad_length is not None:
            super().send_data(stream_id, data, end_stream, pad_length)
            return
        size = len(data)
        window = min(self.outbound_flow_control_window, stream.outbound_flow_control_window)
        if size > window:
            raise h2.exceptions.FlowControlError(
                f"Cannot send {size} bytes, flow control window is {window}."
            )
        if size > self.max_outbound_frame_size:
            raise h2.exceptions.FrameTooLargeError(
                f"Cannot send frame size {size}, max frame size is {self.max_outbound_frame_size}"
            )
        self.state_machine.process_input(ConnectionInputs.SEND_DATA)
        machine = stream.state_machine
        machine.process_input(StreamInputs.SEND_DATA)
        flags = 0
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags = END_STREAM
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        self._data_to_send += _frame_header(size, DATA, flags, stream_id) + bytes(data)

    def _receive_raw_headers(self, frame: RawFrame) -> tuple[list[Any], list[Any]]:
        """h2's ``_receive_headers_frame``; a known request block is not decoded again."""
        sid = frame.stream_id
        new = sid not in self.streams
        known = self.decoder.requests.get(frame.data) if new else None
        if known is None:
            frames, events = self._receive_headers_frame(frame)
            if new:
                self._learn(frame.data, sid, events)
            return frames, events
        # h2's steps for a new stream, in its order, with what ``_learn`` kept of the
        # block: its header list and the content-length h2 read from it (or None).
        headers, content_length = known
        max_open = self.local_settings.max_concurrent_streams
        if self.open_inbound_streams + 1 > max_open:
            raise h2.exceptions.TooManyStreamsError(
                f"Max outbound streams is {max_open}, {self.open_outbound_streams} open"
            )
        events = self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        stream = self._get_or_create_stream(sid, AllowedStreamIDs(not self.config.client_side))
        machine = stream.state_machine
        stream_events: list[Any] = machine.process_input(StreamInputs.RECV_HEADERS)
        if "END_STREAM" in frame.flags:
            ended = machine.process_input(StreamInputs.RECV_END_STREAM)
            stream_events[0].stream_ended = ended[0]
            stream_events += ended
        stream._expected_content_length = content_length
        stream_events[0].headers = list(headers)
        return [], events + stream_events

    def _learn(self, block: bytes, sid: int, events: list[Any]) -> None:
        """Remember what h2 made of a cached (table-neutral) block that opened a stream
        as a request: the same bytes make the same request until the cache is cleared."""
        config = self.config
        if config.validate_inbound_headers or config.normalize_inbound_headers:
            return  # their checks depend on more than the block: keep h2's own path
        if self.decoder.cached(block) is None:
            return
        requests = self.decoder.requests
        for event in events:
            if type(event) is h2.events.RequestReceived:
                if len(requests) >= _KNOWN_REQUESTS:
                    requests.clear()  # clients repeat a few lists: a full cache starts over
                requests[block] = (list(event.headers), self.streams[sid]._expected_content_length)

    @property
    def open_inbound_streams(self) -> int:
        # h2 calls this before every new stream to refuse one over the limit with a
        # connection error; the transport refuses it with REFUSED_STREAM instead. The
        # parent's walk also forgets closed streams: do it when the dict has doubled.
        if len(self.streams) >= self._tidy_at:
            super().open_inbound_streams  # noqa: B018 (the walk is the point)
            self._tidy_at = max(64, 2 * len(self.streams))
        return 0

    def _receive_frame(self, frame: Frame) -> list[Any]:
        kind = type(frame)
        sid = frame.stream_id
        if (
            kind in _LATE_FRAMES
            and sid
            and sid not in self.streams
            and sid <= self.highest_inbound_stream_id
        ):
            return []  # §5.1: crossed our END_STREAM or RST_STREAM; ignore it
        if kind is PingFrame:
            if "ACK" not in frame.flags:
                self._spend(self._pings, "PING")
        elif kind is SettingsFrame:
            if "ACK" not in frame.flags:
                self._spend(self._settings_frames, "SETTINGS")
        elif kind is RstStreamFrame:
            self._spend(self._resets, "RST_STREAM")
        elif kind is DataFrame:
            if not frame.data and "END_STREAM" not in frame.flags:
                self._spend(self._empty, "empty DATA")
        elif kind is PriorityFrame or kind is ExtensionFrame:
            self._spend(self._empty, "PRIORITY or unknown")
        events: list[Any] = super()._receive_frame(frame)
        return events

    def _spend(self, bucket: _Bucket, what: str) -> None:
        if not bucket.spend(self._clock()):
            raise Calm(f"too many {what} frames")
