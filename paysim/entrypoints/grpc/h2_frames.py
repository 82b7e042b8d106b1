"""h2's frame buffer, bounded, with a shortcut for the frames every call sends.

h2 3.2 buffers a frame of any announced length before checking it, accepts 64
CONTINUATION frames of any size, and copies its receive buffer once per frame.
``GuardedFrameBuffer`` refuses a frame longer than our advertised
SETTINGS_MAX_FRAME_SIZE as soon as its 9-byte header arrives
(FRAME_SIZE_ERROR), bounds a header block (HEADERS plus CONTINUATION) to
``max_header_block`` bytes and ``max_continuations`` CONTINUATION frames before
any of it is decoded (past either: ENHANCE_YOUR_CALM), and keeps one read
offset instead of copying.

The common frames skip hyperframe: an unpadded DATA frame, a HEADERS frame with
END_HEADERS and neither padding nor priority, and a WINDOW_UPDATE with its
4-byte body (grpcio sends two per call, one for the stream and one for the
connection) come out as a ``RawFrame`` or ``RawWindowUpdate`` (the attributes
h2's handlers read), after the same size and header-block checks; anything
hyperframe could refuse or read differently goes through hyperframe.
``h2_guard.GuardedH2Connection`` hands them to h2's own handlers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import h2.exceptions
from h2.frame_buffer import FrameBuffer
from hyperframe.exceptions import InvalidFrameError
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame, PushPromiseFrame

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream
_INCREMENT = struct.Struct(">L")  # all 32 bits, as hyperframe reads them (h2 refuses bit 31)
DATA, HEADERS, _WINDOW_UPDATE = 0x0, 0x1, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4
_PADDED, _PRIORITY = 0x8, 0x20
_FLAG_NAMES = {
    0: frozenset(),
    END_STREAM: frozenset({"END_STREAM"}),
    END_HEADERS: frozenset({"END_HEADERS"}),
    END_STREAM | END_HEADERS: frozenset({"END_STREAM", "END_HEADERS"}),
}


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


class RawWindowUpdate:
    """A WINDOW_UPDATE with its 4-byte body: what h2's handler reads of one."""

    __slots__ = ("flags", "stream_id", "window_increment")

    def __init__(self, stream_id: int, window_increment: int) -> None:
        self.stream_id = stream_id
        self.window_increment = window_increment
        self.flags: frozenset[str] = frozenset()  # WINDOW_UPDATE defines none


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

    def next(self) -> Frame | RawFrame | RawWindowUpdate:
        limit = self._limits.max_frame_size
        while True:
            data, pos = self.data, self._pos
            if len(data) - pos < 9:
                raise StopIteration
            high, low, kind, flags, sid = FRAME_HEADER.unpack_from(data, pos)
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
        WINDOW_UPDATE of 4 bytes; DATA or HEADERS on a stream, with no padding and no
        priority; outside a header block."""
        if self._headers_buffer:
            return False
        if kind == _WINDOW_UPDATE:
            return length == 4
        if not sid:
            return False
        if kind == DATA:
            return not flags & _PADDED and bool(length or flags & END_STREAM)
        return kind == HEADERS and flags & (_PADDED | _PRIORITY | END_HEADERS) == END_HEADERS

    def _raw_frame(
        self, kind: int, flags: int, sid: int, body: bytes
    ) -> RawFrame | RawWindowUpdate:
        """A common frame as hyperframe would have parsed it (undefined flags ignored);
        a header block within the bound, as in ``_header_block``."""
        if kind == _WINDOW_UPDATE:
            return RawWindowUpdate(sid, _INCREMENT.unpack(body)[0])
        if kind == DATA:
            return RawData(sid, body, _FLAG_NAMES[flags & END_STREAM])
        self._block_bytes = 0
        self._check_block(len(body), 0)
        return RawHeaders(sid, body, _FLAG_NAMES[flags & (END_STREAM | END_HEADERS)])

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
