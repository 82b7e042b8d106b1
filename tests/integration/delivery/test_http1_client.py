"""``Http1Client`` against real servers on loopback.

Two kinds of server, both counting the connections they accept: paysim's own
h11 endpoint (``handle_connection`` with ``EchoApp``, which answers every
request with what it received) for the ordinary paths, and hand-written
scripts on raw trio streams for what a well-behaved server never does
(closing a kept-alive connection, malformed answers). Nothing sleeps: tests
wait on events; ``trio.fail_after`` is only a safety net.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from paysim.adapters import socket_io
from paysim.adapters.http1_client import Http1Client, Http1Error
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    handle_connection,
    json_response,
)
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

WAIT_S = 10.0

Script = Callable[["Server", trio.abc.Stream, int], Awaitable[None]]


class Changes:
    """Something tests wait on: ``wait_until(predicate)`` wakes at every ``changed()``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def changed(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(WAIT_S):
            while not predicate():
                await self._event.wait()


class EchoApp(HttpApp):
    """Answers every request 200 with its method, path, query, headers and body.

    ``/close`` answers with ``Connection: close``; ``/big`` with a 1,000-byte
    body; with ``gate`` set, answers wait for it.
    """

    def __init__(self, changes: Changes) -> None:
        super().__init__(Readiness(), Metrics())
        self.changes = changes
        self.gate: trio.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.handled = 0

    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.changes.changed()
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
            self.handled += 1
            self.changes.changed()
        if request.path == "/big":
            return HttpResponse(200, b"x" * 1000, content_type="text/plain")
        answer = json_response(
            200,
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": {k.decode(): v.decode() for k, v in request.headers},
                "body": request.body.decode(),
            },
        )
        if request.path == "/close":
            return HttpResponse(200, answer.body, headers=(("Connection", "close"),))
        return answer


class Server:
    """A loopback server that counts connections; each runs ``script`` or ``EchoApp``."""

    def __init__(self, script: Script | None = None) -> None:
        self.changes = Changes()
        self.app = EchoApp(self.changes)
        self.script = script
        self.connections = 0
        self.closed = 0  # connections the server has closed
        self.requests: list[bytes] = []  # what scripts read, head and body
        self.url = ""

    async def handle(self, stream: trio.abc.Stream) -> None:
        index = self.connections
        self.connections += 1
        self.changes.changed()
        try:
            if self.script is None:
                await handle_connection(stream, self.app, HttpLimits())
            else:
                async with stream:
                    await self.script(self, stream, index)
        finally:
            self.closed += 1
            self.changes.changed()

    async def read_request(self, stream: trio.abc.Stream, buffer: bytearray) -> bytes | None:
        """One request (Content-Length framing) from ``stream``; None at EOF."""
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if not (data := await stream.receive_some()):
                return None
            buffer += data
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", buffer[:end])
        total = end + 4 + (int(found.group(1)) if found else 0)
        while len(buffer) < total:
            if not (data := await stream.receive_some()):
                return None
            buffer += data
        request = bytes(buffer[:total])
        del buffer[:total]
        self.requests.append(request)
        self.changes.changed()
        return request


def answering(response: bytes) -> Script:
    """A script that reads each request on its connection and answers it with ``response``."""

    async def answer(server: Server, stream: trio.abc.Stream, index: int) -> None:
        buffer = bytearray()
        while await server.read_request(stream, buffer) is not None:
            await stream.send_all(response)

    return answer


