"""``ServerConnection`` parses a header list once per connection: each stream still
gets its own ``RequestReceived`` with its own stream id, a different list is
parsed on its own, a bad list fails every time, and the cache stays small."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
from purerpc.grpclib.events import RequestReceived

from paysim.entrypoints.grpc.calls import OK_TRAILERS, RESPONSE_HEADERS
from paysim.entrypoints.grpc.protocol import ConnectionLimits, ServerConnection, StreamFailed

PATH = "/payment.v1.PaymentService/CreatePaymentIntent"


def _request(
    extra: tuple[tuple[str, str], ...] = (), content_type: str = "application/grpc"
) -> Any:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", "localhost"),
        ("content-type", content_type),
        ("te", "trailers"),
        ("grpc-accept-encoding", "identity,gzip"),
        *extra,
    ]


def _send(header_lists: list[Any]) -> tuple[ServerConnection, list[Any]]:
    server = ServerConnection(
        ConnectionLimits(max_message_length=4096, max_concurrent_streams=1000),
        (RESPONSE_HEADERS, OK_TRAILERS),
        clock=lambda: 0.0,
    )
    server.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    for n, headers in enumerate(header_lists):
        client.send_headers(1 + 2 * n, headers)
    return server, server.receive_data(client.data_to_send())


def test_each_stream_gets_its_own_request_from_one_parse() -> None:
    _, events = _send([_request(), _request(), _request((("x-trace", "abc"),))])
    first, second, third = events
    assert all(type(e) is RequestReceived for e in events)
    assert [e.stream_id for e in events] == [1, 3, 5]
    assert first is not second
    assert first.message_accept_encoding == ["identity", "gzip"]
    assert first.message_accept_encoding is not second.message_accept_encoding
    assert (first.service_name, first.method_name) == (
        "payment.v1.PaymentService",
        "CreatePaymentIntent",
    )
    assert first.custom_metadata == second.custom_metadata == ()
    assert third.custom_metadata == (("x-trace", "abc"),)
    assert vars(first) == {**vars(second), "stream_id": 1}


def test_a_bad_header_list_fails_every_time() -> None:
    bad = _request(content_type="text/plain")
    _, events = _send([_request(), bad, bad, _request()])
    assert [type(e) for e in events] == [
        RequestReceived,
        StreamFailed,
        StreamFailed,
        RequestReceived,
    ]
    assert [e.http_status for e in events[1:3]] == [415, 415]
    assert [e.stream_id for e in events] == [1, 3, 5, 7]


def test_the_cache_stays_small_whatever_the_peer_sends() -> None:
    lists = [_request((("x-n", str(n)),)) for n in range(100)]
    server, events = _send(lists)
    assert [e.custom_metadata for e in events] == [(("x-n", str(n)),) for n in range(100)]
    assert 0 < len(server._requests) <= 32


def test_the_hpack_block_cache_is_bounded_in_bytes_not_only_in_blocks():
    """A peer sending distinct large table-neutral blocks cannot make one connection hold
    megabytes of cached blocks: what does not fit is decoded and not kept; small blocks
    (a gRPC request's) are still cached, and a table change empties the cache."""
    from hpack import Decoder

    from paysim.entrypoints.grpc import hpack_cache
    from paysim.entrypoints.grpc.hpack_cache import CachingDecoder, encode_without_indexing

    decoder = CachingDecoder(Decoder(max_header_list_size=65_536))
    for i in range(200):  # 200 distinct ~4 KiB blocks: 800 KiB if all were kept
        block = encode_without_indexing([("x-pad", f"{i:04d}" + "a" * 4000)])
        assert decoder.decode(block, raw=True) == [(b"x-pad", f"{i:04d}".encode() + b"a" * 4000)]
    assert decoder.cached_bytes <= hpack_cache._CACHE_BYTES
    assert len(decoder._cache) < 10
    small = encode_without_indexing([(":path", "/payment.v1.PaymentService/GetPaymentStatus")])
    decoder._cache.clear()
    decoder.cached_bytes = 0
    decoder.decode(small, raw=True)
    assert decoder.cached(small) is not None
    with_indexing = b"\x40" + bytes([1]) + b"a" + bytes([1]) + b"b"  # literal with indexing
    decoder.decode(with_indexing, raw=True)
    assert decoder.cached(small) is None
    assert decoder.cached_bytes == 0
