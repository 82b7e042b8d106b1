"""The receive shortcut in ``GuardedFrameBuffer``/``GuardedH2Connection`` is h2's own
receive: the same events, stream states, windows, queued bytes and errors. Each
case feeds the same client bytes to two connections, one with the shortcut and
one forced through hyperframe and h2's own handlers (``shortcut = False``), and
compares them after every chunk; a seeded fuzzer covers the odd frames."""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.stream import StreamState
from hpack import Encoder
from hyperframe.flags import Flags

from paysim.entrypoints.grpc.calls import OK_TRAILERS, RESPONSE_HEADERS
from paysim.entrypoints.grpc.h2_frames import RawWindowUpdate
from paysim.entrypoints.grpc.h2_guard import FrameLimits, GuardedH2Connection, RawData, RawHeaders
from paysim.entrypoints.grpc.hpack_cache import encode_without_indexing
from paysim.entrypoints.grpc.protocol import ConnectionLimits, ServerConnection
from tests.h2_client import CREATE_REQUEST_HEADERS

REQUEST = CREATE_REQUEST_HEADERS
BODY = b"\x00\x00\x00\x00\x03abc"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

# Header blocks: table-neutral (cacheable) or not, well-formed or not.
NEUTRAL = encode_without_indexing(REQUEST)
WITH_LENGTH = encode_without_indexing([*REQUEST, ("content-length", "8")])
TRAILERS = encode_without_indexing([("grpc-status", "0")])
INFORMATIONAL = encode_without_indexing([(":status", "100")])
_indexing = Encoder()
INDEXING_FIRST = _indexing.encode(REQUEST)  # literals with indexing: the table changes
INDEXING_AGAIN = _indexing.encode(REQUEST)  # indexed fields naming those entries
SHIFT = b"\x40\x01x\x01y" + NEUTRAL  # adds ("x", "y"): every dynamic index moves by one
SIZE_UPDATE = b"\x3f\xe1\x1f" + NEUTRAL  # a table-size update (4096), then the request
GARBAGE = b"\xff\xff\xff\xff\xff"
BLOCKS = [NEUTRAL, WITH_LENGTH, TRAILERS, INFORMATIONAL, INDEXING_FIRST, INDEXING_AGAIN]
BLOCKS += [SHIFT, SIZE_UPDATE, GARBAGE, b""]


def frame(kind: int, flags: int, sid: int, body: bytes = b"") -> bytes:
    n = len(body)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, kind, flags, sid) + body


def headers(sid: int, block: bytes = NEUTRAL, flags: int = 0x4) -> bytes:
    return frame(0x1, flags, sid, block)


def data(sid: int, body: bytes = BODY, flags: int = 0x1) -> bytes:
    return frame(0x0, flags, sid, body)


def call(sid: int, block: bytes = NEUTRAL) -> bytes:
    return headers(sid, block) + data(sid)


def window_update(sid: int, increment: int, flags: int = 0x0) -> bytes:
    return frame(0x8, flags, sid, struct.pack(">L", increment))


def grpcio_call(sid: int) -> bytes:
    """What grpcio 1.85 sends per unary call: HEADERS, the stream's WINDOW_UPDATE,
    DATA with END_STREAM, and (after the answer) the connection's WINDOW_UPDATE."""
    return headers(sid) + window_update(sid, 5) + data(sid) + window_update(0, 178)


def _server(shortcut: bool) -> GuardedH2Connection:
    server = ServerConnection(
        ConnectionLimits(
            max_message_length=100,
            max_header_list_size=1024,
            frames=FrameLimits(max_header_block=3000),
        ),
        (RESPONSE_HEADERS, OK_TRAILERS),
        clock=lambda: 0.0,
    )
    server.initiate_connection()
    h2c = server.h2_connection
    h2c.incoming_buffer.shortcut = shortcut
    h2c.data_to_send()  # our SETTINGS: not under test
    return h2c


