"""The h11 endpoint: routes, limits, errors, timeouts (virtual time) and real sockets."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import structlog
import trio
import trio.testing

from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    handle_connection,
    json_response,
    serve_http,
)
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

HEALTH_BODY = b'{"status":"healthy","service":"payment-sim-api"}'
SECRET = "s3cr3t-db-password"


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class Client:
    """Raw HTTP/1.1 over any trio stream, with just enough parsing for these tests."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def response(self, *, head: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"closed before a full response head: {self.buffer!r}")
        raw_head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        status_line, *lines = raw_head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
        length = 0 if head or status < 200 else int(headers["content-length"])
        self.buffer = bytearray(rest)
        while len(self.buffer) < length:
            assert await self._fill(), "closed in the middle of a body"
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return Response(status, headers, body)

    async def request(self, method: str, target: str, *headers: str) -> Response:
        lines = [f"{method} {target} HTTP/1.1", "Host: test", *headers]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await self.response(head=method == "HEAD")

    async def assert_closed(self) -> None:
        """The server closed the connection and sent nothing more."""
        while await self._fill():
            pass
        assert self.buffer == b""


@pytest.fixture
def readiness() -> Readiness:
    readiness = Readiness()
    readiness.mark_serving()
    return readiness


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def app(readiness: Readiness, metrics: Metrics) -> HttpApp:
    return HttpApp(readiness, metrics)


def connect(nursery: trio.Nursery, app: HttpApp, limits: HttpLimits | None = None) -> Client:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_connection, server_stream, app, limits or HttpLimits())
    return Client(client_stream)


def http_count(metrics: Metrics, path: str, code: int) -> float | None:
    labels = {"path": path, "code": str(code)}
    return metrics.registry.get_sample_value("paysim_http_requests_total", labels)


# -- routes ----------------------------------------------------------------------


async def test_health_body_is_exact(nursery, app, metrics):
    response = await connect(nursery, app).request("GET", "/health")
    assert response.status == 200
    assert response.body == HEALTH_BODY
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(HEALTH_BODY))
    assert response.headers["server"] == "paysim"
    assert http_count(metrics, "/health", 200) == 1.0  # a fresh registry for each test


@pytest.mark.parametrize(
    ("path", "body"),
    [("/health", HEALTH_BODY), ("/livez", b'{"status":"ok"}'), ("/readyz", b'{"status":"ready"}')],
)
async def test_get_and_head(nursery, app, path, body):
    client = connect(nursery, app)
    get = await client.request("GET", path)
    head = await client.request("HEAD", path)
    assert (get.status, get.body) == (200, body)
    assert head.status == 200
    assert head.headers == get.headers
    # HEAD sent no body: the next response on the connection parses cleanly.
    assert (await client.request("GET", "/livez")).body == b'{"status":"ok"}'


async def test_readyz_follows_readiness(nursery, metrics):
    readiness = Readiness()
    client = connect(nursery, HttpApp(readiness, metrics))
    starting = await client.request("GET", "/readyz")
    readiness.mark_serving()
    serving = await client.request("GET", "/readyz")
    readiness.mark_draining()
    draining = await client.request("GET", "/readyz")
    live = await client.request("GET", "/livez")
    assert (starting.status, starting.body) == (503, b'{"status":"not ready"}')
    assert (serving.status, serving.body) == (200, b'{"status":"ready"}')
    assert (draining.status, draining.body) == (503, b'{"status":"not ready"}')
    assert (live.status, live.body) == (200, b'{"status":"ok"}')


async def test_metrics_route(nursery, app, metrics):
    metrics.rpc_handled("unary", "payment.v1.PaymentService", "GetPayment", "OK", 0.01)
    client = connect(nursery, app)
    text = await client.request("GET", "/metrics")
    assert text.status == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert b"grpc_server_handled_total{" in text.body
    head = await client.request("HEAD", "/metrics")
    assert head.status == 200
    assert int(head.headers["content-length"]) > 0
    om = await client.request("GET", "/metrics", "Accept: application/openmetrics-text")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.body.endswith(b"# EOF\n")


async def test_unknown_path_is_404_and_counted_as_other(nursery, app, metrics):
    response = await connect(nursery, app).request("GET", "/no/such/thing?x=1")
    assert response.status == 404
    assert json.loads(response.body) == {"error": "not found"}
    assert http_count(metrics, "other", 404) == 1.0
    assert b"/no/such/thing" not in metrics.render()[0]


async def test_wrong_method_is_405_with_allow(nursery, app, metrics):
    response = await connect(nursery, app).request("POST", "/health", "Content-Length: 0")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert http_count(metrics, "/health", 405) == 1.0


