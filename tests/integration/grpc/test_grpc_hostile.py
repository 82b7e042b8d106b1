"""Hostile clients against the real gRPC server over loopback: every bound holds.

Each test is one class of abuse from issue 13 (late frames, malformed headers,
memory, CPU, slots), sent frame by frame by ``tests.h2_frames.FramePeer``, and
each checks two things: the abuse meets its bound (a stream error, a GOAWAY, a
closed socket, bytes not granted), and the server goes on serving everyone
else. Timeouts run on the autojump clock: nothing here waits for real time.
"""

from __future__ import annotations

import dataclasses
import struct

import pytest
import trio
import trio.testing

from paysim.benchmarks.h2_peer import (
    CANCEL,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    NO_ERROR,
    REFUSED_STREAM,
    FramePeer,
    grpc_message,
    raw_frame,
    request_headers,
)
from paysim.entrypoints.grpc.h2_guard import FrameLimits, Rate
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.observability.metrics import Metrics
from tests.h2_client import RawClient
from tests.integration.grpc.test_grpc_transport import BLOCK, ECHO, REQ, Probe, echo_body

OK, INVALID_ARGUMENT, DEADLINE, INTERNAL, UNIMPLEMENTED = 0, 3, 4, 13, 12
MAX_MESSAGE = 64 * 1024
BODY = REQ(payment_intent_id="pi_1").SerializeToString()


@dataclasses.dataclass
class Server:
    port: int
    probe: Probe
    server: GrpcServer


async def serve(nursery: trio.Nursery, **limits: object) -> Server:
    probe = Probe()
    registry = Registry()
    registry.add(probe)
    grpc_limits = GrpcLimits(**{"max_message_bytes": MAX_MESSAGE, **limits})  # type: ignore[arg-type]
    server = GrpcServer(registry, grpc_limits, Metrics())
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return Server(port, probe, server)


@pytest.fixture
async def nursery():
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def still_serves(nursery: trio.Nursery, port: int) -> None:
    """A fresh, well-behaved client gets an answer."""
    client = await RawClient.connect(nursery, port)
    with trio.fail_after(5):
        resp = await client.call(ECHO, echo_body("alive"))
    assert resp.status == OK
    await client.aclose()


def status(peer: FramePeer, sid: int) -> int | None:
    value = peer.seen(sid).header("grpc-status")
    return None if value is None else int(value)


