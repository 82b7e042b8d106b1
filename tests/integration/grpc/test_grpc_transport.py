"""The gRPC transport, and each purerpc 0.8.0 server defect it must not show.

Every defect test runs twice: against paysim's server, where it must pass, and
against purerpc's own ``Server``, where it is marked ``xfail(strict=True)``: it
must fail there, which shows both that the defect is real and that the test
can see it. If a purerpc release fixed one, its strict xfail would turn red
and tell us.
"""

from __future__ import annotations

import errno
import gzip
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import purerpc
import pytest
import structlog
import trio
import trio.testing
from purerpc.rpc import Cardinality, RPCSignature

from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.observability.metrics import Metrics
from tests.h2_client import RawClient, frame

REQ = payment_pb2.GetPaymentStatusRequest
RESP = payment_pb2.GetPaymentStatusResponse
ECHO = "/test.Probe/Echo"
BOOM = "/test.Probe/Boom"
BLOCK = "/test.Probe/Block"

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13


def _cut_short(wbits: int) -> bytes:
    """A compressed stream that stops (flushed, unfinished) after a complete message.

    Without an end-of-stream check it decodes to a valid request, just as a
    stream cut anywhere else decodes to one with its later fields missing.
    """
    compressor = zlib.compressobj(wbits=wbits)
    body = REQ(payment_intent_id="cut").SerializeToString()
    return compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)


TRUNCATED_GZIP = _cut_short(16 + zlib.MAX_WBITS)
TRUNCATED_DEFLATE = _cut_short(zlib.MAX_WBITS)


class Probe(purerpc.Servicer):  # type: ignore[misc]
    """A test service: echo, a handler that raises, one that blocks until released."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()
        self.cancelled = trio.Event()

    async def Echo(self, req: Any) -> Any:
        return RESP(payment=payment_pb2.Payment(payment_intent_id=req.payment_intent_id))

    async def Boom(self, req: Any) -> Any:
        raise RuntimeError(f"secret detail of {object()!r}")

    async def Block(self, req: Any) -> Any:
        self.entered.set()
        try:
            await self.release.wait()
        finally:
            if not self.release.is_set():
                self.cancelled.set()
        return RESP()

    @property
    def service(self) -> purerpc.Service:
        svc = purerpc.Service("test.Probe")
        sig = RPCSignature(Cardinality.UNARY_UNARY, REQ, RESP)
        for name in ("Echo", "Boom", "Block"):
            svc.add_method(name, getattr(self, name), sig)
        return svc


@dataclass
class Served:
    port: int
    probe: Probe
    server: GrpcServer | None


MAX_MESSAGE = 64 * 1024


async def start_paysim(nursery: trio.Nursery, port: int = 0) -> Served:
    probe = Probe()
    registry = Registry()
    registry.add(probe)
    server = GrpcServer(registry, GrpcLimits(max_message_bytes=MAX_MESSAGE), Metrics())
    bound = await nursery.start(server.serve, "127.0.0.1", port)
    return Served(bound, probe, server)


async def start_stock(nursery: trio.Nursery, port: int = 0) -> Served:
    probe = Probe()
    server = purerpc.Server(port=port)
    server.add_service(probe.service)
    bound = await nursery.start(server.serve_async)
    return Served(bound, probe, None)


SERVERS = [
    pytest.param(start_paysim, id="paysim"),
    pytest.param(
        start_stock,
        id="stock-purerpc",
        marks=pytest.mark.xfail(strict=True, reason="purerpc 0.8.0 defect"),
    ),
]


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def settle() -> None:
    """Let every task (and loopback bytes in flight) come to rest."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


def echo_body(text: str = "hello") -> bytes:
    return frame(REQ(payment_intent_id=text).SerializeToString())


# -- defect 1: an exception's repr reached the client as CANCELLED ------------------
@pytest.mark.parametrize("start", SERVERS)
async def test_handler_exception_is_internal_with_generic_message(start, nursery):
    served = await start(nursery)
    client = await RawClient.connect(nursery, served.port)
    with trio.fail_after(5):
        resp = await client.call(BOOM, echo_body())
    assert resp.status == INTERNAL
    for leak in ("RuntimeError", "secret", "0x", "object at", "Traceback"):
        assert leak not in resp.message