async def test_added_route_gets_query_and_chunked_body(nursery, app):
    async def echo(request: HttpRequest) -> HttpResponse:
        return json_response(201, {"query": request.query, "body": request.body.decode()})

    app.add_route("/echo", frozenset({"post"}), echo)
    client = connect(nursery, app)
    await client.send(
        b"POST /echo?payment_id=pi_1&payment_id=pi_2 HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    response = await client.response()
    assert response.status == 201
    assert json.loads(response.body) == {"query": {"payment_id": ["pi_1", "pi_2"]}, "body": "abcde"}


async def test_expect_100_continue(nursery, app):
    async def echo(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, request.body, content_type="text/plain")

    app.add_route("/echo", frozenset({"POST"}), echo)
    client = connect(nursery, app)
    await client.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    assert (await client.response()).status == 100
    await client.send(b"ping")
    assert (await client.response()).body == b"ping"


async def test_keep_alive_and_pipelining(nursery, app):
    client = connect(nursery, app)
    assert (await client.request("GET", "/health")).status == 200
    assert (await client.request("GET", "/livez")).status == 200
    await client.send(
        b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert (await client.response()).body == b'{"status":"ready"}'
    assert (await client.response()).body == HEALTH_BODY


async def test_http_1_0_closes_after_the_response(nursery, app):
    client = connect(nursery, app)
    await client.send(b"GET /health HTTP/1.0\r\n\r\n")
    assert (await client.response()).body == HEALTH_BODY
    await client.assert_closed()


async def test_connection_close_is_honoured(nursery, app):
    client = connect(nursery, app)
    response = await client.request("GET", "/health", "Connection: close")
    assert response.headers["connection"] == "close"
    await client.assert_closed()


async def test_handler_exception_is_a_generic_500(nursery, app, metrics):
    async def boom(request: HttpRequest) -> HttpResponse:
        raise RuntimeError(SECRET)

    app.add_route("/boom", frozenset({"GET"}), boom)
    client = connect(nursery, app)
    with structlog.testing.capture_logs() as logs:
        response = await client.request("GET", "/boom")
    assert response.status == 500
    assert json.loads(response.body) == {"error": "internal server error"}
    assert SECRET not in repr(response)
    assert "RuntimeError" not in repr(response)
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert logs[0]["exc_info"] is True
    assert http_count(metrics, "/boom", 500) == 1.0
    assert (await client.request("GET", "/health")).status == 200  # still serving


# -- limits and malformed input ----------------------------------------------------


@pytest.mark.parametrize("size", [6000, 40_000])
async def test_huge_head_is_431(nursery, app, size):
    # 6000 bytes arrive in one read: h11 parses the whole head, we measure it.
    # 40000 bytes overflow h11's buffer for an incomplete head first.
    client = connect(nursery, app, HttpLimits(max_header_bytes=4096))
    response = await client.request("GET", "/health", "X-Big: " + "a" * size)
    assert response.status == 431
    assert response.headers["connection"] == "close"
    await client.assert_closed()


async def test_unterminated_huge_head_is_431(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(max_header_bytes=1024))
    await client.send(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 2000)
    assert (await client.response()).status == 431
    assert trio.current_time() == start  # answered at once, not at the timeout


async def test_big_content_length_is_413_before_reading_the_body(nursery, app, metrics):
    client = connect(nursery, app)
    await client.send(b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
    response = await client.response()  # no body was sent
    assert response.status == 413
    assert response.headers["connection"] == "close"
    assert http_count(metrics, "/health", 413) == 1.0


async def test_big_chunked_body_is_413(nursery, app):
    client = connect(nursery, app, HttpLimits(max_body_bytes=1000))
    chunk = b"320\r\n" + b"x" * 800 + b"\r\n"  # 0x320 = 800 bytes
    await client.send(b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    await client.send(chunk + chunk)
    response = await client.response()
    assert response.status == 413
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /health HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ],
)
async def test_malformed_request_is_400(nursery, app, metrics, garbage):
    client = connect(nursery, app)
    await client.send(garbage)
    response = await client.response()
    assert response.status == 400
    assert response.headers["connection"] == "close"
    assert json.loads(response.body) == {"error": "bad request"}
    await client.assert_closed()
    assert http_count(metrics, "other", 400) == 1.0


# -- timeouts (virtual time) ---------------------------------------------------------


async def test_partial_head_gets_408_at_the_head_timeout(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(request_timeout_s=10.0, head_timeout_s=3.0))
    await client.send(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    response = await client.response()
    assert response.status == 408
    assert response.headers["connection"] == "close"
    await client.assert_closed()
    assert trio.current_time() == start + 3.0


async def test_silent_connection_is_closed_at_the_head_timeout(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(head_timeout_s=3.0))
    await client.assert_closed()  # no 408: nothing of a request had arrived
    assert trio.current_time() == start + 3.0


async def test_dripping_client_does_not_extend_the_deadline(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(request_timeout_s=10.0, head_timeout_s=3.0))

    async def drip() -> None:
        for byte in b"GET /health HTTP/1.1\r\n":
            await client.send(bytes([byte]))
            await trio.sleep(1.0)

    nursery.start_soon(drip)
    assert (await client.response()).status == 408
    assert trio.current_time() == start + 3.0


async def test_partial_body_gets_408_at_the_request_timeout(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(request_timeout_s=5.0, head_timeout_s=1.0))
    await client.send(b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    assert (await client.response()).status == 408
    assert trio.current_time() == start + 5.0


async def test_partial_pipelined_request_gets_408(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(request_timeout_s=10.0, head_timeout_s=3.0))
    await client.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /liv")
    assert (await client.response()).status == 200
    assert (await client.response()).status == 408
    assert trio.current_time() == start + 3.0


async def test_idle_keep_alive_is_closed_silently(nursery, app, autojump_clock):
    start = trio.current_time()
    client = connect(nursery, app, HttpLimits(head_timeout_s=5.0, keepalive_timeout_s=7.0))
    await trio.sleep(4.0)
    assert (await client.request("GET", "/health")).status == 200
    await client.assert_closed()  # no 408: nothing of a next request had arrived
    assert trio.current_time() == start + 4.0 + 7.0


async def test_next_request_head_has_the_head_timeout_from_its_first_byte(
    nursery, app, autojump_clock
):
    client = connect(nursery, app, HttpLimits(head_timeout_s=2.0, keepalive_timeout_s=7.0))
    assert (await client.request("GET", "/health")).status == 200
    await trio.sleep(6.0)  # idle, within the keep-alive timeout
    started = trio.current_time()
    await client.send(b"GET /health HTTP/1.1\r\n")
    assert (await client.response()).status == 408
    assert trio.current_time() == started + 2.0


# -- real sockets ----------------------------------------------------------------------


async def test_serves_on_a_real_socket(nursery, app):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())
    client = Client(await trio.open_tcp_stream("127.0.0.1", port))
    response = await client.request("GET", "/health")
    assert (response.status, response.body) == (200, HEALTH_BODY)
    assert (await client.request("HEAD", "/health")).headers == response.headers
    await client.stream.aclose()


async def test_connections_beyond_the_cap_get_503_when_every_slot_is_answering(
    nursery, app, metrics
):
    entered, release = trio.Event(), trio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        entered.set()
        await release.wait()
        return json_response(200, {})

    app.add_route("/slow", frozenset({"GET"}), slow)
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits(max_connections=1))
    first = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await first.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await entered.wait()  # the only slot is answering a request: it cannot be taken
    second = Client(await trio.open_tcp_stream("127.0.0.1", port))
    response = await second.response()
    assert response.status == 503
    assert response.headers["connection"] == "close"
    assert json.loads(response.body) == {"error": "too many connections"}
    await second.assert_closed()
    release.set()
    assert (await first.response()).status == 200  # the first is unaffected
    assert (await first.request("GET", "/livez")).status == 200
    assert http_count(metrics, "other", 503) == 1.0


async def test_a_new_connection_takes_the_slot_of_the_longest_idle_one(nursery, app):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits(max_connections=2))
    oldest = Client(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await oldest.request("GET", "/health")).status == 200  # now idle (keep-alive)
    slow = Client(await trio.open_tcp_stream("127.0.0.1", port))
    await slow.send(b"GET /health HTTP/1.1\r\n")  # a head, begun
    probe = Client(await trio.open_tcp_stream("127.0.0.1", port))
    assert (await probe.request("GET", "/livez")).status == 200
    await oldest.assert_closed()  # evicted
    await slow.send(b"Host: t\r\n\r\n")  # kept: it was not the longest waiting
    assert (await slow.response()).status == 200


async def test_taken_port_raises(nursery, app):
    port = await nursery.start(serve_http, "127.0.0.1", 0, app, HttpLimits())
    with pytest.raises(OSError):  # noqa: PT011 - EADDRINUSE, spelled differently per OS
        await serve_http("127.0.0.1", port, app, HttpLimits())


def test_limits_are_validated():
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(max_connections=0)
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(request_timeout_s=0)
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(head_timeout_s=0)
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(keepalive_timeout_s=-1)
