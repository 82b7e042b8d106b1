"""h2's server connection with the bounds a hostile peer needs.

h2 3.2 (the last release purerpc 0.8.0 accepts) parses frames faithfully but
trusts its peer: it buffers a frame of any announced length before checking it,
accepts 64 CONTINUATION frames of any size, treats a WINDOW_UPDATE or RST_STREAM
for a stream it has closed as a connection error, answers every PING and
SETTINGS without limit, and copies its receive buffer once per frame. The two
classes here close those holes; everything else stays h2's.

Policy decisions (each a bound a peer cannot argue with):

* a frame longer than our advertised SETTINGS_MAX_FRAME_SIZE is refused as soon
  as its 9-byte header arrives (FRAME_SIZE_ERROR), before its body is buffered;
* a header block (HEADERS plus CONTINUATION) is at most ``max_header_block``
  bytes and ``max_continuations`` CONTINUATION frames, checked before any of it
  is decoded; past either bound the connection ends with ENHANCE_YOUR_CALM;
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

Receiving takes the same kind of shortcut: an unpadded DATA frame, and a HEADERS
frame with END_HEADERS and neither padding nor priority, come out of the frame
buffer as a ``RawFrame`` (the four attributes h2's handlers read) instead of a
hyperframe object, after the same size and header-block checks, and go through
h2's own handlers. A HEADERS frame that opens a stream with a header block h2
has already turned into a request on this connection (same bytes, HPACK table
unchanged: ``CachingDecoder.requests``) runs h2's connection and stream state
machines but reuses that header list (and the content-length h2 read from it)
instead of decoding it again; at most 32 such blocks per connection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.connection import AllowedStreamIDs, ConnectionInputs
from h2.frame_buffer import FrameBuffer
from h2.stream import StreamInputs
from hyperframe.exceptions import InvalidFrameError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from paysim.entrypoints.grpc.hpack_cache import CachingDecoder

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_LATE_FRAMES = (WindowUpdateFrame, RstStreamFrame, PriorityFrame)
_FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream
_DATA, _HEADERS = 0x0, 0x1
_END_STREAM, _END_HEADERS = 0x1, 0x4
_PADDED, _PRIORITY = 0x8, 0x20
_KNOWN_REQUESTS = 32  # request header blocks remembered per connection (``_learn``)
_FLAG_NAMES = {
    0: frozenset(),
    _END_STREAM: frozenset({"END_STREAM"}),
    _END_HEADERS: frozenset({"END_HEADERS"}),
    _END_STREAM | _END_HEADERS: frozenset({"END_STREAM", "END_HEADERS"}),
}


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return _FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


def _no_constant(headers: Any) -> bytes | None:
    return None


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``burst`` at once, refilled at ``per_second``."""

    burst: float
    per_second: float


@dataclass(frozen=True)
class FrameLimits:
    max_frame_size: int = 16_384
    max_header_block: int = 16_384
    max_continuations: int = 8
    pings: Rate = Rate(1_000, 100)
    settings: Rate = Rate(100, 10)
    resets: Rate = Rate(1_000, 100)
    empty_frames: Rate = Rate(1_000, 100)


class Calm(h2.exceptions.DenialOfServiceError):  # type: ignore[misc]
    """The peer went over a bound: GOAWAY(ENHANCE_YOUR_CALM), then close."""


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


class RawFrame:
    """A common frame as its bytes: the attributes h2's handlers read of a frame."""

    __slots__ = ("data", "flags", "flow_controlled_length", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flags: frozenset[str]) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flags = flags
        self.flow_controlled_length = len(data)  # unpadded


class RawData(RawFrame):
    """DATA without padding, and not empty unless it ends the stream."""


class RawHeaders(RawFrame):
    """HEADERS with END_HEADERS, without padding or priority."""


