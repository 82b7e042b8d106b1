"""Length-prefixed gRPC messages out of one stream's DATA, bounded and accounted.

A ``MessageReader`` belongs to one request stream. ``feed`` takes a DATA
frame's bytes and its flow-controlled length (bytes plus padding) and returns
the messages it completed, each with the flow-controlled bytes it used, so the
transport can hand exactly those back to the peer's window when the handler
has consumed the message, and not before. ``unacknowledged`` is what the stream
still holds (a partial message): the transport returns it when it forgets the
stream, so a stream that ends mid-message cannot shrink the connection window.

A failure raises ``MessageError`` with the gRPC status the stream must end
with: a message over the limit (RESOURCE_EXHAUSTED, before its body is
buffered); a compressed flag that is neither 0 nor 1, or a compressed body that
does not decompress to exactly one complete stream (INVALID_ARGUMENT: a
truncated or corrupt body is the caller's error); the compressed flag without
grpc-encoding (INTERNAL, as the gRPC spec and grpc-go have it); an unknown
encoding (UNIMPLEMENTED). Decompression is bounded by the same limit
(no decompression bombs).
"""

from __future__ import annotations

import zlib

from purerpc.grpclib.status import Status, StatusCode

SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate")
ACCEPT_ENCODING = ",".join(SUPPORTED_ENCODINGS)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class MessageError(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.status_message)
        self.status = status


def unsupported_encoding(encoding: str) -> Status:
    return Status(
        StatusCode.UNIMPLEMENTED,
        f"grpc-encoding {encoding!r} is not supported; accepted: {ACCEPT_ENCODING}",
    )


class MessageReader:
    __slots__ = ("_buffer", "_encoding", "_limit", "unacknowledged")

    def __init__(self, encoding: str | None, limit: int) -> None:
        self._encoding = None if encoding in (None, "identity") else encoding
        self._limit = limit
        self._buffer = bytearray()
        self.unacknowledged = 0

    def feed(self, data: bytes, flow_controlled: int) -> list[tuple[bytes, int]]:
        """The messages ``data`` completes, each with its flow-controlled length."""
        buffer = self._buffer
        buffer += data
        self.unacknowledged += flow_controlled
        out: list[tuple[bytes, int]] = []
        while len(buffer) >= 5:
            flag = buffer[0]
            length = int.from_bytes(buffer[1:5], "big")
            if length > self._limit:
                raise MessageError(
                    Status(
                        StatusCode.RESOURCE_EXHAUSTED,
                        f"request message of {length} bytes is larger than the limit of "
                        f"{self._limit} bytes",
                    )
                )
            if flag > 1:
                raise MessageError(
                    Status(StatusCode.INVALID_ARGUMENT, "message flag must be 0 or 1")
                )
            end = 5 + length
            if len(buffer) < end:
                break
            payload = bytes(buffer[5:end])
            del buffer[:end]
            out.append((self._decompress(payload) if flag else payload, end))
        if out:
            # Padding and partial-frame slack go with the last complete message.
            used = self.unacknowledged - len(buffer)
            last, size = out[-1]
            out[-1] = (last, size + used - sum(n for _, n in out))
            self.unacknowledged = len(buffer)
        return out

    def _decompress(self, payload: bytes) -> bytes:
        encoding = self._encoding
        if encoding is None:
            raise MessageError(
                Status(StatusCode.INTERNAL, "compressed flag set but no grpc-encoding was given")
            )
        wbits = _WBITS.get(encoding)
        if wbits is None:
            raise MessageError(unsupported_encoding(encoding))
        limit = self._limit
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(payload, limit + 1)
        except zlib.error:
            raise MessageError(
                Status(StatusCode.INVALID_ARGUMENT, f"{encoding} message is corrupt")
            ) from None
        if len(out) > limit or decoder.unconsumed_tail:
            raise MessageError(
                Status(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"decompressed message larger than the limit of {limit} bytes",
                )
            )
        if not decoder.eof or decoder.unused_data:
            raise MessageError(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"{encoding} message is truncated or has trailing bytes",
                )
            )
        return out