async def test_handler_exception_traceback_goes_to_the_log(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    with structlog.testing.capture_logs() as logs, trio.fail_after(5):
        await client.call(BOOM, echo_body())
    failures = [e for e in logs if e["event"] == "rpc handler failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["exc_info"] is True
    assert failures[0]["grpc_method"] == "test.Probe/Boom"


# -- defect 2: grpc-timeout was parsed and ignored ---------------------------------
@pytest.mark.parametrize("start", SERVERS)
async def test_deadline_cancels_handler_with_deadline_exceeded(start, nursery, mock_clock):
    served = await start(nursery)
    client = await RawClient.connect(nursery, served.port)
    sid = await client.start(BLOCK, echo_body(), timeout="5S")
    await served.probe.entered.wait()
    start_time = trio.current_time()
    mock_clock.jump(4.999)
    await settle()
    assert not client.responses[sid].ended.is_set()
    mock_clock.jump(0.001)
    await settle()
    resp = client.responses[sid]
    assert resp.ended.is_set()
    assert resp.status == DEADLINE
    assert served.probe.cancelled.is_set()
    assert trio.current_time() - start_time == pytest.approx(5.0)


# -- defect 3: a vanished client left the handler and socket stuck -----------------
@pytest.mark.parametrize("start", SERVERS)
async def test_client_disconnect_cancels_handler_and_closes_socket(start, nursery):
    served = await start(nursery)
    client = await RawClient.connect(nursery, served.port)
    await client.start(BLOCK, echo_body())
    await served.probe.entered.wait()
    await client.aclose()
    await settle()
    assert served.probe.cancelled.is_set()
    if served.server is not None:
        assert not served.server.connections


async def test_rst_stream_cancels_only_that_call(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    sid = await client.start(BLOCK, echo_body())
    await served.probe.entered.wait()
    await client.reset(sid)
    with trio.fail_after(5):
        await served.probe.cancelled.wait()
        resp = await client.call(ECHO, echo_body("still here"))
    assert resp.status == OK
    assert RESP.FromString(resp.messages()[0]).payment.payment_intent_id == "still here"


# -- defect 4: one bad message tore down the whole connection ----------------------
@pytest.mark.parametrize("start", SERVERS)
async def test_oversized_message_fails_only_its_own_call(start, nursery):
    served = await start(nursery)
    client = await RawClient.connect(nursery, served.port)
    blocked = await client.start(BLOCK, echo_body())
    await served.probe.entered.wait()
    # A length prefix far above any limit (stock purerpc allows 32 MiB).
    oversized = await client.start(ECHO, frame(b"x" * 100, length=100 * 1024 * 1024))
    await settle()
    assert client.responses[oversized].status == RESOURCE_EXHAUSTED
    served.probe.release.set()
    await settle()
    assert client.responses[blocked].status == OK
    with trio.fail_after(5):
        resp = await client.call(ECHO, echo_body("after"))
    assert resp.status == OK


@pytest.mark.parametrize("start", SERVERS)
async def test_gzip_message_is_decoded(start, nursery):
    served = await start(nursery)
    client = await RawClient.connect(nursery, served.port)
    payload = gzip.compress(REQ(payment_intent_id="zipped").SerializeToString())
    sid = await client.start(ECHO, frame(payload, compressed=True), encoding="gzip")
    await settle()
    resp = client.responses[sid]
    assert resp.status == OK
    assert RESP.FromString(resp.messages()[0]).payment.payment_intent_id == "zipped"


async def test_deflate_message_is_decoded(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    payload = zlib.compress(REQ(payment_intent_id="deflated").SerializeToString())
    with trio.fail_after(5):
        resp = await client.call(ECHO, frame(payload, compressed=True), encoding="deflate")
    assert resp.status == OK


async def test_decompression_bomb_is_resource_exhausted(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    bomb = gzip.compress(b"\0" * (MAX_MESSAGE * 16))
    assert len(bomb) < MAX_MESSAGE
    with trio.fail_after(5):
        resp = await client.call(ECHO, frame(bomb, compressed=True), encoding="gzip")
        after = await client.call(ECHO, echo_body())
    assert resp.status == RESOURCE_EXHAUSTED
    assert after.status == OK


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("snappy", frame(b"abc", compressed=True), UNIMPLEMENTED),
        ("gzip", frame(b"not gzip at all", compressed=True), INVALID_ARGUMENT),
        (None, frame(b"\x0a\x01x", compressed=True), INTERNAL),
        ("gzip", frame(TRUNCATED_GZIP, compressed=True), INVALID_ARGUMENT),
        ("deflate", frame(TRUNCATED_DEFLATE, compressed=True), INVALID_ARGUMENT),
        ("gzip", frame(gzip.compress(b"\x0a\x01x") + b"junk", compressed=True), INVALID_ARGUMENT),
        (None, struct.pack(">BI", 2, 3) + b"\x0a\x01x", INVALID_ARGUMENT),
    ],
    ids=[
        "unknown-encoding",
        "corrupt-gzip",
        "compressed-flag-without-encoding",
        "truncated-gzip",
        "truncated-deflate",
        "gzip-with-trailing-bytes",
        "flag-neither-0-nor-1",
    ],
)
async def test_bad_compression_fails_only_that_call(nursery, encoding, body, status):
    """A truncated body once decoded to a message with fields silently missing."""
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    with trio.fail_after(5):
        resp = await client.call(ECHO, body, encoding=encoding)
        after = await client.call(ECHO, echo_body())
    assert resp.status == status
    assert after.status == OK


# -- defect 5: SO_REUSEPORT let a second process share the port silently -----------
@pytest.mark.parametrize("start", SERVERS)
async def test_binding_an_occupied_port_fails_loudly(start, nursery):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    try:
        port = squatter.getsockname()[1]
        with pytest.RaisesGroup(
            pytest.RaisesExc(OSError, check=lambda e: e.errno == errno.EADDRINUSE),
            allow_unwrapped=True,
            flatten_subgroups=True,
        ):
            async with trio.open_nursery() as inner:
                await start(inner, port)
                inner.cancel_scope.cancel()
    finally:
        squatter.close()


# -- protocol edges that must not cost the connection -------------------------------
async def test_unknown_method_is_unimplemented(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    with trio.fail_after(5):
        resp = await client.call("/test.Probe/Nope", echo_body())
        after = await client.call(ECHO, echo_body())
    assert resp.status == UNIMPLEMENTED
    assert "test.Probe/Nope" in resp.message
    assert after.status == OK


@pytest.mark.parametrize(
    ("kwargs", "body", "status"),
    [
        ({"timeout": "soon"}, echo_body(), INTERNAL),
        ({"content_type": "text/plain"}, echo_body(), INTERNAL),
        ({}, frame(b"\xff\xff\xff"), 3),  # not a valid protobuf message: INVALID_ARGUMENT
        ({}, echo_body() + echo_body(), 3),  # two messages on a unary call
        ({}, b"", 3),  # no message at all
    ],
    ids=["bad-timeout", "bad-content-type", "garbage-message", "two-messages", "no-message"],
)
async def test_malformed_requests_fail_only_that_call(nursery, kwargs, body, status):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    with trio.fail_after(5):
        resp = await client.call(ECHO, body, **kwargs)
        after = await client.call(ECHO, echo_body())
    assert resp.status == status
    assert after.status == OK
    assert not client.closed.is_set()


async def test_many_concurrent_calls_on_one_connection(nursery):
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    sids = [await client.start(ECHO, echo_body(f"call-{i}")) for i in range(200)]
    with trio.fail_after(10):
        for sid in sids:
            await client.responses[sid].ended.wait()
    got = {
        RESP.FromString(client.responses[sid].messages()[0]).payment.payment_intent_id
        for sid in sids
    }
    assert got == {f"call-{i}" for i in range(200)}


async def test_large_response_respects_flow_control(nursery):
    """A response bigger than the client's initial window still arrives whole."""
    probe_text = "y" * 60_000
    served = await start_paysim(nursery)
    client = await RawClient.connect(nursery, served.port)
    client.conn.update_settings({4: 1024})  # SETTINGS_INITIAL_WINDOW_SIZE
    await client.flush()
    with trio.fail_after(5):
        resp = await client.call(ECHO, echo_body(probe_text))
    assert resp.status == OK
    assert RESP.FromString(resp.messages()[0]).payment.payment_intent_id == probe_text


async def test_drain_sends_goaway_naming_the_last_stream(nursery):
    served = await start_paysim(nursery)
    assert served.server is not None
    client = await RawClient.connect(nursery, served.port)
    with trio.fail_after(5):
        await client.call(ECHO, echo_body())
        await served.server.drain()
    await settle()
    assert client.goaway is not None
    assert client.goaway.error_code == 0
    assert client.goaway.last_stream_id == 1
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", served.port)


async def test_drain_lets_in_flight_calls_finish_for_a_stock_client(nursery):
    served = await start_paysim(nursery)
    assert served.server is not None
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    block = channel.unary_unary(
        BLOCK, request_serializer=REQ.SerializeToString, response_deserializer=RESP.FromString
    )
    try:
        future = block.future(REQ(payment_intent_id="in flight"))
        with trio.fail_after(10):
            await served.probe.entered.wait()
            async with trio.open_nursery() as drain_nursery:
                drain_nursery.start_soon(served.server.drain)
                await settle()
                served.probe.release.set()
            result = await trio.to_thread.run_sync(future.result)
        assert isinstance(result, RESP)
    finally:
        channel.close()
