"""The gRPC server: our own trio listener driving purerpc's protocol layer.

Theory of operation
-------------------
``GrpcServer.serve`` binds its listeners (SO_REUSEPORT only when asked, for
``paysim serve --workers``; otherwise a second process on the same port fails
loudly with EADDRINUSE), then runs one
``_Connection`` task per TCP connection. A connection has a reader (bytes in,
``ServerConnection.receive_data``, events dispatched at once without blocking)
and a writer (whatever h2 has queued goes out in one ``send_all``, so under load
many responses share a syscall). Every call gets one task in the connection's
nursery, inside its own ``CancelScope`` whose deadline is the caller's
``grpc-timeout``.

Policy decisions, each a fix over purerpc 0.8.0's own server:

* an unexpected handler exception ends the call with INTERNAL and a generic
  message; the traceback goes to the log, never to the client;
* the caller's deadline is enforced: at ``grpc-timeout`` the handler is
  cancelled and the call ends with DEADLINE_EXCEEDED;
* RST_STREAM from the client cancels that call; EOF or a broken socket cancels
  every call of the connection and closes the socket (no task or CLOSE-WAIT
  socket is left behind);
* a bad message (too large, badly compressed) fails only its own stream;
* a call whose answer is sent before the client finished sending gets
  RST_STREAM(NO_ERROR), so late DATA frames cannot become connection errors.

Draining (``GrpcServer.drain``): listeners close, every connection gets a
GOAWAY naming the last stream it will serve, new streams are refused with
REFUSED_STREAM (clients retry those elsewhere), and each connection closes once
its in-flight calls are done. The caller bounds all of it with a deadline.
"""

from __future__ import annotations

import collections
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import h2.errors
import h2.exceptions
import structlog
import trio
from hyperframe.frame import GoAwayFrame
from purerpc import Servicer
from purerpc.grpclib.events import MessageReceived, RequestEnded, RequestReceived, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode
from purerpc.rpc import Cardinality

from paysim.entrypoints.grpc.errors import INTERNAL_MESSAGE, status_for
from paysim.entrypoints.grpc.protocol import (
    ACCEPT_ENCODING,
    ServerConnection,
    StreamFailed,
    StreamReset,
)
from paysim.entrypoints.listeners import open_listeners
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.grpc")

_GRPC_TYPE = {
    Cardinality.UNARY_UNARY: "unary",
    Cardinality.UNARY_STREAM: "server_stream",
    Cardinality.STREAM_UNARY: "client_stream",
    Cardinality.STREAM_STREAM: "bidi_stream",
}
_RESPONSE_HEADERS = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-accept-encoding", ACCEPT_ENCODING),
]
_OK_TRAILERS = [("grpc-status", "0")]
_RECEIVE_SIZE = 256 * 1024


@dataclass(frozen=True)
class GrpcLimits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 1_000
    max_connections: int = 10_000


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    fn: Callable[..., Any]
    cardinality: Cardinality
    request_type: Any
    grpc_type: str

    @property
    def request_stream(self) -> bool:
        return self.cardinality in (Cardinality.STREAM_UNARY, Cardinality.STREAM_STREAM)

    @property
    def response_stream(self) -> bool:
        return self.cardinality in (Cardinality.UNARY_STREAM, Cardinality.STREAM_STREAM)


