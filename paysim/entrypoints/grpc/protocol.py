"""purerpc's gRPC-over-HTTP/2 protocol layer, with its connection-killing faults fixed.

paysim runs purerpc's ``GRPCConnection`` (the sans-I/O layer over h2) under its
own trio listener (``transport.py``). purerpc 0.8.0 is pinned because this
module subclasses its internals. Fixed here, per stream instead of per
connection:

* an oversized message (length prefix above the limit) raised out of
  ``receive_data`` and tore down the whole connection: now that one stream
  fails with RESOURCE_EXHAUSTED, and its remaining DATA is acknowledged and
  dropped so the connection's flow-control window is not lost;
* a gzip-compressed message was fed to ``zlib.decompress`` without gzip
  framing and raised: gzip and deflate are decoded properly, bounded by the
  same size limit (no decompression bombs); an unknown encoding fails that
  stream with UNIMPLEMENTED;
* malformed request headers (a bad ``grpc-timeout``, a wrong content type)
  raised out of ``receive_data``: now they fail that stream only;
* DATA after purerpc had reset a stream raised ``KeyError``; a reset stream's
  buffer was never freed: both handled.

The failures come out as ``StreamFailed`` events, next to purerpc's own events.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import h2.events
import h2.settings
from h2.settings import SettingCodes
from purerpc.grpclib.buffers import MessageReadBuffer
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection
from purerpc.grpclib.events import Event, MessageReceived, RequestReceived
from purerpc.grpclib.exceptions import ProtocolError
from purerpc.grpclib.headers import HeaderDict
from purerpc.grpclib.status import Status, StatusCode

from paysim.entrypoints.grpc.hpack_cache import CachingDecoder, CachingEncoder

SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate")
ACCEPT_ENCODING = ",".join(SUPPORTED_ENCODINGS)


class StreamFailed(Event):  # type: ignore[misc]
    """One stream cannot go on; answer it with ``status`` and forget it."""

    def __init__(self, stream_id: int, status: Status) -> None:
        self.stream_id = stream_id
        self.status = status


class StreamReset(Event):  # type: ignore[misc]
    """The peer reset the stream (RST_STREAM): its call must be cancelled."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _StreamError(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.status_message)
        self.status = status


class BoundedMessageReadBuffer(MessageReadBuffer):  # type: ignore[misc]
    """purerpc's read buffer with real gzip/deflate decoding and typed failures."""

    def decompress(self, data: bytes) -> bytes:
        encoding = self._message_encoding
        if encoding == "gzip":
            wbits = 16 + zlib.MAX_WBITS
        elif encoding == "deflate":
            wbits = zlib.MAX_WBITS
        else:
            raise _StreamError(
                Status(
                    StatusCode.UNIMPLEMENTED,
                    f"message compressed with unsupported encoding; accepted: {ACCEPT_ENCODING}",
                )
            )
        limit = self._max_message_length
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(data, limit + 1)
        except zlib.error:
            raise _StreamError(
                Status(StatusCode.INTERNAL, f"could not decompress {encoding} message")
            ) from None
        if len(out) > limit or decoder.unconsumed_tail:
            raise _StreamError(
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"decompressed message larger than the limit of {limit} bytes",
                )
            )
        return out

    def _parse_one_message(self) -> tuple[bytes | None, int]:
        if self._message_length is None and len(self._buffer) >= 5:
            header = bytes(self._buffer._deque[0][0][:5]) if self._buffer._deque else b""
            if len(header) == 5 and header[0] and self._message_encoding in (None, "identity"):
                raise _StreamError(
                    Status(
                        StatusCode.INTERNAL,
                        "compressed flag set but no grpc-encoding was given",
                    )
                )
        try:
            result: tuple[bytes | None, int] = super()._parse_one_message()
        except ProtocolError as exc:  # MessageTooLargeError
            raise _StreamError(
                Status(StatusCode.RESOURCE_EXHAUSTED, f"{exc}; limit is enforced per message")
            ) from None
        return result


