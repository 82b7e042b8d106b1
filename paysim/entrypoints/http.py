"""The HTTP/1.1 endpoint for probes and metrics, on trio streams with h11.

Theory of operation: ``serve_http`` opens the listeners, reports the port via
``task_status`` and hands them to ``trio.serve_listeners``; each connection
runs ``handle_connection`` in the server's own nursery. A connection reads one
request (head and body, fully buffered), answers it through
``HttpApp.handle``, then starts the next cycle (keep-alive; pipelined
requests are answered one after another).

Policy decisions (limits from ``HttpLimits``):

* Head over ``max_header_bytes``: 431. Body over ``max_body_bytes``: 413,
  decided from Content-Length before reading, or while reading chunks.
* Slow clients cannot hold a connection: a new connection must complete its
  request head within ``head_timeout_s`` (default 5 s, also the bound on a
  connection that sends nothing); between requests a connection may stay idle
  ``keepalive_timeout_s``, and the head of the next request must be complete
  ``head_timeout_s`` after its first byte. ``request_timeout_s`` bounds the
  whole request, body included, from the same start. A begun request that
  misses a deadline gets 408; an idle connection is just closed. Writing a
  response gets ``request_timeout_s``.
* Malformed request: 400 (or h11's hint, e.g. 501). After any error the
  connection closes (``Connection: close``) after a short bounded lingering
  close, so that the client reads the answer rather than a reset.
* A handler that raises: 500 with a generic body, traceback to the
  ``paysim.http`` log. No exception text ever reaches a response.
* Probes get through a full house: at ``max_connections`` a new connection
  takes the slot of the connection that has waited longest for a request head
  (a slowloris connection, or an idle keep-alive one), which is closed. A
  kubelet probe sends its whole head at once, so it is served before anyone
  can take its slot; an attacker holding every slot with slow heads only
  evicts its own connections. Only when every slot is busy with a request
  being answered does the connection's task write a canned 503 with
  ``Connection: close`` and close at once, reading nothing
  (``http_slots.ConnectionSlots`` keeps the count).
* Accepting is ``trio.serve_listeners``: on EMFILE, ENFILE, ENOMEM or
  ENOBUFS it logs (``trio.serve_listeners``) and retries after 100 ms.
* Any bytes are answered (400, 431, 413...) or the connection is closed:
  nothing a client sends raises out of a connection.
* Every response has Content-Type, Content-Length and ``Server: paysim``;
  HEAD works on every GET route (same headers, no body). Responses are
  counted by route name, ``"other"`` for unknown paths (bounded cardinality).

Resource handling: ``handle_connection`` owns the stream it is given and
closes it before returning; ``serve_http`` owns its listeners and closes them
(and every connection) when cancelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

import h11
import structlog
import trio

from paysim.config import HttpSettings
from paysim.entrypoints.http_slots import ConnectionSlots, Slot
from paysim.entrypoints.http_stream import Send, send_stream
from paysim.entrypoints.listeners import open_listeners
from paysim.observability.health import Readiness
from paysim.observability.metrics import ProcessMetrics

log = structlog.get_logger("paysim.http")

_RECEIVE_CHUNK = 16384
_LINGER_S = 1.0
_LINGER_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class HttpLimits:
    """Per-connection and per-server limits of the HTTP endpoint."""

    max_header_bytes: int = 16384
    max_body_bytes: int = 65536
    request_timeout_s: float = 10.0
    max_connections: int = 256
    head_timeout_s: float = 5.0
    keepalive_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        sizes = (self.max_header_bytes, self.max_body_bytes, self.max_connections)
        times = (self.request_timeout_s, self.head_timeout_s, self.keepalive_timeout_s)
        if min(sizes) < 1 or not min(times) > 0:
            raise ValueError("HTTP limits must be positive")

    @classmethod
    def from_settings(cls, http: HttpSettings) -> HttpLimits:
        return cls(
            max_header_bytes=http.max_header_bytes,
            max_body_bytes=http.max_body_bytes,
            request_timeout_s=http.request_timeout_s,
            max_connections=http.max_connections,
            head_timeout_s=http.head_timeout_s,
            keepalive_timeout_s=http.keepalive_timeout_s,
        )


@dataclass(frozen=True)
class HttpRequest:
    """One complete request; header names are lower-case bytes as h11 gives them."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class HttpResponse:
    """A complete response; ``headers`` are extra ones (never Content-Length/-Type).

    With ``stream`` (Server-Sent Events) the body is what ``stream(send)``
    sends: see ``paysim.entrypoints.http_stream``.
    """

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    stream: Callable[[Send], Awaitable[None]] | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def json_response(status: int, obj: Any) -> HttpResponse:
    """A response whose body is ``obj`` as compact JSON."""
    return HttpResponse(status, json.dumps(obj, separators=(",", ":")).encode())


