"""A small keep-alive HTTP/1.1 client on trio streams, for one job.

Why it exists: the reservation worker sends many small requests (a PATCH
with a 22-byte JSON body) to one service. Measured with ``python -m
paysim.benchmarks.worker`` (the worker alone on one core, a lean stub
answering on the other), the worker spent 720 to 1,010 µs of CPU per event
with httpx, against about 60 µs without the PATCH call: httpx took over 90%
of it, more the more requests were in flight, and the worker managed 970 to
1,380 events/s at concurrency 8 to 64. With this client: 160 to 190 µs per
event, 5,300 to 6,300 events/s. It costs about 100 µs a request because it
does little: one send and one receive per exchange. The framing (writing the
request, reading the response) is ``http1_framing``'s, which replaced h11
here: h11 cost 70-90 µs of a webhook's CPU (issue 18).

Theory of operation: ``Http1Client.request`` splits the URL (cached per
origin), encodes the request (which validates it), then takes a slot of
the origin's pool: one ``trio.Semaphore`` of ``max_connections`` per
``(scheme, host, port)``; callers beyond it wait their turn, in order. With
the slot it takes the most recently used idle connection (LIFO: the warm
ones stay warm, the others age out at the server) whose socket has nothing
to read (an idle connection that is readable was closed by the server, or
sent something unasked: it is dropped), or opens a new one; sends the
request in one write, reads the whole response, and gives the connection
back to the idle list only when the response says it may be reused (a
framed body, nothing left over in the buffer, no ``Connection: close`` on
either side, not HTTP/1.0).

Policy decisions:

* **One retry, for the keep-alive race.** A server may close an idle
  connection just as we reuse it (after the readability check). When a
  *reused* connection ends (EOF or reset) before a single byte of the
  response arrived, the request is sent once more, on a fresh connection,
  if it is idempotent: by default GET, HEAD, OPTIONS, TRACE, PUT and DELETE
  (RFC 9110 §9.2.2); a caller passes
  ``idempotent=True`` for a request that is idempotent by its meaning (the
  worker's PATCH sets a reservation's status to a fixed value: sending it
  twice has the effect of sending it once) or ``False`` to forbid the retry.
  A fresh connection that fails is never retried.
* **Timeouts are the caller's**, except the connect (``connect_timeout_s``,
  TCP and TLS handshake together). Bound the whole call with
  ``trio.fail_after``: a cancelled exchange closes its connection (its state
  is unknown), the pool stays consistent.
* **Errors.** Whatever goes wrong with the exchange raises ``Http1Error``:
  connect failure or timeout, a reset or EOF, a malformed response, a body
  over ``max_body_bytes`` (1 MiB), a header that is not valid to send (a
  name that is not a token, a value with CR, LF or other controls). The
  connection is closed. A URL this client cannot send to (not http/https, no
  host, user info, a bad port, non-ASCII) and a Host, Content-Length or
  Transfer-Encoding header from the caller raise ``ValueError`` before any
  I/O. Using a closed client raises ``RuntimeError``.
* **Framing.** Host is added from the URL; Content-Length is sent with every
  body (and for an empty POST, PUT or PATCH); the target is the URL's path
  and query exactly as given (percent-encoding passed through; the fragment
  is dropped). HTTP/1.1 keep-alive is the default; a ``Connection: close``
  from either side ends the connection after the exchange. 1xx interim
  responses are skipped. The response's framing rules are in
  ``http1_framing``.

Not supported, on purpose: redirects (a 3xx is returned as it is), proxies,
HTTP/2, chunked or streaming request bodies, streaming response bodies,
cookies, authentication, compression, an idle timeout (a connection the
server closed is found out at its next use; see the retry).

Resource handling: the client owns its connections. ``aclose`` (or leaving
``async with``) closes the idle ones at once; one in use is closed when its
request ends. Safe to share between any number of tasks of one trio run.
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import trio

from paysim.adapters import socket_io
from paysim.adapters.http1_framing import (
    FramingError,
    Header,
    ResponseReader,
    asks_to_close,
    encode_request,
)

_RECEIVE_CHUNK = 65536
_MAX_HEAD_BYTES = 65536
_MAX_ORIGINS = 1024  # cached URL splits; the cache is reset when it grows past this
_DEFAULT_PORTS = {"http": 80, "https": 443}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_OURS = frozenset({"host", "content-length", "transfer-encoding"})
_OURS_RAW = frozenset(name.encode() for name in _OURS)
_OURS_ANY = _OURS | _OURS_RAW  # a str or bytes name (lower-case) the client sets itself
_CONNECTION = frozenset({"connection", b"connection"})
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")


class Http1Error(Exception):
    """The exchange failed: connect, reset or EOF, a malformed or too large response."""


class Http1ConnectError(Http1Error):
    """No connection: refused, unreachable, a failed TLS handshake, or the connect timed out."""


@dataclass(frozen=True, slots=True)
class Http1Response:
    """A complete response; header names are lower-case bytes."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


