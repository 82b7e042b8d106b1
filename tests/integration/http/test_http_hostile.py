"""Hostile clients against the HTTP endpoint, over real loopback sockets.

Slowloris (heads dripped a byte at a time, or nothing at all) must not keep
the probes from being answered, slow clients are cut off at the head timeout,
and no bytes make a connection raise. Timed tests run on ``autojump_clock``:
loopback delivery is immediate, so virtual time only moves when every task
waits on a timer, and the assertions on it are exact.
"""

from __future__ import annotations

import random

import pytest
import trio
from structlog.testing import capture_logs

from paysim.entrypoints.http import HttpApp, HttpLimits, handle_connection, serve_http
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

PROBE = b"GET /livez HTTP/1.1\r\nHost: probe\r\n\r\n"


@pytest.fixture
def app() -> HttpApp:
    readiness = Readiness()
    readiness.mark_serving()
    return HttpApp(readiness, Metrics())


async def read_status(stream: trio.SocketStream) -> int | None:
    """The status of the response on ``stream``; None if it closed without one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


async def slowloris(port: int, drip: bool, task_status: trio.TaskStatus[None]) -> None:
    """One attacker connection: a head a byte a second (``drip``) or nothing."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        task_status.started()
        if drip:
            for byte in b"GET /livez HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return
                await trio.sleep(1.0)
        await trio.sleep_forever()


@pytest.mark.parametrize("count", [300, 1000])
async def test_probes_are_answered_under_slowloris(nursery, app, autojump_clock, count):
    limits = HttpLimits(max_connections=256)
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, limits)
    for i in range(count):
        await nursery.start(slowloris, port, i % 2 == 0)
    for _ in range(3):
        start = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", port) as probe:
            await probe.send_all(PROBE)
            assert await read_status(probe) == 200
        assert trio.current_time() == start  # at once: no timeout had to free a slot
        await trio.sleep(2.5)  # the attackers keep dripping meanwhile


@pytest.mark.parametrize("path", [b"/livez", b"/readyz"])
async def test_probe_gets_in_while_every_slot_is_held_by_a_slow_head(nursery, app, path):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits(max_connections=4))
    held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
    for stream in held:
        await stream.send_all(b"GET /livez HTTP/1.1\r\n")
    async with await trio.open_tcp_stream("127.0.0.1", port) as probe:
        await probe.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: k\r\n\r\n")
        assert await read_status(probe) == 200
    assert await read_status(held[0]) is None  # the longest waiting gave its slot up
    for stream in held:
        await stream.aclose()


async def test_slow_client_is_cut_off_at_the_head_timeout(nursery, app, autojump_clock):
    limits = HttpLimits(head_timeout_s=3.0, request_timeout_s=10.0)
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, limits)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        start = trio.current_time()

        async def drip() -> None:
            for byte in b"GET /livez HTTP/1.1\r\nX-Slow: aaaaaaaaaa":
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.5)

        async with trio.open_nursery() as dripping:
            dripping.start_soon(drip)
            assert await read_status(stream) == 408
            assert trio.current_time() == start + 3.0
            dripping.cancel_scope.cancel()


async def test_silent_client_is_closed_at_the_head_timeout(nursery, app, autojump_clock):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits(head_timeout_s=2.0))
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        start = trio.current_time()
        assert await read_status(stream) is None
        assert trio.current_time() == start + 2.0


# -- any bytes -------------------------------------------------------------------------

NASTY = [
    b"GET http://[ HTTP/1.1\r\nHost: x\r\n\r\n",  # urlsplit: invalid IPv6 URL
    b"GET /?a=%ff%fe&&&=&;; HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /livez HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /livez HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET /livez HTTP/9.9\r\n\r\n",
    b"\xff\xfe\x00\x00\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"GET /livez HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
]


def _random_inputs() -> list[bytes]:
    rng = random.Random(13)
    alphabet = b"GET /livez HTTP/1.1\r\n:%[]\x00\xff0123456789-chunked Content-Length"
    out = []
    for _ in range(200):
        n = rng.randrange(1, 400)
        out.append(bytes(rng.choice(alphabet) for _ in range(n)))
    return out


async def test_no_bytes_make_a_connection_raise(app, autojump_clock):
    with capture_logs() as logs:
        for data in NASTY + _random_inputs():
            client, server = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle_connection, server, app, HttpLimits())
                await client.send_all(data)
                await client.send_eof()
                while await client.receive_some(65536):  # until the server closes
                    pass
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


async def test_endpoint_survives_nasty_clients_on_real_sockets(nursery, app):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())
    with capture_logs() as logs:
        for data in NASTY:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                try:
                    await stream.send_all(data)
                    await stream.send_eof()
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass  # the server may close before taking every byte
        async with await trio.open_tcp_stream("127.0.0.1", port) as probe:
            await probe.send_all(PROBE)
            assert await read_status(probe) == 200
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []
