"""botocore's HTTP exchange on paysim's HTTP/1.1 framing, for a client that asks for it.

Why (issue 18): a PutEvents call of 10 entries cost about 730 µs of CPU, on
the GIL, and about 40 % of that was urllib3 and http.client sending the
request and reading the answer (a pool lookup that parses the URL, one write
call per header, the answer's head parsed by the email package). At 2,000
payments/s that was 30 µs a payment. The same bytes sent with
``http1_framing`` on a kept-alive socket cost about 440 µs a call
(``python -m paysim.benchmarks.put_events``).

How: ``install(client)`` registers a ``LeanSender`` on the client's
``before-send`` event: botocore emits it with the prepared request
(serialized and signed) just before handing it to its own HTTP session; a
handler that returns an ``AWSResponse`` takes the place of that send, one that
returns None leaves it to botocore. What goes on the wire is what botocore
signed: its method, the URL's path and query, its headers and body, plus a
Host header as http.client makes it (the host, and the port unless it is the
scheme's default: what SigV4 signed) and a Content-Length if botocore set
none and there is a body.

It declines (returns None: urllib3 sends, as without it) what it does not do:
a body that is not bytes or str, an answer to be streamed (``stream_output``),
a request with ``Expect`` or ``Transfer-Encoding``, a URL ``Http1Client``
would refuse (``http1_client.split_url``: not http or https, user info, not
percent-encoded). ``install`` leaves alone a client that uses a proxy (its config,
or the environment's for its endpoint), a client certificate or TCP
keep-alive probes.

Connections: kept alive, at most ``max_idle`` idle per origin, the most
recently used taken first; an idle one whose socket is readable was closed by
the server (or sent something unasked) and is dropped, as urllib3 checks
before it reuses one. TCP_NODELAY is set, as urllib3 does. TLS: Python's
default client context (certificate and host name verified) with the CA
bundle botocore would use (the session's ``ca_bundle``, set by AWS_CA_BUNDLE or
the profile, else botocore's default), the URL's host as the server name.
Timeouts: the client's connect timeout, then its read timeout for the whole
answer (a request's own ``read_timeout``, botocore's per-request override,
wins). That is stricter than urllib3, whose read timeout bounds each wait
for bytes, so that a server dripping bytes could hold the thread for ever.
The answer is bounded: its head by 64 KiB, its body by ``MAX_BODY_BYTES``.

Errors, as botocore's own HTTP session raises them, so that callers classify
them the same: a failed connect or name lookup ``EndpointConnectionError``,
a connect timeout ``ConnectTimeoutError``, a read timeout
``ReadTimeoutError``, a TLS failure ``SSLError``; a reset, an early EOF or a
malformed or oversized answer ``ConnectionClosedError``; a header that cannot
be sent ``HTTPClientError``. The connection is closed after any of them. No
request is sent twice here: retries are botocore's policy (paysim's clients:
none) and the caller's.

Threads: botocore runs the hook in the calling thread (paysim's
``trio.to_thread`` workers). Idle sockets are taken from and given back to a
list (``pop`` and ``append`` are atomic), so one thread uses a socket at a
time. ``close`` closes the idle ones; it runs when the client is collected.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path
from botocore.utils import get_environ_proxies

if TYPE_CHECKING:
    from botocore.compat import HTTPHeaders

from paysim.adapters.http1_client import Origin, split_url
from paysim.adapters.http1_framing import (
    FramingError,
    Header,
    ResponseReader,
    asks_to_close,
    encode_request,
)

# An answer's body: PutEvents answers take about 100 bytes an entry; SQS's largest
# (10 messages of 256 KiB) fits too. urllib3 sets no bound at all.
MAX_BODY_BYTES = 16 << 20
_MAX_HEAD_BYTES = 65536
_RECEIVE_CHUNK = 65536
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Raw:
    """An ``AWSResponse.raw`` whose body is read already: what botocore reads of it."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._body


