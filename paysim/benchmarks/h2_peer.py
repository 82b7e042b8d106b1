"""A frame-level HTTP/2 peer for hostile tests and benchmarks: it sends what no library would.

``FramePeer`` writes frames exactly as told (any length, any order, any flood)
and reads the server's frames back, keeping what the tests look at: the
GOAWAY, each stream's RST_STREAM code and response headers, the flow-control
credit the server granted, and whether the server closed the socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import hpack
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from trio_util import AsyncValue

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB


def request_headers(path: str, **extra: str) -> list[tuple[str, str]]:
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
    ]
    headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return headers


def grpc_message(payload: bytes) -> bytes:
    return struct.pack(">?I", False, len(payload)) + payload


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """Any frame, including one whose declared length is a lie (pass a short payload)."""
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


@dataclass
class StreamSeen:
    headers: list[tuple[str, str]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    ended: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class FramePeer:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, StreamSeen] = {}
        self.goaway: GoAwayFrame | None = None
        self.closed = trio.Event()
        self.reads = AsyncValue(0)  # trio-util: bumped per read; ``wait`` tests its predicate
        self.granted = 0  # WINDOW_UPDATE credit on stream 0
        self.pings_acked = 0
        self.frames_seen = 0
        self._buffer = b""

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, port: int, *, settings: dict[int, int] | None = None
    ) -> FramePeer:
        peer = cls(await trio.open_tcp_stream("127.0.0.1", port))
        first = SettingsFrame(0)
        first.settings = settings or {}
        await peer.send_raw(PREFACE + first.serialize())
        nursery.start_soon(peer._read)
        return peer

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, *frames: Frame) -> None:
        await self.send_raw(b"".join(f.serialize() for f in frames))

    def headers_frame(
        self,
        sid: int,
        headers: list[tuple[str, str]],
        *,
        end_stream: bool = False,
        end_headers: bool = True,
    ) -> HeadersFrame:
        f = HeadersFrame(sid)
        f.data = self.encoder.encode(headers)
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    @staticmethod
    def data_frame(sid: int, data: bytes, *, end_stream: bool = False) -> DataFrame:
        f = DataFrame(sid)
        f.data = data
        if end_stream:
            f.flags.add("END_STREAM")
        return f

    @staticmethod
    def continuation(sid: int, data: bytes, *, end_headers: bool = False) -> ContinuationFrame:
        f = ContinuationFrame(sid)
        f.data = data
        if end_headers:
            f.flags.add("END_HEADERS")
        return f

    @staticmethod
    def rst(sid: int, code: int = CANCEL) -> RstStreamFrame:
        f = RstStreamFrame(sid)
        f.error_code = code
        return f

    @staticmethod
    def window_update(sid: int, increment: int) -> WindowUpdateFrame:
        f = WindowUpdateFrame(sid)
        f.window_increment = increment
        return f

    @staticmethod
    def ping(opaque: bytes = b"12345678") -> PingFrame:
        f = PingFrame(0)
        f.opaque_data = opaque
        return f

    async def call(self, sid: int, path: str, body: bytes, **headers: str) -> None:
        """A whole unary request on ``sid`` in one write."""
        await self.send(
            self.headers_frame(sid, request_headers(path, **headers)),
            self.data_frame(sid, grpc_message(body), end_stream=True),
        )

    async def wait(self, predicate: object, timeout: float = 5.0) -> None:
        """Until ``predicate()`` holds or the server closed the socket."""
        with trio.fail_after(timeout):
            while not predicate() and not self.closed.is_set():  # type: ignore[operator]
                await self.reads.wait_transition()

    async def wait_closed(self, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            await self.closed.wait()

    def seen(self, sid: int) -> StreamSeen:
        return self.streams.setdefault(sid, StreamSeen())

    async def _read(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                self._buffer += data
                self._parse()
                self.reads.value += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.closed.set()
            self.reads.value += 1

    def _parse(self) -> None:
        buf = self._buffer
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf)[:9])
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf)[9 : 9 + length])
            buf = buf[9 + length :]
            self.frames_seen += 1
            self._on(frame)
        self._buffer = buf

    def _on(self, frame: Frame) -> None:
        if isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, WindowUpdateFrame) and frame.stream_id == 0:
            self.granted += frame.window_increment
        elif isinstance(frame, PingFrame) and "ACK" in frame.flags:
            self.pings_acked += 1
        elif isinstance(frame, HeadersFrame):
            seen = self.seen(frame.stream_id)
            seen.headers += [
                (k.decode(), v.decode()) for k, v in self.decoder.decode(frame.data, raw=True)
            ]
            seen.ended = seen.ended or "END_STREAM" in frame.flags
        elif isinstance(frame, DataFrame):
            seen = self.seen(frame.stream_id)
            seen.data += frame.data
            seen.ended = seen.ended or "END_STREAM" in frame.flags
        elif isinstance(frame, RstStreamFrame):
            self.seen(frame.stream_id).reset = frame.error_code

    async def aclose(self) -> None:
        await self.stream.aclose()
