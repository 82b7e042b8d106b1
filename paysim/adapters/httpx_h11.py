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

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("this client keeps no cookies")


class H11Transport(httpx.AsyncBaseTransport):
    def __init__(self, client: Http1Client) -> None:
        self._client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        host_header: str | None = None
        headers: list[tuple[bytes, bytes]] = []  # as httpx encoded them: h11 takes bytes
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
        return httpx.Response(
            response.status,
            headers=list(response.headers),
            content=response.body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()