_PHRASES = {s.value: s.phrase for s in HTTPStatus}


def _error_response(status: int, *headers: tuple[str, str]) -> HttpResponse:
    """A generic error body: the status phrase only, never any exception text."""
    body = json_response(status, {"error": _PHRASES.get(status, "error").lower()}).body
    return HttpResponse(status, body, headers=headers)


class HttpApp:
    """Routing and the built-in routes (/health, /livez, /readyz, /metrics).

    Routes match the path exactly. A route that allows GET also answers HEAD.
    """

    def __init__(
        self, readiness: Readiness, metrics: ProcessMetrics, service_name: str = "payment-sim-api"
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        self._service_name = service_name
        self._routes: dict[str, tuple[frozenset[str], Handler]] = {}  # path: (methods, handler)
        get = frozenset({"GET"})
        self.add_route("/health", get, self._health)
        self.add_route("/livez", get, self._livez)
        self.add_route("/readyz", get, self._readyz)
        self.add_route("/metrics", get, self._metrics_route)

    def add_route(self, path: str, methods: frozenset[str], handler: Handler) -> None:
        if path in self._routes:
            raise ValueError(f"route {path!r} is already defined")
        allowed = {m.upper() for m in methods}
        if "GET" in allowed:
            allowed.add("HEAD")
        self._routes[path] = (frozenset(allowed), handler)

    def record(self, path: str | None, status: int) -> None:
        """Count a response by route name, ``"other"`` for unknown paths (cardinality)."""
        self._metrics.http_request(path if path in self._routes else "other", status)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route ``request``, run its handler and count the response. Never raises."""
        methods, handler = self._routes.get(request.path, (frozenset(), None))
        if handler is None:
            response = _error_response(404)
        elif request.method not in methods:
            response = _error_response(405, ("Allow", ", ".join(sorted(methods))))
        else:
            try:
                response = await handler(request)
            except Exception:
                log.exception("http handler failed", method=request.method, path=request.path)
                response = _error_response(500)
        self.record(request.path, response.status)
        return response

    async def _health(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, {"status": "healthy", "service": self._service_name})

    async def _livez(self, request: HttpRequest) -> HttpResponse:
        live = self._readiness.is_live
        return json_response(200 if live else 503, {"status": "ok" if live else "not live"})

    async def _readyz(self, request: HttpRequest) -> HttpResponse:
        ready = self._readiness.is_ready
        return json_response(200 if ready else 503, {"status": "ready" if ready else "not ready"})

    async def _metrics_route(self, request: HttpRequest) -> HttpResponse:
        accept = request.header(b"accept")
        body, content_type = self._metrics.render(accept.decode("latin-1") if accept else None)
        return HttpResponse(200, body, content_type=content_type)


class _Connection:
    """The state of one connection; ``run`` drives it until it must close."""

    def __init__(
        self, stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits, slot: Slot | None
    ) -> None:
        self.stream, self.app, self.limits, self.slot = stream, app, limits, slot
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.path: str | None = None  # of the request being read, once its head is parsed
        self.is_head = False  # whether that request is a HEAD (its answers have no body)
        self.head_scope = trio.CancelScope()

    async def run(self) -> None:
        first = True
        while True:
            if self.slot is not None:
                self.slot.waiting()
            if not first and not await self._wait_for_next_request():
                return  # closed by the client, or idle for keepalive_timeout_s
            first = False
            request: HttpRequest | None = None
            try:
                with (
                    trio.move_on_after(self.limits.request_timeout_s),
                    trio.move_on_after(self.limits.head_timeout_s) as self.head_scope,
                ):
                    request = await self._read_request()
                    if request is None:  # the client closed between requests
                        return
            except h11.RemoteProtocolError as exc:  # from h11, or our own limits
                await self._fail(exc.error_status_hint)
                return
            if request is None:  # timed out: 408 if the request had begun, else just close
                if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                    await self._fail(408)
                return
            if not await self._send(await self.app.handle(request)):
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0...
            self.conn.start_next_cycle()

    async def _wait_for_next_request(self) -> bool:
        """Wait (keep-alive) for the first byte of the next request; False to close."""
        if self.conn.trailing_data[0] or self.conn.trailing_data[1]:
            return True  # pipelined, or the client closed: _read_request sees it
        with trio.move_on_after(self.limits.keepalive_timeout_s):
            data = await self.stream.receive_some(_RECEIVE_CHUNK)
            self.conn.receive_data(bytes(data))
            return bool(data)
        return False

    async def _read_request(self) -> HttpRequest | None:
        self.path, self.is_head = None, False
        max_body = self.limits.max_body_bytes
        request: HttpRequest | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    interim = h11.InformationalResponse(status_code=100, headers=[])
                    await self.stream.send_all(self.conn.send(interim))
                self.conn.receive_data(bytes(await self.stream.receive_some(_RECEIVE_CHUNK)))
            elif isinstance(event, h11.Request):
                self.head_scope.deadline = math.inf  # the head is in: the body has the rest
                if self.slot is not None:
                    self.slot.busy()
                request = self._parse_head(event)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    raise h11.RemoteProtocolError("body too large", 413)
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None  # h11: a Request always comes first
                return dataclasses.replace(request, body=bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # pragma: no cover - PAUSED cannot happen: we never read ahead
                raise h11.RemoteProtocolError("paused", 500)

    def _parse_head(self, event: h11.Request) -> HttpRequest:
        try:
            target = urlsplit(event.target.decode("latin-1"))
            query = parse_qs(target.query)
        except ValueError:  # e.g. "http://[": urlsplit's invalid IPv6 host
            raise h11.RemoteProtocolError("bad target", 400) from None
        self.path, self.is_head = target.path, event.method == b"HEAD"
        # h11 only bounds an *incomplete* head; bound the complete one too.
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > self.limits.max_header_bytes:
            raise h11.RemoteProtocolError("head too large", 431)
        for name, value in event.headers:
            # h11 checked the digits; the length check spares int() a huge number.
            if name == b"content-length" and (
                len(value) > 18 or int(value) > self.limits.max_body_bytes
            ):
                raise h11.RemoteProtocolError("body too large", 413)
        return HttpRequest(event.method.decode("ascii"), target.path, query, list(event.headers))

    async def _send(self, response: HttpResponse) -> bool:
        """Send ``response``; False when the write timed out (the caller closes)."""
        if response.stream is not None:  # http_stream: the connection closes after it
            head = None if self.is_head else response.stream
            await send_stream(self.conn, self.stream, response, head, self.limits.request_timeout_s)
            return False
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", "paysim"),
            *response.headers,
        ]
        reason = _PHRASES.get(response.status, "")
        data = self.conn.send(
            h11.Response(status_code=response.status, headers=headers, reason=reason)
        )
        if not self.is_head and response.body:
            data += self.conn.send(h11.Data(data=response.body))
        data += self.conn.send(h11.EndOfMessage())
        with trio.move_on_after(self.limits.request_timeout_s):
            await self.stream.send_all(data)
            return True
        return False

    async def _fail(self, status: int) -> None:
        """Answer an error (when the state allows one), then close gracefully."""
        self.app.record(self.path, status)
        can_answer = self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)
        if can_answer and not await self._send(_error_response(status, ("Connection", "close"))):
            return  # the write timed out
        # Lingering close: stop sending, discard what the client still sends for
        # a moment, so that it reads our answer instead of a connection reset.
        with trio.move_on_after(min(_LINGER_S, self.limits.request_timeout_s)):
            if isinstance(self.stream, trio.abc.HalfCloseableStream):
                await self.stream.send_eof()
            received = 0
            while received < _LINGER_MAX_BYTES and (
                data := await self.stream.receive_some(_RECEIVE_CHUNK)
            ):
                received += len(data)


async def handle_connection(
    stream: trio.abc.Stream, app: HttpApp, limits: HttpLimits, slot: Slot | None = None
) -> None:
    """Serve HTTP/1.1 on ``stream`` until the connection ends; always closes ``stream``.

    A client that goes away (BrokenResourceError) ends the connection quietly;
    so does eviction (``slot.scope`` cancelled, see ``ConnectionSlots``).
    """
    try:
        with (
            slot.scope if slot is not None else contextlib.nullcontext(),
            contextlib.suppress(trio.BrokenResourceError),
        ):
            await _Connection(stream, app, limits, slot).run()
    finally:
        await trio.aclose_forcefully(stream)


_REJECT_BODY = json_response(503, {"error": "too many connections"}).body
_REJECT_BYTES = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nServer: paysim\r\nConnection: close\r\n\r\n%s"
    % (len(_REJECT_BODY), _REJECT_BODY)
)


async def serve_http(
    host: str | None,
    port: int,
    app: HttpApp,
    limits: HttpLimits,
    *,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``app`` on ``host:port`` forever; ``task_status.started(port)`` once listening.

    ``host`` None or ``""`` listens on all interfaces. With ``port`` 0 the
    reported port is the first listener's (each address family may get its
    own; pass a host in tests). A taken port raises OSError; ``reuse_port``
    (``paysim serve --workers`` only) binds with SO_REUSEPORT, so that the
    workers share the port (``listeners.open_listeners``). The accept loops
    are ``trio.serve_listeners`` (which also backs off on EMFILE and its
    kin); each connection's task first takes a slot (``ConnectionSlots``).
    Cancellation closes the listeners and every open connection.
    """
    listeners = await open_listeners(host, port, reuse_port=reuse_port)
    slots = ConnectionSlots(limits.max_connections)  # open connections, over every listener

    async def connection(stream: trio.SocketStream) -> None:
        slot = slots.take()
        if slot is None:  # every slot is answering a request
            await _reject(stream, app)
            return
        try:
            await handle_connection(stream, app, limits, slot)
        except Exception:  # a bug in one connection must not take the endpoint down
            log.exception("http connection failed")
        finally:
            slot.release()

    try:
        async with trio.open_nursery() as nursery:
            serve = partial(trio.serve_listeners, connection, listeners, handler_nursery=nursery)
            await nursery.start(serve)
            task_status.started(listeners[0].socket.getsockname()[1])
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
    raise AssertionError("unreachable: the accept loops never return")


async def _reject(stream: trio.SocketStream, app: HttpApp) -> None:
    """A canned 503 with ``Connection: close``; nothing is read. The caller closes ``stream``."""
    # A fresh socket's send buffer takes this at once; the timeout is a backstop.
    with trio.move_on_after(_LINGER_S), contextlib.suppress(trio.BrokenResourceError):
        await stream.send_all(_REJECT_BYTES)
        await stream.send_eof()
    app.record(None, 503)