@pytest.fixture(autouse=True, params=["socket", "stream"])
def io_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs twice: on the socket directly (``socket_io``, the default)
    and through ``trio.SocketStream``: the direct path must behave as the stream does."""
    monkeypatch.setattr(socket_io, "_RAW", request.param == "socket")
    return str(request.param)


@pytest.fixture
async def start(nursery: trio.Nursery) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """``await start(script=None)``: a running ``Server``; its URL is ``server.url``."""

    async def start_server(script: Script | None = None) -> Server:
        server = Server(script)
        serve = functools.partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        server.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return server

    yield start_server
    nursery.cancel_scope.cancel()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def echoed(response: Any) -> dict[str, Any]:
    assert response.status == 200
    result: dict[str, Any] = json.loads(response.body)
    return result


# -- round trips -------------------------------------------------------------------


async def test_get_and_patch_round_trip(start):
    server = await start()
    async with Http1Client(headers=[("User-Agent", "paysim-test")]) as client:
        got = echoed(await client.request("GET", server.url + "/a/b?x=1&y=%C3%A9"))
        assert (got["method"], got["path"], got["query"]) == (
            "GET",
            "/a/b",
            {"x": ["1"], "y": ["é"]},
        )
        host = server.url.removeprefix("http://")
        assert got["headers"]["host"] == host
        assert got["headers"]["user-agent"] == "paysim-test"
        assert "content-length" not in got["headers"]  # no body, no framing header
        assert got["body"] == ""

        response = await client.request(
            "PATCH",
            server.url + "/internal/reservations/a%2Fb%20c",
            body=b'{"status":"CONFIRMED"}',
            headers=[("Content-Type", "application/json"), ("X-Event-Id", "ev-1")],
        )
        assert response.header(b"content-type") == b"application/json"
        got = echoed(response)
        assert got["method"] == "PATCH"
        assert got["path"] == "/internal/reservations/a%2Fb%20c"  # as given, not re-encoded
        assert got["body"] == '{"status":"CONFIRMED"}'
        assert got["headers"]["content-length"] == "22"
        assert got["headers"]["x-event-id"] == "ev-1"
        assert got["headers"]["content-type"] == "application/json"

        empty = echoed(await client.request("POST", server.url))  # no path: "/"
        assert (empty["path"], empty["headers"]["content-length"]) == ("/", "0")

        head = await client.request("HEAD", server.url + "/x")
        assert (head.status, head.body) == (200, b"")
        assert int(head.header(b"content-length") or 0) > 0
    assert server.connections == 1


async def test_sequential_requests_reuse_one_connection(start):
    server = await start()
    async with Http1Client() as client:
        for i in range(5):
            assert echoed(await client.request("GET", f"{server.url}/{i}"))["path"] == f"/{i}"
    assert server.connections == 1


async def test_the_pool_bounds_connections_per_origin(start):
    server = await start()
    server.app.gate = trio.Event()
    answers: list[int] = []
    async with Http1Client(max_connections=2) as client, trio.open_nursery() as nursery:

        async def one(i: int) -> None:
            answers.append((await client.request("GET", f"{server.url}/{i}")).status)

        for i in range(10):
            nursery.start_soon(one, i)
        await server.changes.wait_until(lambda: server.app.in_flight == 2)
        await trio.testing.wait_all_tasks_blocked()
        assert (server.app.in_flight, server.connections) == (2, 2)  # the other 8 wait
        server.app.gate.set()
    assert answers == [200] * 10
    assert server.connections == 2
    assert server.app.most_in_flight == 2


async def test_connection_close_is_not_reused(start):
    server = await start()
    async with Http1Client() as client:
        echoed(await client.request("GET", server.url + "/close"))
        echoed(await client.request("GET", server.url + "/close"))
        assert server.connections == 2
        echoed(
            await client.request("GET", server.url + "/close", headers=[("Connection", "close")])
        )
        assert server.connections == 3


async def test_a_close_the_caller_asks_for_is_kept_even_if_the_server_would_go_on(start):
    server = await start(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    async with Http1Client() as client:
        await client.request("GET", server.url)
        await client.request("GET", server.url)
        assert server.connections == 1
        await client.request("GET", server.url, headers=[("Connection", "close")])
        await client.request("GET", server.url, headers=[(b"CONNECTION", b"x, Close")])
        await client.request("GET", server.url)
        assert server.connections == 3  # each asked-to-close one ended with its exchange


async def test_chunked_and_interim_responses_are_read_whole(start):
    chunked = answering(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    server = await start(chunked)
    async with Http1Client() as client:
        for _ in range(2):
            response = await client.request("POST", server.url, body=b"x")
            assert (response.status, response.body) == (201, b"abcdefg")
    assert server.connections == 1


# -- the keep-alive race -----------------------------------------------------------


async def test_an_idle_connection_closed_by_the_server_is_not_used(start):
    async def answer_once(server: Server, stream: trio.abc.Stream, index: int) -> None:
        if await server.read_request(stream, bytearray()) is not None:
            await stream.send_all(OK)  # keep-alive (HTTP/1.1), then close while idle

    server = await start(answer_once)
    async with Http1Client() as client:
        assert (await client.request("POST", server.url, body=b"1")).body == b"ok"
        await server.changes.wait_until(lambda: server.closed == 1)
        # Not idempotent, yet safe: the closed connection is noticed before sending.
        assert (await client.request("POST", server.url, body=b"2")).body == b"ok"
    assert server.connections == 2
    assert len(server.requests) == 2


async def _drop_second_request(server: Server, stream: trio.abc.Stream, index: int) -> None:
    """Answer the first request; on the second, close without a byte (the race, made sure)."""
    buffer = bytearray()
    for n in range(2):
        if await server.read_request(stream, buffer) is None:
            return
        if n == 1 and index == 0:
            return
        await stream.send_all(OK)


@pytest.mark.parametrize(
    ("method", "idempotent"), [("GET", None), ("PUT", None), ("PATCH", True), ("POST", True)]
)
async def test_a_reused_connection_closed_before_the_answer_is_retried_once(
    start, method, idempotent
):
    server = await start(_drop_second_request)
    async with Http1Client() as client:
        await client.request(method, server.url, idempotent=idempotent)
        response = await client.request(method, server.url, idempotent=idempotent)
        assert (response.status, response.body) == (200, b"ok")
        assert server.connections == 2  # the retry went to a fresh connection
        assert len(server.requests) == 3  # sent twice: once dropped, once answered
        await client.request(method, server.url)  # the fresh one is kept
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "idempotent"), [("POST", None), ("PATCH", None), ("GET", False)]
)
async def test_a_non_idempotent_request_is_not_retried(start, method, idempotent):
    server = await start(_drop_second_request)
    async with Http1Client() as client:
        await client.request(method, server.url, idempotent=idempotent)
        with pytest.raises(Http1Error, match="closed before the response"):
            await client.request(method, server.url, idempotent=idempotent)
        assert (server.connections, len(server.requests)) == (1, 2)
        assert (await client.request(method, server.url)).status == 200  # a fresh one
    assert server.connections == 2


async def test_a_fresh_connection_closed_before_the_answer_is_not_retried(start):
    async def hang_up(server: Server, stream: trio.abc.Stream, index: int) -> None:
        await server.read_request(stream, bytearray())

    server = await start(hang_up)
    async with Http1Client() as client:
        with pytest.raises(Http1Error, match="closed before the response"):
            await client.request("GET", server.url)
    assert server.connections == 1


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",  # no status code
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",  # cut short, then closed
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    ],
    ids=["status", "not-http", "truncated", "two-lengths"],
)
async def test_a_malformed_response_raises(start, answer):
    async def babble(server: Server, stream: trio.abc.Stream, index: int) -> None:
        if await server.read_request(stream, bytearray()) is not None:
            await stream.send_all(answer)

    server = await start(babble)
    async with Http1Client() as client:
        with pytest.raises(Http1Error):
            await client.request("GET", server.url)
        with pytest.raises(Http1Error):  # the broken connection was not kept
            await client.request("GET", server.url)
    assert server.connections == 2


async def test_connection_refused_raises():
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        async with Http1Client() as client:
            with pytest.raises(Http1Error, match=f"connect to 127.0.0.1:{port}"):
                await client.request("GET", f"http://127.0.0.1:{port}/")


async def test_a_body_over_the_bound_raises_and_drops_the_connection(start):
    server = await start()
    async with Http1Client(max_body_bytes=999) as client:
        with pytest.raises(Http1Error, match="over 999 bytes"):
            await client.request("GET", server.url + "/big")
        assert server.connections == 1
        await server.changes.wait_until(lambda: server.closed == 1)
    async with Http1Client(max_body_bytes=1000) as client:
        assert len((await client.request("GET", server.url + "/big")).body) == 1000


async def test_a_cancelled_request_closes_its_connection_and_frees_its_slot(start):
    server = await start()
    server.app.gate = trio.Event()
    async with Http1Client(max_connections=1) as client:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.request, "GET", server.url)
                await server.changes.wait_until(lambda: server.app.in_flight == 1)
                scope.cancel()  # what a caller's trio.fail_after does
        server.app.gate.set()  # the server answers, then finds the connection closed
        await server.changes.wait_until(lambda: server.closed == 1)
        with trio.fail_after(WAIT_S):
            assert (await client.request("GET", server.url)).status == 200
    assert server.connections == 2


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "/relative",
        "http:///no-host",
        "http://user:secret@127.0.0.1/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1/é",
    ],
)
async def test_a_url_it_cannot_send_to_raises_value_error(url):
    async with Http1Client() as client:
        with pytest.raises(ValueError):  # noqa: PT011 - several messages
            await client.request("GET", url)


async def test_headers_it_sets_itself_are_refused():
    async with Http1Client() as client:
        for name in ("Host", "content-length", "Transfer-Encoding"):
            with pytest.raises(ValueError, match=f"sets the {name} header"):
                await client.request("GET", "http://127.0.0.1/", headers=[(name, "1")])
            raw = [(name.encode(), b"1")]
            with pytest.raises(ValueError, match=f"sets the {name} header"):
                await client.request("GET", "http://127.0.0.1/", headers=raw)


async def test_bytes_headers_go_out_as_they_are(start):
    server = await start()
    async with Http1Client() as client:
        got = echoed(
            await client.request(
                "POST",
                server.url + "/h",
                body=b"{}",
                headers=[(b"X-Raw", b"v=1; a b"), (b"user-agent", b"raw/1")],
            )
        )
    assert got["headers"]["x-raw"] == "v=1; a b"
    assert got["headers"]["user-agent"] == "raw/1"
    assert got["headers"]["content-length"] == "2"


async def test_a_bytes_header_h11_refuses_raises_before_connecting():
    async with Http1Client() as client:
        with pytest.raises(Http1Error, match="invalid request"):
            await client.request("GET", "http://127.0.0.1:1/", headers=[(b"X-Id", b"a\r\nb")])


async def test_a_header_h11_refuses_raises_before_connecting():
    async with Http1Client() as client:
        with pytest.raises(Http1Error, match="invalid request"):  # nothing listens: not sent
            await client.request("GET", "http://127.0.0.1:1/", headers=[("X-Id", "a\r\nb")])


async def test_a_closed_client_refuses_requests(start):
    server = await start()
    client = Http1Client()
    await client.request("GET", server.url)
    await client.aclose()
    await server.changes.wait_until(lambda: server.closed == 1)  # the idle one was closed
    with pytest.raises(RuntimeError):
        await client.request("GET", server.url)


# -- https -------------------------------------------------------------------------


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for "localhost" and its key, both PEM."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_https_with_keep_alive(nursery, tmp_path):
    cert_pem, key_pem = self_signed_certificate()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    server = Server()

    async def handle_tls(stream: trio.abc.Stream) -> None:
        await server.handle(trio.SSLStream(stream, server_context, server_side=True))

    serve = functools.partial(trio.serve_tcp, handle_tls, 0, host="127.0.0.1")
    port = (await nursery.start(serve))[0].socket.getsockname()[1]
    url = f"https://localhost:{port}/secure"
    async with Http1Client(ssl_context=client_context) as client:
        for _ in range(3):
            got = echoed(await client.request("PATCH", url, body=b"{}"))
            assert (got["path"], got["body"]) == ("/secure", "{}")
            assert got["headers"]["host"] == f"localhost:{port}"
    assert server.connections == 1
    async with Http1Client() as untrusting:  # the system's CAs: the handshake fails
        with pytest.raises(Http1Error, match=f"connect to localhost:{port}"):
            await untrusting.request("GET", url)


# -- the direct socket path (socket_io) ---------------------------------------------


async def test_plain_tcp_goes_past_the_stream_unless_switched_off(start, io_path, monkeypatch):
    server = await start()

    async def refuse(*args: object) -> None:
        raise AssertionError("the stream was used")

    open_tcp_stream = trio.open_tcp_stream

    async def refusing(*args: Any, **kwargs: Any) -> trio.SocketStream:
        stream = await open_tcp_stream(*args, **kwargs)
        stream.send_all = refuse  # type: ignore[method-assign, assignment]
        stream.receive_some = refuse  # type: ignore[method-assign, assignment]
        return stream

    monkeypatch.setattr(trio, "open_tcp_stream", refusing)  # the client's streams only
    async with Http1Client() as client:
        if io_path == "socket":
            assert (await client.request("GET", server.url)).status == 200
        else:
            with pytest.raises(AssertionError, match="the stream was used"):
                await client.request("GET", server.url)


async def test_a_request_larger_than_the_socket_buffer_is_sent_whole(start):
    """The kernel takes part of it; the rest goes through the stream."""
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB

    server = await start(answering(OK))
    async with Http1Client() as client:
        with trio.fail_after(WAIT_S):
            assert (await client.request("POST", server.url, body=body)).body == b"ok"
    assert server.requests[0].endswith(body)


async def test_a_reset_in_the_middle_of_the_answer_raises(start):
    async def reset(server: Server, stream: trio.abc.Stream, index: int) -> None:
        await server.read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        assert isinstance(stream, trio.SocketStream)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = await start(reset)
    async with Http1Client() as client:
        with (
            trio.fail_after(WAIT_S),
            pytest.raises(Http1Error, match="connection lost"),
        ):
            await client.request("POST", server.url)