class GuardedFrameBuffer(FrameBuffer):  # type: ignore[misc]
    """h2's frame iterator, bounded, with one read offset instead of a copy per frame."""

    def __init__(self, limits: FrameLimits) -> None:
        super().__init__(server=True)
        self.data: bytes = b""
        self._headers_buffer: list[Frame] = []
        self._limits = limits
        self._pos = 0
        self._block_bytes = 0
        self.shortcut = True  # tests turn it off to compare with h2's own path

    def add_data(self, data: bytes) -> None:
        if self._preamble_len:
            n = min(self._preamble_len, len(data))
            expected = _PREFACE[len(_PREFACE) - self._preamble_len :][:n]
            if data[:n] != expected:
                raise h2.exceptions.ProtocolError("Invalid HTTP/2 preamble.")
            self._preamble_len -= n
            data = data[n:]
        if self._pos:
            self.data = self.data[self._pos :]
            self._pos = 0
        self.data += data

    def next(self) -> Frame | RawFrame:
        limit = self._limits.max_frame_size
        while True:
            data, pos = self.data, self._pos
            if len(data) - pos < 9:
                raise StopIteration
            high, low, kind, flags, sid = _FRAME_HEADER.unpack_from(data, pos)
            length = (high << 8) | low
            raw = self.shortcut and self._raw_kind(kind, flags, sid & 0x7FFFFFFF, length)
            if raw:
                frame = None
            else:
                try:
                    frame, length = Frame.parse_frame_header(memoryview(data)[pos : pos + 9])
                except (InvalidFrameError, ValueError):
                    raise h2.exceptions.ProtocolError("Invalid frame header received.") from None
            if length > limit:
                raise h2.exceptions.FrameTooLargeError(
                    f"frame of {length} bytes; SETTINGS_MAX_FRAME_SIZE is {limit}"
                )
            end = pos + 9 + length
            if len(data) < end:
                raise StopIteration
            if frame is None:
                self._pos = end
                return self._raw_frame(kind, flags, sid & 0x7FFFFFFF, data[pos + 9 : end])
            try:
                frame.parse_body(memoryview(data)[pos + 9 : end])
            except InvalidFrameError:
                raise h2.exceptions.FrameDataMissingError("Frame data missing or invalid") from None
            self._pos = end
            complete = self._header_block(frame)
            if complete is not None:
                return complete

    __next__ = next

    def _raw_kind(self, kind: int, flags: int, sid: int, length: int) -> bool:
        """Whether the frame is a common one, which hyperframe could not refuse: a
        stream id, no padding and no priority, outside a header block."""
        if not sid or self._headers_buffer:
            return False
        if kind == _DATA:
            return not flags & _PADDED and bool(length or flags & _END_STREAM)
        return kind == _HEADERS and flags & (_PADDED | _PRIORITY | _END_HEADERS) == _END_HEADERS

    def _raw_frame(self, kind: int, flags: int, sid: int, body: bytes) -> RawFrame:
        """A common frame as hyperframe would have parsed it (undefined flags ignored);
        a header block within the bound, as in ``_header_block``."""
        if kind == _DATA:
            return RawData(sid, body, _FLAG_NAMES[flags & _END_STREAM])
        self._block_bytes = 0
        self._check_block(len(body), 0)
        return RawHeaders(sid, body, _FLAG_NAMES[flags & (_END_STREAM | _END_HEADERS)])

    def _header_block(self, frame: Frame) -> Frame | None:
        """Gather HEADERS + CONTINUATION into one frame, within the bounds."""
        pending = self._headers_buffer
        if pending:
            if not isinstance(frame, ContinuationFrame) or frame.stream_id != pending[0].stream_id:
                raise h2.exceptions.ProtocolError("Invalid frame during header block.")
            pending.append(frame)
            self._check_block(len(frame.data), len(pending) - 1)
            if "END_HEADERS" not in frame.flags:
                return None
            first = pending[0]
            first.flags.add("END_HEADERS")
            first.data = b"".join(bytes(f.data) for f in pending)
            self._headers_buffer = []
            return first
        if isinstance(frame, (HeadersFrame, PushPromiseFrame)):
            self._block_bytes = 0
            self._check_block(len(frame.data), 0)
            if "END_HEADERS" not in frame.flags:
                pending.append(frame)
                return None
        return frame

    def _check_block(self, size: int, continuations: int) -> None:
        self._block_bytes += size
        limits = self._limits
        if self._block_bytes > limits.max_header_block:
            raise Calm(f"header block larger than {limits.max_header_block} bytes")
        if continuations > limits.max_continuations:
            raise Calm(f"more than {limits.max_continuations} CONTINUATION frames")


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
        flags = _END_HEADERS
        if end_stream:
            machine.process_input(StreamInputs.SEND_END_STREAM)
            flags |= _END_STREAM
        elif machine.trailers_sent:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set.")
        stream.request_method = None  # a response's headers carry no :method
        self._data_to_send += _frame_header(len(block), _HEADERS, flags, stream_id) + block

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
            flags = _END_STREAM
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        self._data_to_send += _frame_header(size, _DATA, flags, stream_id) + bytes(data)

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