class ServerConnection(GRPCConnection):  # type: ignore[misc]
    """Server side of one HTTP/2 connection; never raises for a single bad stream."""

    def __init__(
        self,
        max_message_length: int,
        max_concurrent_streams: int,
        constant_headers: Sequence[Sequence[tuple[str, str]]] = (),
    ) -> None:
        self._max_concurrent_streams = max_concurrent_streams
        super().__init__(
            GRPCConfiguration(client_side=False, max_message_length=max_message_length)
        )
        # Outbound headers are ours and well-formed: skip h2's per-header checks.
        # Inbound headers are checked by purerpc's parser (method, scheme, path,
        # te, content-type) and h2's framing and HPACK checks still apply.
        cfg = self.h2_connection.config
        cfg.validate_outbound_headers = False
        cfg.normalize_outbound_headers = False
        cfg.validate_inbound_headers = False
        cfg.normalize_inbound_headers = False
        self._failed: set[int] = set()
        h2c = self.h2_connection
        h2c.decoder = CachingDecoder(h2c.decoder)
        h2c.encoder = CachingEncoder(h2c.encoder, constant_headers)

    def _set_h2_connection_local_settings(self) -> None:
        self.h2_connection.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self._max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: min(
                    2 * self.config.max_message_length, 2**31 - 1
                ),
                SettingCodes.MAX_FRAME_SIZE: self.MAX_INBOUND_FRAME_SIZE,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.MAX_HEADER_LIST_SIZE,
            },
        )
        self.h2_connection.max_inbound_frame_size = self.MAX_INBOUND_FRAME_SIZE

    def forget(self, stream_id: int) -> None:
        """Drop all per-stream state once the stream is done."""
        self.message_read_buffers.pop(stream_id, None)
        self._failed.discard(stream_id)

    def _fail(self, stream_id: int, status: Status) -> list[Any]:
        self.message_read_buffers.pop(stream_id, None)
        self._failed.add(stream_id)
        return [StreamFailed(stream_id, status)]

    def _request_received(self, event: h2.events.RequestReceived) -> list[Any]:
        try:
            request = RequestReceived.parse_from_stream_id_and_headers_destructive(
                event.stream_id, HeaderDict(event.headers)
            )
        except (ProtocolError, ValueError, KeyError):
            return self._fail(
                event.stream_id, Status(StatusCode.INTERNAL, "malformed gRPC request headers")
            )
        if event.stream_ended:
            return [
                request,
                *self._fail(event.stream_id, Status(StatusCode.INTERNAL, "request has no body")),
            ]
        encoding = request.message_encoding
        if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
            return [
                request,
                *self._fail(
                    event.stream_id,
                    Status(
                        StatusCode.UNIMPLEMENTED,
                        f"grpc-encoding {encoding!r} is not supported; accepted: {ACCEPT_ENCODING}",
                    ),
                ),
            ]
        self.message_read_buffers[event.stream_id] = BoundedMessageReadBuffer(
            encoding, self.config.max_message_length
        )
        return [request]

    def _data_received(self, event: h2.events.DataReceived) -> list[Any]:
        stream_id = event.stream_id
        buffer = self.message_read_buffers.get(stream_id)
        if buffer is None:
            # A failed, finished or unknown stream: give the window back, drop the bytes.
            if event.flow_controlled_length:
                self.h2_connection.acknowledge_received_data(
                    event.flow_controlled_length, stream_id
                )
            return []
        try:
            buffer.data_received(event.data, event.flow_controlled_length)
        except _StreamError as exc:
            # Everything this stream sent so far goes back into the window.
            if event.flow_controlled_length:
                self.h2_connection.acknowledge_received_data(
                    event.flow_controlled_length, stream_id
                )
            return self._fail(stream_id, exc.status)
        return [
            MessageReceived(stream_id, message, length)
            for message, length in buffer.read_all_complete_messages_flowcontrol()
        ]

    def _stream_ended(self, event: h2.events.StreamEnded) -> list[Any]:
        if event.stream_id in self._failed:
            return []
        result: list[Any] = super()._stream_ended(event)
        return result

    def _stream_reset(self, event: h2.events.StreamReset) -> list[Any]:
        self.forget(event.stream_id)
        return [StreamReset(event.stream_id)]