def _describe(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return type(value).__name__
    if isinstance(value, h2.events.Event):
        fields = sorted(vars(value).items())
        return type(value).__name__, [(k, _describe(v, depth + 1)) for k, v in fields]
    if isinstance(value, list):
        return [(type(v).__name__, _describe(v, depth + 1)) for v in value]
    if isinstance(value, tuple):
        return tuple(_describe(v, depth + 1) for v in value)
    if isinstance(value, Flags):
        return sorted(value)
    if hasattr(value, "__dict__"):  # e.g. the hyperframe frame of UnknownFrameReceived
        fields = sorted(vars(value).items())
        return type(value).__name__, [(k, _describe(v, depth + 1)) for k, v in fields]
    return repr(value)


def _state(h2c: GuardedH2Connection) -> Any:
    return (
        h2c.data_to_send(),
        h2c.state_machine.state,
        h2c.highest_inbound_stream_id,
        h2c._inbound_flow_control_window_manager.current_window_size,
        h2c.outbound_flow_control_window,
        h2c.decoder.header_table.dynamic_entries,
        {
            sid: (
                s.state_machine.state,
                s._inbound_window_manager.current_window_size,
                s.outbound_flow_control_window,
                s._expected_content_length,
                s._actual_content_length,
            )
            for sid, s in h2c.streams.items()
        },
    )


def _run(chunks: list[bytes], shortcut: bool) -> list[Any]:
    h2c = _server(shortcut)
    trace: list[Any] = []
    for chunk in chunks:
        try:
            outcome: Any = _describe(h2c.receive_data(chunk))
        except h2.exceptions.H2Error as exc:
            # hpack's messages name a memoryview by its address: not under test
            outcome = (type(exc).__name__, re.sub(r" at 0x[0-9a-f]+", "", str(exc)))
        trace.append((outcome, _state(h2c)))
        if isinstance(outcome, tuple):
            break
    return trace


def assert_same(chunks: list[bytes]) -> list[Any]:
    fast, slow = _run(chunks, shortcut=True), _run(chunks, shortcut=False)
    assert fast == slow
    return fast


def test_unary_calls_are_the_same_events_and_state() -> None:
    trace = assert_same([PREFACE, call(1), call(3) + call(5), call(7)[:20], call(7)[20:]])
    events = [outcome for outcome, _ in trace[1:]]
    assert events[2] == []  # half a HEADERS frame: nothing yet
    assert all(isinstance(outcome, list) and outcome for outcome in events[:2] + events[3:])
    assert "RequestReceived" in str(events[-1])
    h2c = _server(True)
    h2c.receive_data(PREFACE + call(1) + call(3))
    assert h2c.streams[3].state_machine.state is StreamState.HALF_CLOSED_REMOTE


def test_the_shortcut_is_taken_for_common_frames_only() -> None:
    h2c = _server(True)
    h2c.receive_data(PREFACE)
    buffer = h2c.incoming_buffer
    buffer.add_data(call(1) + headers(3, b"\x00" + NEUTRAL, 0x4 | 0x8) + data(5, b"", 0x0))
    assert type(next(buffer)) is RawHeaders
    assert type(next(buffer)) is RawData
    assert type(next(buffer)).__name__ == "HeadersFrame"  # padded: hyperframe's
    assert type(next(buffer)).__name__ == "DataFrame"  # empty, stream not ended
    buffer.add_data(window_update(0, 178) + window_update(5, 5, 0xFF) + frame(0x8, 0, 1, b"12345"))
    assert type(next(buffer)) is RawWindowUpdate
    update = next(buffer)
    assert isinstance(update, RawWindowUpdate)
    assert (update.stream_id, update.window_increment) == (5, 5)
    with pytest.raises(h2.exceptions.FrameDataMissingError):  # 5 bytes: hyperframe's, refused
        next(buffer)


def _count_decodes(h2c: Any) -> list[bytes]:
    """The header blocks h2's HPACK decoder is given from now on, appended as it decodes them."""
    decoded: list[bytes] = []
    original = h2c.decoder.decode

    def counting(block: bytes, raw: bool = False) -> Any:
        decoded.append(bytes(block))
        return original(block, raw)

    h2c.decoder.decode = counting
    return decoded


def test_a_known_request_block_is_not_decoded_again() -> None:
    h2c = _server(True)
    decoded = _count_decodes(h2c)
    events = h2c.receive_data(PREFACE + call(1) + call(3) + call(5, WITH_LENGTH))
    events += h2c.receive_data(call(7, WITH_LENGTH))
    assert decoded == [NEUTRAL, WITH_LENGTH]
    requests = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [r.headers for r in requests[:2]] == [REQUEST, REQUEST]
    assert requests[0].headers is not requests[1].headers


def test_known_requests_are_bounded_and_start_over() -> None:
    h2c = _server(True)
    h2c.receive_data(PREFACE)
    for n in range(40):
        block = encode_without_indexing([*REQUEST, ("x-n", str(n))])
        h2c.receive_data(call(1 + 2 * n, block))
        assert len(h2c.decoder.requests) == n % 32 + 1
    assert len(h2c.decoder._cache) == 40  # the HPACK cache has its own bound (256)


@pytest.mark.parametrize(
    "chunks",
    [
        # the cache is dropped when a block changes the table, and rebuilt after
        [PREFACE, call(1), call(3, INDEXING_FIRST), call(5, INDEXING_AGAIN), call(7)],
        [PREFACE, call(1), call(3, SIZE_UPDATE), call(5)],
        [PREFACE, call(1, INDEXING_FIRST), call(3, INDEXING_FIRST), call(5, INDEXING_FIRST)],
        [
            PREFACE,
            call(1, INDEXING_FIRST),
            call(3, INDEXING_AGAIN),
            call(5, SHIFT),
            call(7, INDEXING_AGAIN),
        ],
        # request without a body; trailers; trailers without END_STREAM
        [PREFACE, headers(1, NEUTRAL, 0x5), call(3)],
        [PREFACE, headers(1) + data(1, BODY, 0) + headers(1, TRAILERS, 0x5)],
        [PREFACE, headers(1) + headers(1, TRAILERS, 0x4)],
        # content-length that the body does not match
        [PREFACE, call(1, WITH_LENGTH), headers(3, WITH_LENGTH) + data(3, b"x" * 9)],
        [PREFACE, call(1, WITH_LENGTH), headers(3, WITH_LENGTH) + data(3, b"x" * 2)],
        [PREFACE, call(1), call(3, encode_without_indexing([*REQUEST, ("content-length", "8x")]))],
        # DATA on a closed, a reset, an unknown or a never-opened stream
        [PREFACE, call(1), data(1)],
        [PREFACE, call(1), call(3), data(1, b"x", 0)],
        [PREFACE, headers(1) + frame(0x3, 0, 1, b"\x00\x00\x00\x08"), data(1)],
        [PREFACE, data(9)],
        [PREFACE, call(5), data(3)],
        # stream ids: reused, lower, even, reserved bit set
        [PREFACE, call(5), call(5)],
        [PREFACE, call(5), call(3)],
        [PREFACE, call(2)],
        [PREFACE, call(0x80000001), call(3)],
        [PREFACE, call(1), data(0x80000000)],
        [PREFACE, call(1), headers(0x80000000)],
        # more than the stream's window (100 + 5 + 1024 bytes)
        [PREFACE, headers(1) + data(1, b"x" * 1000, 0) + data(1, b"x" * 200)],
        # an informational or undecodable block, and a header list over 1024 bytes
        [PREFACE, call(1, INFORMATIONAL)],
        [PREFACE, call(1), call(3, GARBAGE)],
        [PREFACE, call(1, encode_without_indexing([*REQUEST, ("x", "y" * 1500)]))],
        # a header block past the bound (3000 bytes), and HEADERS in the middle of a block
        [PREFACE, call(1), call(3, encode_without_indexing([("x", "y" * 3000)]))],
        [PREFACE, headers(1, NEUTRAL[:5], 0x0) + headers(3)],
        # undefined flag bits are ignored, as hyperframe does
        [PREFACE, headers(1, NEUTRAL, 0x4 | 0x2 | 0x40) + data(1, BODY, 0x1 | 0x10)],
        # WINDOW_UPDATE as grpcio sends them; on a closed stream (ignored: §5.1), on an
        # idle one; zero, the largest, one past it (bit 31), a window past 2^31 - 1;
        # undefined flags; inside a header block; a wrong length
        [PREFACE, grpcio_call(1), grpcio_call(3) + grpcio_call(5), grpcio_call(7)[:30]],
        [PREFACE, call(1), window_update(1, 10), window_update(9, 10)],
        [PREFACE, call(1), window_update(0, 0)],
        [PREFACE, call(1), window_update(1, 0)],
        [PREFACE, call(1), window_update(0, 2**31 - 1)],
        [PREFACE, headers(1), window_update(1, 2**31 - 1), window_update(1, 1)],
        [PREFACE, call(1), window_update(0, 2**31), call(3)],
        [PREFACE, call(1), window_update(0, 2**32 - 1)],
        [PREFACE, headers(1) + window_update(1, 7, 0xFF) + window_update(0, 7, 0x1) + data(1)],
        [PREFACE, headers(1, NEUTRAL[:5], 0x0) + window_update(1, 7)],
        [PREFACE, call(1), frame(0x8, 0, 0, b"\x00\x00\x01"), call(3)],
        [PREFACE, window_update(0, 100) + call(1)],
        # after the connection has ended with GOAWAY
        [PREFACE, frame(0x7, 0, 0, b"\x00" * 8), call(1)],
    ],
)
def test_the_same_as_h2_for_odd_and_hostile_input(chunks: list[bytes]) -> None:
    assert_same(chunks)


def _plausible_frame(rng: random.Random, sid: int) -> bytes:
    """Mostly what clients send: calls on new streams, DATA and trailers on recent ones."""
    near = max(1, sid - 2 * rng.randrange(3))
    return rng.choice(
        [
            call(sid, rng.choice([NEUTRAL, NEUTRAL, WITH_LENGTH, INDEXING_AGAIN, SHIFT])),
            headers(sid, NEUTRAL, rng.choice([0x4, 0x5])),
            data(near, rng.choice([BODY, b"x" * rng.randrange(1, 1200)]), rng.choice([0, 1])),
            headers(near, TRAILERS, rng.choice([0x4, 0x5])),
            window_update(
                rng.choice([0, near, sid + 2]), rng.choice([0, 1, 1000, 1000, 2**31 - 1, 2**31])
            ),
            frame(0x3, 0, near, b"\x00\x00\x00\x08"),
        ]
    )


def _random_frame(rng: random.Random) -> bytes:
    sid = rng.choice([0, 1, 1, 3, 3, 5, 7, 2, 0x80000003, 0x80000000, 101])
    kind = rng.choice([0x0, 0x0, 0x1, 0x1, 0x1, 0x2, 0x3, 0x4, 0x6, 0x8, 0x9, 0x7, 0xA0])
    flags = rng.choice([0x0, 0x1, 0x4, 0x5, 0x8, 0x9, 0x20, 0x24, 0x25, 0x2C, rng.randrange(256)])
    if kind == 0x1 or kind == 0x9:
        body = rng.choice(BLOCKS)
        if flags & 0x8:
            body = b"\x02" + body + b"\x00\x00"
        if flags & 0x20:
            body = b"\x00\x00\x00\x00\x10" + body
    elif kind == 0x0:
        body = rng.choice([b"", BODY, b"x" * rng.randrange(1, 1300)])
        if flags & 0x8:
            body = rng.choice([b"\x01" + body + b"\x00", b"\x50" + body])
    else:
        body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 4, 5, 8, 6])))
    return frame(kind, flags, sid, body)


