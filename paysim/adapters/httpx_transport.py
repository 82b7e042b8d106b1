"""An httpx transport that sends through ``Http1Client``: httpx's API, a lighter engine.

Why: the webhook dispatcher must keep httpx's client API (one ``AsyncClient``
owned by the app root, its ``Request``/``Response`` models, its exceptions,
``MockTransport`` in unit tests). httpx's default transport (httpcore) cost
560 to 680 µs of CPU per webhook POST on loopback, most of the server's time
at a few hundred payments per second; this transport costs about 275 µs for
the whole ``client.post`` (measured against the delivery benchmark's
receiver), because ``Http1Client`` does little per request.

What it maps:

* the request's method, URL, headers and body go to ``Http1Client.request``;
  its ``Host`` header (the dispatcher sends to a pinned address with the
  original host name) becomes ``host_header``, and the ``sni_hostname``
  extension becomes the TLS server name; ``Content-Length`` and
  ``Transfer-Encoding`` are the client's own and are dropped;
* timeouts: the connect timeout is ``Http1Client``'s own; the whole exchange
  is bounded by the request's ``read`` timeout (httpx's per-operation
  timeouts become one deadline, which is stricter, never looser);
* errors become httpx's: a failed connect ``ConnectError``, a deadline
  ``ReadTimeout``, any other failed exchange ``ReadError``, a URL the client
  cannot send to ``UnsupportedProtocol``;
* no keep-alive retry for non-idempotent methods (the ``Http1Client`` rule);
  redirects, streaming and HTTP/2 are not supported (the dispatcher needs
  none of them).

The transport owns its ``Http1Client``: closing the httpx client closes it.

``CookielessClient`` is an ``httpx.AsyncClient`` that neither keeps nor sends
cookies. Webhook receivers are other parties' servers: a cookie one of them
sets must not travel with later deliveries, and httpx's cookie extraction
(it builds urllib request and response objects for every response) was a
sixth of the cost of a delivery.

It also sends plain requests straight to its transport. ``AsyncClient.send``
runs, for every request, an auth flow (an async generator), the redirect
loop, event hooks, a request context, a transport lookup among the mounts and
a wrapper around the response stream, about 25-30 µs of a webhook's CPU
(issue 18) for nothing the webhook sender asks for. When the client was made
with a transport, ``trust_env=False`` (no proxies from the environment) and
no auth, event hooks, mounts, proxy or base URL, and a request is sent
without following redirects (a 3xx comes back as it is either way), not
streamed and with no auth of its own, ``send`` hands the ``httpx.Request`` to
``transport.handle_async_request`` and reads the ``httpx.Response`` it gets
back: httpx's public transport interface. It sets the client's timeout on a
request without one, as ``AsyncClient.send`` does. Anything else, including
hooks or auth set on the client later, goes through ``AsyncClient.send``.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from paysim.adapters.http1_client import Http1Client, Http1ConnectError, Http1Error, Pin

_DROPPED = frozenset({b"host", b"content-length", b"transfer-encoding"})


class _NoCookies(httpx.Cookies):
    """An always-empty jar: what a response sets is dropped."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set_cookie_header(self, request: httpx.Request) -> None:
        return None


class CookielessClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` without a cookie jar (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("cookies"):
            raise ValueError("this client keeps no cookies")
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()
        plain = kwargs.get("trust_env") is False and not any(
            kwargs.get(name) for name in ("auth", "event_hooks", "mounts", "proxy", "base_url")
        )
        transport = kwargs.get("transport")
        self._direct: httpx.AsyncBaseTransport | None = transport if plain else None

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        """``AsyncClient.send``; a plain request goes straight to the transport (see above)."""
        direct = self._direct
        follow = (
            self.follow_redirects
            if follow_redirects is httpx.USE_CLIENT_DEFAULT
            else follow_redirects
        )
        if (
            direct is None
            or stream
            or auth is not httpx.USE_CLIENT_DEFAULT
            or follow is not False
            or self.is_closed
            or self.auth is not None
            or self.event_hooks["request"]
            or self.event_hooks["response"]
        ):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if "timeout" not in request.extensions:
            request.extensions["timeout"] = self.timeout.as_dict()
        response = await direct.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("this client keeps no cookies")


class Http1Transport(httpx.AsyncBaseTransport):
    def __init__(self, client: Http1Client) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        host_header: str | None = None
        headers: list[tuple[bytes, bytes]] = []  # as httpx encoded them: Http1Client takes bytes
        for name, value in request.headers.raw:
            lower = name.lower()
            if lower == b"host":
                host_header = value.decode("latin-1")
            elif lower not in _DROPPED:
                headers.append((name, value))
        sni = request.extensions.get("sni_hostname")
        timeout = request.extensions.get("timeout", {}).get("read")
        deadline = trio.current_time() + timeout if timeout is not None else float("inf")
        try:
            # A bare cancel scope: trio.fail_at is a generator context manager, which
            # costs several times as much, on every webhook.
            with trio.CancelScope(deadline=deadline) as scope:
                response = await self._client.request(
                    request.method,
                    str(request.url),
                    body=body,
                    headers=headers,
                    pin=Pin(host_header, sni if isinstance(sni, str) else None),
                )
            if scope.cancelled_caught:
                raise httpx.ReadTimeout("no complete response in time", request=request)
        except Http1ConnectError as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        except Http1Error as exc:
            raise httpx.ReadError(str(exc), request=request) from None
        except ValueError as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from None
        return _response(response.status, response.headers, response.body, request)

    async def aclose(self) -> None:
        await self._client.aclose()


_EXTENSIONS = {"http_version": b"HTTP/1.1"}


def _response(
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    body: bytes,
    request: httpx.Request | None,
) -> httpx.Response:
    """The ``httpx.Response`` of a complete exchange, its body already read.

    ``httpx.Response(content=...)`` reads its own body in ``__init__``, through
    ``iter_bytes``, a content decoder, two chunkers and three request contexts:
    7.4 µs of the 8.9 µs it costs. With a Content-Length (httpx would add one,
    ``_prepare``) and no Content-Encoding (nothing to decode), the response is
    made from its stream as a transport's is and marked read, with the body
    httpx would have read: the same object ``content=`` gives. This sets
    httpx's private ``_content``; ``_PRESET_OK`` checks at import that the
    installed httpx still reads it, else every response takes ``content=``.
    """
    if _PRESET_OK and _plain(headers):
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=_EXTENSIONS,  # copied by httpx
        )
        response._content = body
        response.is_stream_consumed = True
        response.is_closed = True
        return response
    return httpx.Response(
        status, headers=list(headers), content=body, request=request, extensions=_EXTENSIONS
    )


def _plain(headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """A Content-Length and no Content-Encoding (names are lower-case)."""
    length = False
    for name, _ in headers:
        if name == b"content-length":
            length = True
        elif name == b"content-encoding":
            return False
    return length


def _preset_works() -> bool:
    """Whether httpx keeps a read body in ``_content`` and serves it from there."""
    try:
        read = httpx.Response(200, content=b"probe")
        if read.__dict__.get("_content") != b"probe":
            return False
        headers = ((b"content-length", b"5"),)
        preset = httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"other"))
        preset._content = b"probe"
        preset.is_stream_consumed = preset.is_closed = True
        return preset.read() == b"probe" and preset.text == "probe"
    except Exception:  # any change of httpx's internals: take the public path
        return False


_PRESET_OK = _preset_works()