class Registry:
    """The methods the server answers, taken from purerpc servicers."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], Method] = {}
        self.services: list[str] = []

    def add(self, servicer: Servicer) -> None:
        service = servicer.service
        self.services.append(service.name)
        for name, bound in service.methods.items():
            sig = bound.signature
            self._methods[(service.name, name)] = Method(
                service=service.name,
                name=name,
                fn=bound.method_fn,
                cardinality=sig.cardinality,
                request_type=sig.request_type,
                grpc_type=_GRPC_TYPE[sig.cardinality],
            )

    def get(self, service: str, name: str) -> Method | None:
        return self._methods.get((service, name))


class _CallFailed(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.status_message)
        self.status = status


class _Call:
    """One in-flight RPC: its inbound messages, its cancel scope, its fate."""

    __slots__ = (
        "arrived",
        "ended",
        "event",
        "failure",
        "messages",
        "method",
        "peer_gone",
        "response_started",
        "scope",
        "stream_id",
    )

    def __init__(self, stream_id: int, method: Method, event: RequestReceived) -> None:
        self.stream_id = stream_id
        self.method = method
        self.event = event
        self.messages: collections.deque[tuple[bytes, int]] = collections.deque()
        self.arrived = trio.Event()
        self.ended = False
        self.failure: Status | None = None
        self.peer_gone = False
        self.response_started = False
        deadline = (
            trio.current_time() + event.timeout.total_seconds()
            if event.timeout is not None
            else float("inf")
        )
        self.scope = trio.CancelScope(deadline=deadline)

    def wake(self) -> None:
        self.arrived.set()


class _Connection:
    def __init__(self, server: GrpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.conn = ServerConnection(
            server.limits.max_message_bytes,
            server.limits.max_concurrent_streams,
            (_RESPONSE_HEADERS, _OK_TRAILERS),
        )
        self.h2 = self.conn.h2_connection
        self.calls: dict[int, _Call] = {}
        self._wake_writer = trio.Event()
        # Only the writer sends. ``_final_flush`` waits for it: ``_writing`` says
        # it is inside ``send_all``, ``_wrote`` (made on demand) is set after each
        # round, ``_writer_done`` once it has ended.
        self._writing = False
        self._wrote: trio.Event | None = None
        self._writer_done = False
        self._window = trio.Event()
        self._idle = trio.Event()
        self.draining = False
        self.closed = False

    # -- writer ------------------------------------------------------------
    def flush(self) -> None:
        self._wake_writer.set()

    async def _writer(self, scope: trio.CancelScope) -> None:
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer = trio.Event()
                data = self.h2.data_to_send()
                if data:
                    self._writing = True
                    await self.stream.send_all(data)
                    self._writing = False
                self._signal_wrote()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The peer is gone: nothing can be answered any more.
            self._peer_gone()
            scope.cancel()
        finally:
            self._writer_done = True
            self._signal_wrote()

    def _signal_wrote(self) -> None:
        if self._wrote is not None:
            self._wrote.set()
            self._wrote = None

    def _peer_gone(self) -> None:
        for call in self.calls.values():
            call.peer_gone = True

    # -- lifetime ----------------------------------------------------------
    async def run(self) -> None:
        self.conn.initiate_connection()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                self.flush()
                try:
                    await self._reader(nursery)
                finally:
                    # EOF, a broken socket or a protocol error: nothing more can be
                    # answered, so every call of this connection ends now.
                    self._peer_gone()
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self._idle.set()  # nothing left to wait for
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                data = await self.stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # h2 has queued a GOAWAY; send it, then close.
                await self._final_flush()
                return
            for ev in events:
                self._dispatch(ev, nursery)
            self.flush()
            if self.draining and not self.calls:
                await self._final_flush()
                return

    async def _final_flush(self) -> None:
        """Wait (at most 1 s) until the writer has sent everything h2 has queued.

        The writer stays the only sender: sending from here as well raised
        BusyResourceError whenever the writer was waiting on a slow reader, and
        in ``GrpcServer.drain`` that crashed the whole shutdown.
        """
        with trio.move_on_after(1):
            while not self._writer_done and (self._writing or self.h2._data_to_send):
                self.flush()
                if self._wrote is None:
                    self._wrote = trio.Event()
                await self._wrote.wait()

    def _dispatch(self, ev: Any, nursery: trio.Nursery) -> None:
        kind = type(ev)
        if kind is MessageReceived:
            call = self.calls.get(ev.stream_id)
            if call is None:
                self.conn.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)
                return
            if not call.method.request_stream:
                self.conn.acknowledge_received_data(ev.stream_id, ev.flow_controlled_length)
            call.messages.append((ev.data, ev.flow_controlled_length))
            call.wake()
        elif kind is RequestReceived:
            self._start_call(ev, nursery)
        elif kind is RequestEnded:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.ended = True
                call.wake()
        elif kind is StreamFailed:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.failure = ev.status
                call.wake()
            else:
                self._finish_stream(ev.stream_id, ev.status, headers_sent=False, ended=False)
        elif kind is StreamReset:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.peer_gone = True
                call.scope.cancel()
        elif kind is WindowUpdated:
            self._window.set()
            self._window = trio.Event()

    def _start_call(self, ev: RequestReceived, nursery: trio.Nursery) -> None:
        sid = ev.stream_id
        if self.draining:
            self._reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        method = self.server.registry.get(ev.service_name, ev.method_name)
        if method is None:
            status = Status(
                StatusCode.UNIMPLEMENTED,
                f"method {ev.service_name}/{ev.method_name} is not implemented",
            )
            self._finish_stream(sid, status, headers_sent=False, ended=False)
            return
        call = _Call(sid, method, ev)
        self.calls[sid] = call
        nursery.start_soon(self._run_call, call)

    # -- one call ----------------------------------------------------------
    async def _run_call(self, call: _Call) -> None:
        method = call.method
        metrics = self.server.metrics
        metrics.rpc_started(method.grpc_type, method.service, method.name)
        started = time.perf_counter()
        status: Status | None = None
        try:
            status = await self._invoke(call)
        finally:
            # Runs on every exit, also when the connection's nursery is cancelled
            # (client gone, shutdown): only synchronous bookkeeping here.
            if status is None:
                status = (
                    Status(StatusCode.CANCELLED, "cancelled by the client")
                    if call.peer_gone or not call.scope.cancelled_caught
                    else Status(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
                )
            if not call.peer_gone:
                self._finish_stream(
                    call.stream_id, status, headers_sent=call.response_started, ended=call.ended
                )
            del self.calls[call.stream_id]
            self.conn.forget(call.stream_id)
            elapsed = time.perf_counter() - started
            code = status.status_code.name
            metrics.rpc_handled(method.grpc_type, method.service, method.name, code, elapsed)
            log.info(
                "rpc",
                grpc_method=f"{method.service}/{method.name}",
                grpc_code=code,
                ms=round(elapsed * 1000, 3),
            )
            if self.draining and not self.calls:
                self._idle.set()

    async def _invoke(self, call: _Call) -> Status | None:
        """Run the handler; None when the call's own scope cancelled it."""
        method = call.method
        try:
            with call.scope:
                if method.response_stream:
                    return await self._stream_response(call)
                request: Any = (
                    self._message_iter(call)
                    if method.request_stream
                    else await self._single_message(call)
                )
                response = await method.fn(request, request=call.event)
                payload = response.SerializeToString()
                if not call.peer_gone:
                    await self._send_message(call, payload)
                return Status(StatusCode.OK)
        except _CallFailed as exc:
            return exc.status
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                log.exception(
                    "rpc handler failed",
                    grpc_method=f"{method.service}/{method.name}",
                )
                status = Status(StatusCode.INTERNAL, INTERNAL_MESSAGE)
            return status
        return None  # the call's scope was cancelled: deadline or RST_STREAM

    async def _single_message(self, call: _Call) -> Any:
        while not call.ended and call.failure is None:
            await call.arrived.wait()
            call.arrived = trio.Event()
        if call.failure is not None:
            raise _CallFailed(call.failure)
        if len(call.messages) != 1:
            raise _CallFailed(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"expected exactly one request message, got {len(call.messages)}",
                )
            )
        return self._parse(call, call.messages[0][0])

    def _parse(self, call: _Call, data: bytes) -> Any:
        request_type = call.method.request_type
        try:
            return request_type.FromString(data)
        except Exception:
            raise _CallFailed(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid {request_type.DESCRIPTOR.full_name} message",
                )
            ) from None

    async def _message_iter(self, call: _Call) -> AsyncIterator[Any]:
        while True:
            while call.messages:
                data, length = call.messages.popleft()
                self.conn.acknowledge_received_data(call.stream_id, length)
                self.flush()
                yield self._parse(call, data)
            if call.failure is not None:
                raise _CallFailed(call.failure)
            if call.ended:
                return
            await call.arrived.wait()
            call.arrived = trio.Event()

    async def _stream_response(self, call: _Call) -> Status:
        method = call.method
        request = (
            self._message_iter(call) if method.request_stream else await self._single_message(call)
        )
        responses = method.fn(request, request=call.event)
        try:
            async for response in responses:
                await self._send_message(call, response.SerializeToString())
        finally:
            await responses.aclose()
        return Status(StatusCode.OK)

    async def _send_message(self, call: _Call, payload: bytes) -> None:
        sid = call.stream_id
        if len(payload) > self.server.limits.max_message_bytes:
            raise _CallFailed(
                Status(StatusCode.RESOURCE_EXHAUSTED, "response larger than the message limit")
            )
        h2c = self.h2
        data = b"\x00" + len(payload).to_bytes(4, "big") + payload
        try:
            if not call.response_started:
                h2c.send_headers(sid, _RESPONSE_HEADERS)
                call.response_started = True
            while data:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    self.flush()
                    await self._window.wait()
                    continue
                h2c.send_data(sid, data[:window])
                data = data[window:]
        except h2.exceptions.H2Error:
            call.peer_gone = True
            raise _CallFailed(Status(StatusCode.CANCELLED, "stream closed")) from None
        self.flush()

    def _finish_stream(self, sid: int, status: Status, *, headers_sent: bool, ended: bool) -> None:
        trailers = _OK_TRAILERS if status.status_code is StatusCode.OK else _trailers(status)
        if not headers_sent:
            trailers = [*_RESPONSE_HEADERS, *trailers]
        try:
            self.h2.send_headers(sid, trailers, end_stream=True)
            if not ended:
                # The client is still sending: tell it to stop, cleanly.
                self.h2.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.H2Error:
            pass
        self.flush()

    def _reset(self, sid: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(sid, code)
        except h2.exceptions.H2Error:
            pass
        self.flush()

    # -- draining ----------------------------------------------------------
    def start_draining(self) -> None:
        """Send GOAWAY (written by hand: h2 cannot send more after its own close)."""
        if self.draining:
            return
        self.draining = True
        frame = GoAwayFrame(stream_id=0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = 0
        self.h2._data_to_send += frame.serialize()
        self.flush()
        if not self.calls:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
        await self._final_flush()


def _trailers(status: Status) -> list[tuple[str, str]]:
    out = [("grpc-status", str(status.int_value))]
    if status.status_message:
        out.append(("grpc-message", urllib.parse.quote(status.status_message, safe=" ")))
    return out


class GrpcServer:
    """Owns the listeners and the connections; ``serve`` never returns."""

    def __init__(self, registry: Registry, limits: GrpcLimits, metrics: Metrics) -> None:
        self.registry = registry
        self.limits = limits
        self.metrics = metrics
        self.connections: set[_Connection] = set()
        self._listeners: list[trio.SocketListener] = []
        self._accepting = trio.CancelScope()
        self._stopped_accepting = trio.Event()

    async def serve(
        self,
        host: str | None,
        port: int,
        *,
        reuse_port: bool = False,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Listen on ``host:port`` and serve forever; ``task_status.started(port)``.

        ``reuse_port`` binds with SO_REUSEPORT, so that the workers of
        ``paysim serve --workers`` share the port (``listeners.open_listeners``).
        """
        self._listeners = await open_listeners(host, port, reuse_port=reuse_port)
        bound_port = self._listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._accept_loop, nursery)
            task_status.started(bound_port)
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        with self._accepting:
            await trio.serve_listeners(self._handle, self._listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if len(self.connections) >= self.limits.max_connections or self._stopped_accepting.is_set():
            await stream.aclose()
            return
        sock = stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            await connection.run()
        except Exception:
            # A bug in one connection must not take the server down with it.
            log.exception("grpc connection failed")
        finally:
            self.connections.discard(connection)

    async def drain(self) -> None:
        """Stop accepting, GOAWAY every connection, wait for in-flight calls to end.

        Unbounded on its own: the caller puts it under a deadline.
        """
        self._stopped_accepting.set()
        self._accepting.cancel()
        for listener in self._listeners:
            await listener.aclose()
        connections = list(self.connections)
        for connection in connections:
            connection.start_draining()
        async with trio.open_nursery() as nursery:
            for connection in connections:
                nursery.start_soon(connection.wait_idle)


ServeFn = Callable[..., Awaitable[NoReturn]]