def _chunks(rng: random.Random) -> list[bytes]:
    frames = [call(1)]  # a connection opens with a request (else h2 refuses most frames)
    for n in range(1, rng.randrange(2, 16)):
        odd = rng.random() < 0.1
        frames.append(_random_frame(rng) if odd else _plausible_frame(rng, 1 + 2 * n))
    stream = PREFACE + b"".join(frames)
    cuts = sorted(rng.sample(range(1, len(stream)), min(3, len(stream) - 1)))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@pytest.mark.parametrize("seed", range(8))
def test_random_frame_sequences_are_the_same_as_h2(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: set[str] = set()
    for _ in range(150):
        trace = assert_same(_chunks(rng))
        last = trace[-1][0]
        outcomes.add(last[0] if isinstance(last, tuple) else "ok")
    assert "ok" in outcomes
    assert len(outcomes) > 3


def test_the_forced_slow_path_is_really_h2s(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[type] = []
    original: Callable[..., Any] = GuardedH2Connection._receive_frame

    def spy(self: GuardedH2Connection, f: Any) -> Any:
        seen.append(type(f))
        return original(self, f)

    monkeypatch.setattr(GuardedH2Connection, "_receive_frame", spy)
    _run([PREFACE, grpcio_call(1)], shortcut=False)
    assert RawData not in seen
    assert RawHeaders not in seen
    assert RawWindowUpdate not in seen
    seen.clear()
    _run([PREFACE, grpcio_call(1)], shortcut=True)
    assert RawData in seen
    assert RawHeaders in seen
    assert RawWindowUpdate in seen


# grpcio 1.85's request blocks for calls with timeout=30, as captured on the wire: grpc
# core indexes each grpc-timeout it sends (literal with incremental indexing) and
# rounds it to two digits (30S, 30100m), so after the second call every block is
# indexed fields only and one of two: the cache holds (a 5 s or 0.5 s deadline
# gives two to four such blocks; a server under load measured 99.5 % hits).
GRPCIO_FIRST = bytes.fromhex(
    "40053a706174682e2f7061796d656e742e76312e5061796d656e74536572766963652f4372656174"
    "655061796d656e74496e74656e74400a3a617574686f726974790f3132372e302e302e313a333533"
    "33358386400c636f6e74656e742d74797065106170706c69636174696f6e2f677270634002746508"
    "747261696c6572734014677270632d6163636570742d656e636f64696e67176964656e746974792c"
    "206465666c6174652c20677a6970400c677270632d74696d656f757403333053400a757365722d61"
    "67656e7438677270632d707974686f6e2d6173796e63696f2f312e38352e3420677270632d632f35"
    "382e302e3020286c696e75783b2063687474703229"
)
GRPCIO_SECOND = bytes.fromhex("c4c38386c2c1c0400c677270632d74696d656f75740633303130306dbf")
GRPCIO_30S, GRPCIO_30100M = bytes.fromhex("c5c48386c3c2c1c0bf"), bytes.fromhex("c5c48386c3c2c1bebf")
GRPCIO_BLOCKS = [GRPCIO_FIRST, GRPCIO_SECOND, GRPCIO_30S, GRPCIO_30100M, GRPCIO_30100M]
GRPCIO_BLOCKS += [GRPCIO_30S, GRPCIO_30S, GRPCIO_30100M, GRPCIO_30S, GRPCIO_30100M]


def test_grpcio_blocks_with_deadlines_are_decoded_once_each() -> None:
    stream = PREFACE + b"".join(
        headers(1 + 2 * n, block) + window_update(1 + 2 * n, 5) + data(1 + 2 * n)
        for n, block in enumerate(GRPCIO_BLOCKS)
    )
    assert_same([stream[:500], stream[500:]])
    h2c = _server(True)
    decoded = _count_decodes(h2c)
    events = h2c.receive_data(stream)
    assert decoded == GRPCIO_BLOCKS[:4]
    timeouts = [
        dict(e.headers)["grpc-timeout"] for e in events if isinstance(e, h2.events.RequestReceived)
    ]
    long, short = "30S", "30100m"
    assert timeouts == [long, short, long, short, short, long, long, short, long, short]