# -- §5.1: late frames for closed streams are ignored ------------------------------
async def test_late_window_update_and_rst_for_a_closed_stream_are_ignored(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    await peer.call(1, ECHO, BODY)
    await peer.wait(lambda: peer.seen(1).ended)
    await peer.call(3, ECHO, BODY)  # a newer stream: h2 forgets stream 1 as closed
    await peer.wait(lambda: peer.seen(3).ended)
    # grpcio does exactly this under load: its WINDOW_UPDATE crosses our END_STREAM.
    await peer.send(peer.window_update(1, 1000), peer.rst(1, CANCEL))
    await peer.call(5, ECHO, BODY)
    await peer.wait(lambda: peer.seen(5).ended)
    assert peer.goaway is None
    assert status(peer, 5) == OK


# -- request headers and trailers fail one stream at most --------------------------
async def test_request_trailers_without_grpc_status_just_end_the_request(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    await peer.send(
        peer.headers_frame(1, request_headers(ECHO)),
        peer.data_frame(1, grpc_message(BODY)),
        peer.headers_frame(1, [("x-checksum", "abc")], end_stream=True),
    )
    await peer.wait(lambda: peer.seen(1).ended)
    assert status(peer, 1) == OK
    assert peer.goaway is None


@pytest.mark.parametrize(
    ("extra", "http", "code"),
    [
        ({"grpc_timeout": "999999999S"}, "200", INTERNAL),
        ({"grpc_timeout": "12X"}, "200", INTERNAL),
        ({"content_type": "application/grpc+json"}, "200", UNIMPLEMENTED),
        ({"content_type": "text/html"}, "415", INTERNAL),
        ({"content_type": "application/grpc-web+proto"}, "415", INTERNAL),
        ({"grpc_encoding": "br"}, "200", UNIMPLEMENTED),
    ],
    ids=["timeout-9-digits", "timeout-bad-unit", "json-subtype", "not-grpc", "grpc-web", "brotli"],
)
async def test_bad_request_header_fails_only_its_stream(nursery, extra, http, code):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    headers = [h for h in request_headers(ECHO) if h[0].replace("-", "_") not in extra]
    headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
    await peer.send(
        peer.headers_frame(1, headers),
        peer.data_frame(1, grpc_message(BODY), end_stream=True),
    )
    await peer.call(3, ECHO, BODY)
    await peer.wait(lambda: peer.seen(1).ended and peer.seen(3).ended)
    assert peer.seen(1).header(":status") == http
    assert status(peer, 1) == code
    assert status(peer, 3) == OK
    assert peer.goaway is None


# -- memory: what one connection can make the server buffer ------------------------
async def test_a_second_message_on_a_unary_call_fails_it_at_once(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    await peer.send(
        peer.headers_frame(1, request_headers(ECHO)),
        peer.data_frame(1, grpc_message(BODY)),
        peer.data_frame(1, grpc_message(BODY)),  # no END_STREAM, and more to come
    )
    await peer.wait(lambda: peer.seen(1).ended)
    assert status(peer, 1) == INVALID_ARGUMENT
    assert "second" in (peer.seen(1).header("grpc-message") or "")


async def test_unread_messages_are_not_granted_back(nursery):
    """Complete messages that no handler takes stay charged to the window."""
    srv = await serve(nursery, max_concurrent_streams=100)
    peer = await FramePeer.connect(nursery, srv.port)
    window = srv.server.limits.connection_window or 2 * (MAX_MESSAGE + 5 + 1024)
    message = grpc_message(b"\x0a" + b"\x00" * (MAX_MESSAGE - 6))
    sent = 0
    sid = 1
    # Unary calls that never end their request: each holds one whole message.
    while sent + len(message) <= window:
        frames = [peer.headers_frame(sid, request_headers(BLOCK))]
        for i in range(0, len(message), 16_384):
            frames.append(peer.data_frame(sid, message[i : i + 16_384]))
        await peer.send(*frames)
        sent += len(message)
        sid += 2
    await trio.testing.wait_all_tasks_blocked()
    assert peer.granted <= 65_535 + window  # the opening grant, nothing more
    assert peer.goaway is None


async def test_a_unary_request_that_never_ends_times_out(nursery, autojump_clock):
    srv = await serve(nursery, request_timeout_s=30.0)
    peer = await FramePeer.connect(nursery, srv.port)
    await peer.send(
        peer.headers_frame(1, request_headers(ECHO)), peer.data_frame(1, grpc_message(BODY))
    )
    start = trio.current_time()
    await peer.wait(lambda: peer.seen(1).ended, timeout=60)
    assert status(peer, 1) == DEADLINE
    assert trio.current_time() - start == pytest.approx(30.0, abs=0.1)


async def test_a_frame_over_max_frame_size_is_refused_before_its_body(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    # Announce a 16 MiB DATA frame and send only its header: no buffering it.
    await peer.send_raw(struct.pack(">I", 16 * 1024 * 1024 - 1)[1:] + b"\x00\x00\x00\x00\x00\x01")
    await peer.wait_closed()
    assert peer.goaway is not None
    assert peer.goaway.error_code == FRAME_SIZE_ERROR
    await still_serves(nursery, srv.port)


@pytest.mark.parametrize("shape", ["many-continuations", "large-block"])
async def test_header_block_abuse_ends_the_connection_calmly(nursery, shape):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    block = peer.encoder.encode(request_headers(ECHO))
    first = peer.headers_frame(1, request_headers(ECHO), end_headers=False)
    first.data = block[:4]
    if shape == "many-continuations":
        rest = [peer.continuation(1, b"") for _ in range(64)]
    else:
        rest = [peer.continuation(1, b"\x00" * 16_384) for _ in range(4)]
    await peer.send(first, *rest)
    await peer.wait_closed()
    assert peer.goaway is not None
    assert peer.goaway.error_code == ENHANCE_YOUR_CALM
    await still_serves(nursery, srv.port)


async def test_hpack_table_size_updates_beyond_two_are_a_compression_error(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    frame = peer.headers_frame(1, request_headers(ECHO))
    frame.data = b"\x20" * 16_000 + frame.data  # size update to 0, 16,000 times
    with trio.fail_after(5):
        await peer.send(frame)
        await peer.wait_closed()
    assert peer.goaway is not None
    assert peer.goaway.error_code == COMPRESSION_ERROR
    await still_serves(nursery, srv.port)


# -- CPU: floods meet a budget and a GOAWAY ------------------------------------------
FLOODS = {
    "ping": lambda peer, i: peer.ping(i.to_bytes(8, "big")).serialize(),
    "settings": lambda peer, i: raw_frame(0x4, 0, 0, b""),
    "empty-data": lambda peer, i: raw_frame(0x0, 0, 1, b""),
    "unknown-frames": lambda peer, i: raw_frame(0xFA, 0, 0, b""),
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_control_frame_floods_get_enhance_your_calm(nursery, kind):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    if kind == "empty-data":
        await peer.send(peer.headers_frame(1, request_headers(BLOCK)))
    flood = b"".join(FLOODS[kind](peer, i) for i in range(5_000))
    with trio.fail_after(5):
        try:
            await peer.send_raw(flood)
        except trio.BrokenResourceError:
            pass  # the server closed first: that is the point
        await peer.wait_closed()
    assert peer.goaway is not None
    assert peer.goaway.error_code == ENHANCE_YOUR_CALM
    await still_serves(nursery, srv.port)


async def test_rapid_reset_gets_enhance_your_calm(nursery):
    srv = await serve(nursery)
    peer = await FramePeer.connect(nursery, srv.port)
    chunks = []
    for n in range(3_000):
        sid = 1 + 2 * n
        chunks.append(peer.headers_frame(sid, request_headers(BLOCK)).serialize())
        chunks.append(peer.rst(sid).serialize())
    with trio.fail_after(10):
        try:
            await peer.send_raw(b"".join(chunks))
        except trio.BrokenResourceError:
            pass
        await peer.wait_closed()
    assert peer.goaway is not None
    assert peer.goaway.error_code == ENHANCE_YOUR_CALM
    await trio.testing.wait_all_tasks_blocked()
    assert not srv.server.connections  # every handler of that connection has ended
    await still_serves(nursery, srv.port)


async def test_a_peer_that_does_not_read_cannot_make_the_server_queue(nursery, autojump_clock):
    limits = FrameLimits(pings=Rate(1e9, 1e9))  # no PING budget: only the queue bound acts
    srv = await serve(nursery, frames=limits, max_outbound_bytes=64 * 1024)
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    ping = FramePeer(stream).ping().serialize()
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + raw_frame(0x4, 0, 0, b""))
    # Send PINGs and never read one ACK, until the kernel's buffers are full both ways
    # (then this send blocks, and the virtual clock jumps to the end of the wait).
    with trio.move_on_after(2):
        while True:
            await stream.send_all(ping * 1024)
    (connection,) = srv.server.connections
    queued = len(connection.h2._data_to_send)
    # The reader stopped at the bound: what is queued is that plus one read's answers.
    assert queued <= 64 * 1024 + (srv.server.limits.read_size // 17 + 1) * 17
    # The writer is stuck in a send the peer never drains: at write_timeout_s the
    # watchdog ends the connection.
    assert connection.write_since is not None
    stuck_since = connection.write_since
    write_timeout = srv.server.limits.write_timeout_s
    with trio.fail_after(write_timeout + 5):
        await connection._idle.wait()
    assert trio.current_time() - stuck_since == pytest.approx(write_timeout, abs=0.1)
    assert connection.closed
    await stream.aclose()
    await still_serves(nursery, srv.port)


# -- slots: idle and handshaking connections cannot hold the server ---------------
async def test_a_silent_connection_is_closed_after_the_handshake_timeout(nursery, autojump_clock):
    srv = await serve(nursery, handshake_timeout_s=10.0)
    stream = await trio.open_tcp_stream("127.0.0.1", srv.port)
    await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the preface, then nothing
    start = trio.current_time()
    with trio.fail_after(60):
        assert await stream.receive_some(1024) == b"" or True
        while await stream.receive_some(1024):
            pass
    assert trio.current_time() - start == pytest.approx(10.0, abs=0.1)


async def test_an_idle_connection_gets_goaway_after_the_idle_timeout(nursery, autojump_clock):
    srv = await serve(nursery, idle_timeout_s=300.0)
    peer = await FramePeer.connect(nursery, srv.port)
    await peer.call(1, ECHO, BODY)
    await peer.wait(lambda: peer.seen(1).ended)
    start = trio.current_time()
    await peer.wait_closed(timeout=1000)
    assert trio.current_time() - start == pytest.approx(300.0, abs=0.1)
    assert peer.goaway is not None
    assert peer.goaway.error_code == NO_ERROR
    assert peer.goaway.last_stream_id == 1


async def test_at_max_connections_idle_ones_make_room(nursery):
    srv = await serve(nursery, max_connections=10)
    idle = [await FramePeer.connect(nursery, srv.port) for _ in range(15)]
    await trio.testing.wait_all_tasks_blocked()
    await still_serves(nursery, srv.port)
    assert sum(p.closed.is_set() for p in idle) >= 6


async def test_at_max_connections_busy_ones_are_kept(nursery):
    srv = await serve(nursery, max_connections=2)
    busy = []
    for _ in range(2):
        peer = await FramePeer.connect(nursery, srv.port)
        await peer.call(1, BLOCK, BODY)
        busy.append(peer)
    await trio.testing.wait_all_tasks_blocked()
    late = await FramePeer.connect(nursery, srv.port)
    await late.wait_closed()
    srv.probe.release.set()
    for peer in busy:
        await peer.wait(lambda p=peer: p.seen(1).ended)
        assert status(peer, 1) == OK


# -- calls: concurrency and stalled answers ------------------------------------------
async def test_streams_over_the_call_limit_are_refused_not_fatal(nursery):
    srv = await serve(nursery, max_concurrent_streams=4)
    peer = await FramePeer.connect(nursery, srv.port)
    for n in range(6):
        await peer.call(1 + 2 * n, BLOCK, BODY)
    await peer.wait(lambda: peer.seen(9).reset is not None and peer.seen(11).reset is not None)
    assert peer.seen(9).reset == REFUSED_STREAM
    assert peer.goaway is None
    srv.probe.release.set()
    await peer.wait(lambda: all(peer.seen(1 + 2 * n).ended for n in range(4)))


async def test_answers_the_peer_will_not_read_are_dropped(nursery, autojump_clock):
    srv = await serve(nursery, write_timeout_s=30.0, max_stalled_calls=3)
    # A window of 0: no response DATA can ever be sent to this peer.
    peer = await FramePeer.connect(nursery, srv.port, settings={0x4: 0})
    for n in range(3):
        await peer.call(1 + 2 * n, ECHO, BODY)
    await trio.testing.wait_all_tasks_blocked()
    (connection,) = srv.server.connections
    assert connection.stalled == 3
    await peer.call(7, ECHO, BODY)  # one more stalled call would be over the bound
    await peer.wait(lambda: peer.seen(7).reset is not None)
    assert peer.seen(7).reset == REFUSED_STREAM
    start = trio.current_time()
    await peer.wait(lambda: all(peer.seen(1 + 2 * n).reset for n in range(3)), timeout=60)
    assert trio.current_time() - start == pytest.approx(30.0, abs=0.5)
    assert peer.seen(1).reset == CANCEL
    assert not connection.calls


# -- fairness: a flood on one connection, calls on another ---------------------------
@pytest.mark.parametrize("kind", ["rapid-reset", "ping", "header-blocks"])
async def test_calls_from_other_connections_go_on_during_a_flood(nursery, kind):
    """Real time on purpose: CPU starvation does not exist on a virtual clock."""
    srv = await serve(nursery)
    latencies: list[float] = []
    flooding = True

    # The same bytes for every connection (a fresh HPACK context each time), made once.
    encoder = FramePeer(None)  # type: ignore[arg-type]
    chunks = []
    for n in range(2_000):
        sid = 1 + 2 * n
        if kind == "rapid-reset":
            chunks.append(encoder.headers_frame(sid, request_headers(BLOCK)).serialize())
            chunks.append(encoder.rst(sid).serialize())
        elif kind == "ping":
            chunks.append(encoder.ping().serialize())
        else:
            frame = encoder.headers_frame(sid, request_headers(BLOCK))
            frame.data = b"\x20\x20" + b"\x00\x01a\x01b" * 2_700
            chunks.append(frame.serialize())
    attack = b"".join(chunks)

    async def flood() -> None:
        while flooding:
            peer = await FramePeer.connect(nursery, srv.port)
            try:
                await peer.send_raw(attack)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            await peer.wait_closed(timeout=10)

    async with trio.open_nursery() as inner:
        inner.start_soon(flood)
        client = await RawClient.connect(nursery, srv.port)
        for _ in range(100):
            start = trio.current_time()
            resp = await client.call(ECHO, echo_body())
            latencies.append(trio.current_time() - start)
            assert resp.status == OK
        flooding = False
        inner.cancel_scope.cancel()
    latencies.sort()
    assert latencies[int(len(latencies) * 0.99)] < 1.0