class LeanSender:
    """The ``before-send`` handler; see the module docstring."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_idle: int,
        cafile: str | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        """``cafile``: the CA bundle for https (None: botocore's default)."""
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_idle = max_idle
        self._cafile = cafile
        self._max_body = max_body
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[socket.socket]] = {}
        self._origins: dict[tuple[str, str], tuple[Origin, str]] = {}  # split_url's cache
        # Exchanges completed here, for tests and benchmarks (threads may race on it).
        self.sent = 0

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        body = request.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, bytearray):
            body = bytes(body)
        elif not isinstance(body, bytes):
            return None  # a file or a stream: urllib3's
        headers = request.headers
        if request.stream_output or "Expect" in headers or "Transfer-Encoding" in headers:
            return None
        url = request.url
        try:
            origin, path, host = split_url(url, self._origins)
        except ValueError:
            return None  # not http(s), user info, not percent-encoded: urllib3 decides
        try:
            lines = _lines(request.method, headers, host.encode("ascii"), body)
            data = encode_request(request.method.encode("ascii"), path, lines, body)
        except (ValueError, UnicodeEncodeError) as exc:
            raise HTTPClientError(error=exc) from None
        context = getattr(request, "context", None) or {}
        read_timeout = context.get("read_timeout") or self._read_timeout_s
        sock = self._take(origin)
        if sock is None:
            sock = self._connect(origin, url)
        try:
            deadline = time.monotonic() + read_timeout
            sock.settimeout(read_timeout)
            sock.sendall(data)
            reader = ResponseReader(
                head_request=request.method == "HEAD",
                max_head=_MAX_HEAD_BYTES,
                max_body=self._max_body,
            )
            _read_answer(sock, reader, deadline)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise ReadTimeoutError(endpoint_url=url, error=exc) from None
            if isinstance(exc, ssl.SSLError):
                raise SSLError(endpoint_url=url, error=exc) from None
            if isinstance(exc, OSError | FramingError):
                raise ConnectionClosedError(endpoint_url=url, error=exc, request=request) from None
            raise
        head = reader.head
        assert head is not None  # complete: the head was read
        if reader.reusable and not asks_to_close(lines):
            self._give_back(origin, sock)
        else:
            sock.close()
        self.sent += 1
        # AWSResponse copies any mapping into its HeadersDict (typed as urllib3's headers).
        headers = cast("HTTPHeaders", _joined(head.headers))
        return AWSResponse(url, head.status, headers, _Raw(reader.body))

    def close(self) -> None:
        """Close every idle connection (one in use closes when its exchange ends)."""
        idle, self._idle = self._idle, {}
        for socks in idle.values():
            while socks:
                socks.pop().close()

    def _take(self, origin: Origin) -> socket.socket | None:
        """The most recently used idle connection that still looks open, if any."""
        socks = self._idle.get(origin)
        while socks:
            try:
                sock = socks.pop()
            except IndexError:  # another thread took the last one
                return None
            if _still_open(sock):
                return sock
            sock.close()
        return None

    def _give_back(self, origin: Origin, sock: socket.socket) -> None:
        socks = self._idle.setdefault(origin, [])
        if len(socks) < self._max_idle:
            socks.append(sock)
        else:
            sock.close()

    def _connect(self, origin: Origin, url: str) -> socket.socket:
        scheme, host, port, tls_name = origin
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout_s)
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from None
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls().wrap_socket(sock, server_hostname=tls_name)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(endpoint_url=url, error=exc) from None
        except ssl.SSLError as exc:  # the certificate, the host name, the handshake
            sock.close()
            raise SSLError(endpoint_url=url, error=exc) from None
        except OSError as exc:
            sock.close()
            raise EndpointConnectionError(endpoint_url=url, error=exc) from None
        return sock

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._cafile or get_cert_path(True))
        return self._ssl


def install(client: Any, cafile: str | None = None) -> LeanSender | None:
    """Send ``client``'s requests with a ``LeanSender``; None if the client is one it leaves
    alone (a proxy, a client certificate, TCP keep-alive: see the module docstring).

    ``cafile``: the session's CA bundle (``ca_bundle``), None for botocore's default.
    """
    config = client.meta.config
    endpoint = client.meta.endpoint_url
    scheme = urlsplit(endpoint).scheme
    if config.proxies or get_environ_proxies(endpoint).get(scheme):
        return None
    if config.client_cert or config.tcp_keepalive:
        return None
    sender = LeanSender(
        connect_timeout_s=config.connect_timeout,
        read_timeout_s=config.read_timeout,
        max_idle=config.max_pool_connections,
        cafile=cafile,
    )
    client.meta.events.register("before-send", sender)
    weakref.finalize(client, sender.close)
    return sender


def _lines(method: str, headers: Any, host: bytes, body: bytes) -> list[Header]:
    """The request's header lines: Host first (unless botocore set one), then botocore's."""
    lines: list[Header] = [] if "Host" in headers else [(b"Host", host)]
    for name, value in headers.items():
        lines.append(
            (
                name.encode("ascii") if isinstance(name, str) else name,
                value.encode("latin-1") if isinstance(value, str) else value,
            )
        )
    if "Content-Length" not in headers and (body or method in _BODY_METHODS):
        lines.append((b"Content-Length", b"%d" % len(body)))
    return lines


def _read_answer(sock: socket.socket, reader: ResponseReader, deadline: float) -> None:
    """Feed ``reader`` until the answer is complete, all of it by ``deadline``: a server
    that drips bytes does not hold the thread past the read timeout."""
    while not reader.feed(sock.recv(_RECEIVE_CHUNK)):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete answer within the read timeout")
        sock.settimeout(left)


def _joined(headers: tuple[Header, ...]) -> dict[str, str]:
    """The answer's headers as botocore gets them from urllib3: repeated names joined."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _still_open(sock: socket.socket) -> bool:
    """An idle connection with nothing to read (a readable one was closed or babbles)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)
