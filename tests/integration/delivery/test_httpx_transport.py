"""httpx's API over ``Http1Client``: ``Http1Transport`` and ``CookielessClient``.

Real servers on loopback (the ones of ``test_http1_client``); the webhook
dispatcher's own behaviour through this transport is covered end to end by
``test_delivery_e2e``.
"""

from __future__ import annotations

import functools
import ssl

import httpx
import pytest
import trio

from paysim.adapters.http1_client import Http1Client
from paysim.adapters.httpx_transport import CookielessClient, Http1Transport
from tests.integration.delivery.test_http1_client import (
    OK,
    Server,
    answering,
    self_signed_certificate,
    start,
)

__all__ = ["start"]  # the fixture, used by name


def client(**kwargs: object) -> CookielessClient:
    """As the wiring makes it: requests go straight to the transport."""
    return CookielessClient(
        transport=Http1Transport(Http1Client(**kwargs)),  # type: ignore[arg-type]
        follow_redirects=False,
        trust_env=False,
    )


class Seen:
    """A request event hook that records what it saw."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.urls.append(str(request.url))


@pytest.mark.parametrize("through", ["transport", "client.send"])
async def test_a_redirect_comes_back_as_it_is_either_way(start, monkeypatch, through):
    """Straight to the transport (``AsyncClient.send`` made to fail, so it is not
    used) or through ``AsyncClient.send`` (a hook set after construction): the
    same response, the redirect not followed, the client's timeout applied."""

    redirect = answering(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 5\r\n\r\nmoved"
    )

    server = await start(redirect)
    seen = Seen()
    async with client() as http:
        if through == "transport":

            async def refuse(*args: object, **kwargs: object) -> httpx.Response:
                raise AssertionError("AsyncClient.send was used")

            monkeypatch.setattr(httpx.AsyncClient, "send", refuse)
        else:
            http.event_hooks = {"request": [seen], "response": []}
        request = httpx.Request("POST", f"{server.url}/hook", content=b"{}")
        response = await http.send(request)
    assert (response.status_code, response.content) == (302, b"moved")
    assert response.headers["location"] == "/elsewhere"
    assert response.request is request
    assert response.is_closed
    assert request.extensions["timeout"] == httpx.Timeout(5.0).as_dict()
    assert len(server.requests) == 1  # not followed
    assert seen.urls == ([] if through == "transport" else [f"{server.url}/hook"])


async def test_a_client_made_with_hooks_uses_client_send(start):
    server = await start()
    seen = Seen()
    hooked = CookielessClient(
        transport=Http1Transport(Http1Client()), trust_env=False, event_hooks={"request": [seen]}
    )
    async with hooked:
        assert (await hooked.get(server.url)).status_code == 200
    assert seen.urls == [server.url]


async def test_a_post_goes_through_with_its_headers_body_and_host(start):
    server = await start()
    async with client() as http:
        response = await http.post(
            f"{server.url}/hook?x=1",
            content=b'{"a":1}',
            headers=[("Host", "merchant.example:8443"), ("X-Webhook-Id", "evt_1")],
        )
    assert response.status_code == 200
    got = response.json()
    assert (got["method"], got["path"], got["query"], got["body"]) == (
        "POST",
        "/hook",
        {"x": ["1"]},
        '{"a":1}',
    )
    assert got["headers"]["host"] == "merchant.example:8443"  # the pinned URL's real name
    assert got["headers"]["x-webhook-id"] == "evt_1"
    assert got["headers"]["content-length"] == "7"
    assert response.headers["content-type"] == "application/json"


async def test_connections_are_kept_alive_across_requests(start):
    server = await start()
    async with client() as http:
        for _ in range(3):
            assert (await http.get(server.url)).status_code == 200
    assert server.connections == 1


async def test_cookies_a_receiver_sets_are_never_sent_back(start):
    sets_cookie = answering(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 2\r\n\r\nok"
    )

    server = await start(sets_cookie)
    async with client() as http:
        first = await http.get(server.url)
        assert first.headers["set-cookie"].startswith("session=abc")
        await http.get(server.url)
        assert not http.cookies
    assert b"cookie:" not in server.requests[1].lower()
    with pytest.raises(ValueError, match="no cookies"):
        CookielessClient(cookies={"a": "b"})


async def test_a_refused_connection_is_httpx_connect_error():
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        async with client() as http:
            with pytest.raises(httpx.ConnectError, match=r"connect to 127\.0\.0\.1"):
                await http.post(f"http://127.0.0.1:{port}/", content=b"{}")


async def test_no_answer_in_time_is_read_timeout_and_frees_the_slot(start, autojump_clock):
    answered = 0

    async def silent_once(server: Server, stream: trio.abc.Stream, index: int) -> None:
        nonlocal answered
        buffer = bytearray()
        while await server.read_request(stream, buffer) is not None:
            if index == 0:
                await trio.sleep_forever()
            answered += 1
            await stream.send_all(OK)

    server = await start(silent_once)
    async with client(max_connections=1) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(server.url, content=b"{}", timeout=5.0)
        assert (await http.post(server.url, content=b"{}", timeout=5.0)).status_code == 200
    assert answered == 1


async def test_a_broken_answer_is_httpx_read_error(start):
    async def garbage(server: Server, stream: trio.abc.Stream, index: int) -> None:
        await server.read_request(stream, bytearray())
        await stream.send_all(b"NOT HTTP\r\n\r\n")

    server = await start(garbage)
    async with client() as http:
        with pytest.raises(httpx.ReadError, match="bad response"):
            await http.post(server.url, content=b"{}")


async def test_a_url_the_client_cannot_send_to_is_unsupported_protocol():
    async with client() as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("ftp://example.invalid/")


async def test_sni_hostname_names_the_tls_server_of_a_pinned_address(nursery, tmp_path):
    """The URL holds the address; the certificate is checked against the name."""
    cert_pem, key_pem = self_signed_certificate()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = Server()

    async def handle_tls(stream: trio.abc.Stream) -> None:
        await server.handle(trio.SSLStream(stream, server_context, server_side=True))

    serve = functools.partial(trio.serve_tcp, handle_tls, 0, host="127.0.0.1")
    port = (await nursery.start(serve))[0].socket.getsockname()[1]
    pinned = f"https://127.0.0.1:{port}/hook"
    trusting = ssl.create_default_context(cadata=cert_pem.decode())
    async with client(ssl_context=trusting) as http:
        response = await http.post(
            pinned,
            content=b"{}",
            headers=[("Host", f"localhost:{port}")],
            extensions={"sni_hostname": "localhost"},
        )
        assert response.json()["headers"]["host"] == f"localhost:{port}"
        # Without the name, the address is what gets verified, and the certificate
        # does not name it.
        with pytest.raises(httpx.ConnectError):
            await http.post(pinned, content=b"{}")
