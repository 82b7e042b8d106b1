"""A raw HTTP/2 gRPC client for transport tests: full control over frames.

Stock clients hide exactly what these tests need to do: send a message with a
lying length prefix, compress by hand, reset one stream, drop the socket
mid-call. This one speaks h2 directly over a trio stream.
"""

from __future__ import annotations

import struct
import urllib.parse
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import trio

# A CreatePaymentIntent request's headers in a fixed order (the h2 fast-path tests
# encode them into header blocks, so the order is part of the bytes).
CREATE_REQUEST_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/payment.v1.PaymentService/CreatePaymentIntent"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def frame(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message (``length`` may lie, on purpose)."""
    return struct.pack(">?I", compressed, len(payload) if length is None else length) + payload


@dataclass
class Response:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    reset_code: int | None = None
    ended: trio.Event = field(default_factory=trio.Event)

    @property
    def status(self) -> int | None:
        meta = self.trailers or self.headers
        return int(meta["grpc-status"]) if "grpc-status" in meta else None

    @property
    def message(self) -> str:
        meta = self.trailers or self.headers
        return urllib.parse.unquote(meta.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        out, buf = [], bytes(self.data)
        while len(buf) >= 5:
            _, n = struct.unpack(">?I", buf[:5])
            out.append(buf[5 : 5 + n])
            buf = buf[5 + n :]
        return out


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.responses: dict[int, Response] = {}
        self.closed = trio.Event()
        self.goaway: h2.events.ConnectionTerminated | None = None
        self._send_lock = trio.Lock()

    @classmethod
    async def connect(cls, nursery: trio.Nursery, port: int) -> RawClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.flush()
        nursery.start_soon(client._pump)
        return client

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def _pump(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    return
                for ev in self.conn.receive_data(data):
                    self._on_event(ev)
                await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            self.closed.set()
            for resp in self.responses.values():
                resp.ended.set()

    def _on_event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            return
        sid = getattr(ev, "stream_id", 0)
        resp = self.responses.get(sid)
        if resp is None:
            return
        if isinstance(ev, h2.events.ResponseReceived):
            resp.headers = dict(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived):
            resp.trailers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            resp.data += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, h2.events.StreamReset):
            resp.reset_code = ev.error_code
            resp.ended.set()
        if getattr(ev, "stream_ended", None) is not None or isinstance(ev, h2.events.StreamEnded):
            resp.ended.set()

    async def start(
        self,
        path: str,
        body: bytes | None = None,
        *,
        timeout: str | None = None,
        encoding: str | None = None,
        end_stream: bool = True,
        content_type: str = "application/grpc",
    ) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("te", "trailers"),
            ("content-type", content_type),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        if encoding is not None:
            headers.append(("grpc-encoding", encoding))
        self.responses[sid] = Response()
        self.conn.send_headers(sid, headers, end_stream=body is None and end_stream)
        if body is not None:
            size = self.conn.max_outbound_frame_size
            chunks = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
            for i, chunk in enumerate(chunks):
                self.conn.send_data(sid, chunk, end_stream=end_stream and i == len(chunks) - 1)
        await self.flush()
        return sid

    async def call(self, path: str, body: bytes, **kwargs: object) -> Response:
        sid = await self.start(path, body, **kwargs)  # type: ignore[arg-type]
        resp = self.responses[sid]
        await resp.ended.wait()
        return resp

    async def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, 8)  # CANCEL
        await self.flush()

    async def aclose(self) -> None:
        await self.stream.aclose()