Origin = tuple[str, str, int, str]  # scheme, host, port, TLS server name ("" for http)


class _Stale(Exception):
    """A connection ended before the first byte of the response."""


class _Connection:
    __slots__ = ("fd", "received", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.fd = socket_io.socket_fd(stream)  # -1: through the stream (socket_io)
        self.received = False  # a byte of the current response arrived


@dataclass(frozen=True, slots=True)
class _Request:
    data: bytes  # head and body, as they go on the wire
    head: bool  # a HEAD request: its response has no body
    close: bool  # it asks for Connection: close


class _Pool:
    __slots__ = ("idle", "slots")

    def __init__(self, size: int) -> None:
        self.idle: list[_Connection] = []
        self.slots = trio.Semaphore(size)


@dataclass(frozen=True, slots=True)
class Pin:
    """How to address a host whose URL names it by a pre-resolved address.

    ``host_header`` is sent as Host; ``server_hostname`` is the TLS name to
    send and verify. None keeps what the URL says.
    """

    host_header: str | None = None
    server_hostname: str | None = None


class Http1Client:
    """Keep-alive HTTP/1.1 requests; see the module docstring."""

    def __init__(
        self,
        *,
        max_connections: int = 16,
        connect_timeout_s: float = 3.0,
        max_body_bytes: int = 1 << 20,
        headers: Sequence[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``headers`` go with every request (e.g. User-Agent); ``ssl_context`` for https
        (default: ``ssl.create_default_context()``, made at the first https connection)."""
        if max_connections < 1 or not connect_timeout_s > 0 or max_body_bytes < 0:
            raise ValueError("limits must be positive (max_body_bytes: not negative)")
        for name, _ in headers:
            if name.lower() in _OURS_ANY:
                _refuse(name)
        try:
            raw_headers = [_raw(name, value) for name, value in headers]
        except UnicodeEncodeError as exc:
            raise ValueError(f"headers must be ASCII: {exc}") from None
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._max_body_bytes = max_body_bytes
        self._headers = raw_headers
        self._close = asks_to_close(raw_headers)  # a Connection: close among them
        self._ssl_context = ssl_context
        self._pools: dict[Origin, _Pool] = {}
        self._origins: dict[tuple[str, str], tuple[Origin, str]] = {}
        self._closed = False

    async def __aenter__(self) -> Http1Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every idle connection; those in use close when their request ends."""
        self._closed = True
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            while pool.idle:
                await trio.aclose_forcefully(pool.idle.pop().stream)

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] | Sequence[tuple[bytes, bytes]] = (),
        idempotent: bool | None = None,
        pin: Pin | None = None,
    ) -> Http1Response:
        """Send one request and read the whole response (of any status).

        ``headers`` are str pairs, or bytes pairs as they go on the wire
        (latin-1: they are written as they are, with no encoding step).

        ``idempotent`` decides the keep-alive retry (None: by the method). No
        timeout but the connect's: bound the call with ``trio.fail_after``.
        ``pin`` is for a URL whose host is an address resolved beforehand: its
        ``host_header`` and ``server_hostname`` (the TLS name to send and verify)
        replace the URL's host in those roles; connections are pooled per TLS
        name too.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        origin, target, host_header_of_url = split_url(url, self._origins)
        host_header = host_header_of_url
        if pin is not None:
            if pin.host_header is not None:
                host_header = pin.host_header
            if pin.server_hostname is not None and origin[0] == "https":
                origin = (origin[0], origin[1], origin[2], pin.server_hostname)
        connection = False  # the caller sets a Connection header
        for name, _ in headers:
            lower = name.lower()
            if lower in _OURS_ANY:
                _refuse(name)
            connection = connection or lower in _CONNECTION
        try:
            all_headers: list[Header] = [(b"Host", host_header.encode("ascii")), *self._headers]
            all_headers += [  # bytes pairs as they are, str pairs encoded
                h if type(h[0]) is bytes and type(h[1]) is bytes else _raw(*h) for h in headers
            ]
            if body or method in _BODY_METHODS:
                all_headers.append((b"Content-Length", b"%d" % len(body)))
            event = _Request(
                encode_request(_method(method), target, all_headers, body),
                head=method == "HEAD",
                close=self._close or (connection and asks_to_close(all_headers)),
            )
        except (ValueError, UnicodeEncodeError) as exc:
            raise Http1Error(f"invalid request: {exc}") from None
        retry = idempotent if idempotent is not None else method in _IDEMPOTENT
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self._max_connections)
        try:
            # A free slot is taken without a checkpoint (the exchange has its
            # own): one trip through trio's scheduler less per request.
            pool.slots.acquire_nowait()
        except trio.WouldBlock:
            await pool.slots.acquire()
        try:
            conn = await self._checkout(pool)
            if conn is not None:
                try:
                    return await self._exchange(pool, conn, event)
                except _Stale:
                    if not retry:
                        raise Http1Error("the connection closed before the response") from None
            conn = await self._connect(origin)
            try:
                return await self._exchange(pool, conn, event)
            except _Stale:
                raise Http1Error("the connection closed before the response") from None
        finally:
            pool.slots.release()

    async def _checkout(self, pool: _Pool) -> _Connection | None:
        """The most recently used idle connection that still looks open, if any."""
        while pool.idle:
            conn = pool.idle.pop()
            if not socket_io.readable(conn.stream):
                return conn
            await trio.aclose_forcefully(conn.stream)  # closed by the server (or it babbles)
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port, tls_name = origin
        try:
            with trio.fail_after(self._connect_timeout_s):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl_context is None:
                        self._ssl_context = ssl.create_default_context()
                    tls = trio.SSLStream(
                        stream, self._ssl_context, server_hostname=tls_name, https_compatible=True
                    )
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(tls)
                        raise
                    stream = tls
        except trio.TooSlowError:
            raise Http1ConnectError(
                f"connect to {host}:{port}: no answer within {self._connect_timeout_s:g} s"
            ) from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise Http1ConnectError(f"connect to {host}:{port}: {_describe(exc)}") from exc
        return _Connection(stream)

    async def _exchange(self, pool: _Pool, conn: _Connection, event: _Request) -> Http1Response:
        """One request on ``conn``, which it returns to ``pool`` or closes.

        Raises ``_Stale`` when the connection ended before any response byte.
        """
        conn.received = False
        try:
            response, reusable = await self._send_and_read(conn, event)
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(conn.stream)
            if not conn.received:
                raise _Stale from exc
            raise Http1Error(f"connection lost: {_describe(exc)}") from exc
        except FramingError as exc:
            await trio.aclose_forcefully(conn.stream)
            raise Http1Error(f"bad response: {exc}") from None
        except BaseException:  # _Stale, Http1Error, cancelled: the state is unknown
            await trio.aclose_forcefully(conn.stream)
            raise
        if reusable and not event.close and not self._closed:
            pool.idle.append(conn)
        else:
            await trio.aclose_forcefully(conn.stream)
        return response

    async def _send_and_read(
        self, conn: _Connection, event: _Request
    ) -> tuple[Http1Response, bool]:
        """The response, and whether the connection may carry another request."""
        await socket_io.send(conn.stream, conn.fd, event.data)
        reader = ResponseReader(
            head_request=event.head, max_head=_MAX_HEAD_BYTES, max_body=self._max_body_bytes
        )
        while True:
            chunk = await socket_io.receive(conn.stream, conn.fd, _RECEIVE_CHUNK)
            if not chunk and not conn.received:
                raise _Stale
            conn.received = True
            if reader.feed(chunk):
                head = reader.head
                assert head is not None  # complete: the head was read
                return Http1Response(head.status, head.headers, reader.body), reader.reusable


def split_url(
    url: str, known: dict[tuple[str, str], tuple[Origin, str]]
) -> tuple[Origin, bytes, str]:
    """(origin, target, Host header) of ``url``, or ValueError; ``known`` caches origins."""
    match = _URL.match(url)
    if match is None:
        raise ValueError(f"not an absolute URL: {url!r}")
    scheme, authority, target = match.groups()
    key = (scheme, authority)
    origin = known.get(key)
    if origin is None:
        origin = _origin(scheme.lower(), authority)
        if len(known) >= _MAX_ORIGINS:
            known.clear()
        known[key] = origin
    if not target.startswith("/"):
        target = "/" + target  # "" or "?query"
    try:
        raw = target.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"the URL's path must be ASCII (percent-encoded): {url!r}") from None
    return origin[0], raw, origin[1]


def _origin(scheme: str, authority: str) -> tuple[Origin, str]:
    """The origin and the Host header of ``scheme://authority``; ValueError if unusable."""
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {scheme!r} (http and https only)")
    parts = urlsplit(f"{scheme}://{authority}")
    port = parts.port  # ValueError if not a valid port
    host = parts.hostname
    if not host or "@" in authority:
        raise ValueError(f"unsupported URL authority {authority!r} (a host, no user info)")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"the host must be ASCII (IDNA-encoded): {host!r}") from None
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    host_header = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header += f":{port}"
    return (scheme, host, port, host if scheme == "https" else ""), host_header


def _raw(name: str | bytes, value: str | bytes) -> Header:
    """A header as bytes (str must be ASCII: UnicodeEncodeError otherwise)."""
    return (
        name if isinstance(name, bytes) else name.encode("ascii"),
        value if isinstance(value, bytes) else value.encode("ascii"),
    )


@functools.lru_cache(maxsize=64)  # so each method is encoded once
def _method(method: str) -> bytes:
    return method.encode("ascii")


def _refuse(name: str | bytes) -> None:
    shown = name if isinstance(name, str) else name.decode("latin-1")
    raise ValueError(f"the client sets the {shown} header itself")


def _describe(exc: BaseException) -> str:
    """A short description; trio wraps OS and TLS errors (and every failed connect attempt)."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        exc = cause.exceptions[-1]  # the last address tried
    elif cause is not None and not str(exc):
        exc = cause
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
