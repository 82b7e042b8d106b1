"""One HTTP/2 connection of the gRPC server: its reader, its writer, its calls.

Theory of operation
-------------------
``Connection.run`` owns the socket. The reader takes bytes in
(``ServerConnection.receive_data``) and dispatches the events at once, without
blocking; the writer sends whatever h2 has queued in one write, so under load
many responses share a syscall. It writes to the socket directly
(``socket_io.send``: the stream only for what the kernel did not take), and
the reader wakes it only when a read left something to send: a unary call
costs the writer one task step. Every call gets one task in the
connection's nursery, inside its own ``CancelScope`` whose deadline is the
caller's ``grpc-timeout``. When ``run`` returns every call task has ended and
the socket is closed.

What a peer can make this connection hold or do is bounded (``GrpcLimits``);
the frame-level bounds live in ``h2_guard.py``, these here:

* calls: at most ``max_concurrent_streams`` call *tasks* (not h2 streams: a
  reset stream's handler still counts until it has ended) and at most
  ``max_stalled_calls`` calls waiting for the peer's flow-control window; a
  stream over either gets REFUSED_STREAM (clients retry those) and the
  connection goes on;
* request bytes: a message's bytes go back into the peer's window only when its
  handler takes it, so a connection buffers at most its window; a unary call
  fails with INVALID_ARGUMENT the moment a second message arrives, and with
  DEADLINE_EXCEEDED if its request has not ended ``request_timeout_s`` after
  its headers;
* response bytes: a message that cannot be written within ``write_timeout_s``
  (the peer keeps its window shut) resets its stream; a socket that accepts
  nothing for ``write_timeout_s`` ends the connection; while more than
  ``max_outbound_bytes`` wait to be sent (PING and SETTINGS ACKs included) the
  reader stops reading, so a peer that does not read cannot make us queue;
* time: the preface must arrive within ``handshake_timeout_s``; a connection
  with no call for ``idle_timeout_s`` gets GOAWAY and is closed, as is the
  longest idle one when the server is at ``max_connections`` and a new one
  arrives. These clocks and the write timeout are kept by one watchdog task of
  the server (``GrpcServer._watchdog`` calls ``check``), not by a timer per read
  or write: on the hot path a connection only notes when a write began;
* CPU: one read is at most ``read_size`` bytes, and the reader yields to the
  other connections after each.

Policy decisions, each a fix over purerpc 0.8.0's own server (what each call
does is in ``calls.py``):

* RST_STREAM from the client cancels that call; EOF or a broken socket cancels
  every call of the connection and closes the socket;
* a bad message (too large, badly compressed) fails only its own stream.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.exceptions
import structlog
import trio
from hyperframe.frame import GoAwayFrame
from purerpc.grpclib.events import MessageReceived, RequestEnded, RequestReceived, WindowUpdated
from purerpc.grpclib.status import Status, StatusCode

from paysim.adapters import socket_io
from paysim.entrypoints.grpc.calls import OK_TRAILERS, RESPONSE_HEADERS, Call, CallRunner
from paysim.entrypoints.grpc.protocol import (
    ConnectionLimits,
    ServerConnection,
    StreamFailed,
    StreamReset,
)

if TYPE_CHECKING:
    from paysim.entrypoints.grpc.transport import GrpcServer

log = structlog.get_logger("paysim.grpc")


class Connection(CallRunner):
    def __init__(self, server: GrpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self._fd = socket_io.socket_fd(stream)  # read and written directly (socket_io)
        limits = server.limits
        self.limits = limits
        bounds = ConnectionLimits(
            max_message_length=limits.max_message_bytes,
            max_concurrent_streams=limits.max_concurrent_streams,
            max_header_list_size=limits.max_header_list_size,
            connection_window=limits.connection_window,
            frames=limits.frames,
        )
        self.conn = ServerConnection(bounds, (RESPONSE_HEADERS, OK_TRAILERS))
        self.h2 = self.conn.h2_connection
        self.calls: dict[int, Call] = {}
        self._starting: list[Call] = []  # opened by the current read, not yet started
        self.stalled = 0  # calls waiting for the peer's flow-control window
        self._wake_writer = trio.Event()
        # Only the writer sends. ``_final_flush`` waits for it: ``_writing`` says
        # it is inside ``send_all``, ``_wrote`` (made on demand) is set after each
        # round, ``_writer_done`` once it has ended.
        self._writing = False
        self._wrote: trio.Event | None = None
        self._writer_done = False
        self._window = trio.Event()
        self._idle = trio.Event()
        now = trio.current_time()
        self.accepted_at = now
        self.idle_since = now
        # One scope for all reads: the server's watchdog cancels it (``check``).
        self._reading = trio.CancelScope()
        self._nursery_scope: trio.CancelScope | None = None
        self.write_since: float | None = None  # when the send in progress began
        self.evicted = False
        self.draining = False
        self.closed = False

    # -- writer ------------------------------------------------------------
    def flush(self) -> None:
        self._wake_writer.set()

    def _pending_bytes(self) -> int:
        return len(self.h2._data_to_send)

    async def _writer(self, scope: trio.CancelScope) -> None:
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer = trio.Event()
                data = self.h2.data_to_send()
                if data:
                    self._writing = True
                    # No timer per write: the server's watchdog reads write_since (``check``).
                    self.write_since = trio.current_time()
                    # Straight to the socket; the stream only for what the kernel did not take.
                    await socket_io.send(self.stream, self._fd, data)
                    self.write_since = None
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

    async def _wait_wrote(self) -> None:
        if self._wrote is None:
            self._wrote = trio.Event()
        await self._wrote.wait()

    def _peer_gone(self) -> None:
        for call in self.calls.values():
            call.peer_gone = True

    # -- lifetime ----------------------------------------------------------
    async def run(self) -> None:
        self.conn.initiate_connection()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery_scope = nursery.cancel_scope
                nursery.start_soon(self._writer, nursery.cancel_scope)
                self.flush()
                try:
                    await self._reader(nursery)
                finally:
                    # EOF, a broken socket, a protocol error or a timeout: nothing
                    # more can be answered, so every call of this connection ends now.
                    self._peer_gone()
                    nursery.cancel_scope.cancel()
        finally:
            self.closed = True
            self._idle.set()  # nothing left to wait for
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self.stream.aclose()

    def _read_deadline(self) -> float:
        limits = self.limits
        if self.evicted:
            return -math.inf
        if not self.conn.settings_received:
            return self.accepted_at + limits.handshake_timeout_s
        if not self.calls:
            return self.idle_since + limits.idle_timeout_s
        return math.inf

    async def _reader(self, nursery: trio.Nursery) -> None:
        # One scope around all reads (a scope is entered once): the watchdog cancels
        # it when the handshake or idle time is up, or the connection is evicted.
        with self._reading:
            flush = await self._read_until_done(nursery)
        if self._reading.cancelled_caught:
            await self._close_quietly()
        elif flush:
            await self._final_flush()

    async def _read_until_done(self, nursery: trio.Nursery) -> bool:
        """Read and dispatch until EOF (False) or a GOAWAY to send first (True)."""
        limits = self.limits
        while True:
            while self._pending_bytes() > limits.max_outbound_bytes and not self._writer_done:
                # The peer is not reading what we send: read nothing more until it does.
                self.flush()
                await self._wait_wrote()
            try:
                # Straight from the socket (socket_io), what is there first: a
                # client's frames often come in several segments.
                data = await socket_io.receive_eager(self.stream, self._fd, limits.read_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            if not data:
                return False
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                # h2 has queued a GOAWAY; send it, then close.
                log.info("grpc connection error", error=type(exc).__name__, reason=str(exc)[:200])
                return True
            starting = self._starting
            for ev in events:
                self._dispatch(ev)
            if starting:
                self._start_calls(nursery)
            if self.h2._data_to_send:
                # Only when this read left something to send (ACKs, refusals, resets):
                # most reads queue nothing, and waking the writer for nothing was
                # one task step in three of a unary call's.
                self.flush()
            if self.draining and not self.calls:
                return True

    async def _close_quietly(self) -> None:
        """Handshake or idle timeout, or eviction: GOAWAY(NO_ERROR) if we can, then close."""
        if self.conn.settings_received:
            self._goaway(h2.errors.ErrorCodes.NO_ERROR)
            await self._final_flush()

    def evict(self) -> None:
        """Close this idle connection to make room for a new one."""
        self.evicted = True
        self._reading.cancel()

    def check(self, now: float) -> float:
        """The server's watchdog: enforce this connection's clocks; when to look again.

        A send that has not finished ``write_timeout_s`` after it began means the
        peer stopped reading: the connection ends. A connection whose handshake or
        idle time is up stops reading, says GOAWAY and closes (``_reader``). With
        calls in flight there is no deadline, but a write may stall: look again
        after ``write_timeout_s``.
        """
        limits = self.limits
        since = self.write_since
        if since is not None:
            if now - since < limits.write_timeout_s:
                return since + limits.write_timeout_s
            log.info("grpc peer stopped reading; closing", seconds=limits.write_timeout_s)
            self._peer_gone()
            if self._nursery_scope is not None:
                self._nursery_scope.cancel()
            return math.inf
        deadline = self._read_deadline()
        if now >= deadline:
            self._reading.cancel()
            return math.inf
        return deadline if deadline < math.inf else now + limits.write_timeout_s

    async def _final_flush(self) -> None:
        """Wait (at most 1 s) until the writer has sent everything h2 has queued.

        The writer stays the only sender: sending from here as well raised
        BusyResourceError whenever the writer was waiting on a slow reader, and
        in ``GrpcServer.drain`` that crashed the whole shutdown.
        """
        with trio.move_on_after(1):
            while not self._writer_done and (self._writing or self.h2._data_to_send):
                self.flush()
                await self._wait_wrote()

    def _dispatch(self, ev: Any) -> None:
        kind = type(ev)
        if kind is MessageReceived:
            self._message(ev)
        elif kind is RequestReceived:
            self._new_call(ev)
        elif kind is RequestEnded:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.ended = True
                call.wake()
        elif kind is StreamFailed:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.fail(ev.status)
            else:
                self._finish_stream(
                    ev.stream_id,
                    ev.status,
                    headers_sent=False,
                    ended=False,
                    http_status=ev.http_status,
                )
                self.conn.forget(ev.stream_id)
        elif kind is StreamReset:
            call = self.calls.get(ev.stream_id)
            if call is not None:
                call.peer_gone = True
                call.scope.cancel()
        elif kind is WindowUpdated:
            self._window.set()
            self._window = trio.Event()

    def _message(self, ev: MessageReceived) -> None:
        sid = ev.stream_id
        call = self.calls.get(sid)
        if call is None:
            self.conn.acknowledge(sid, ev.flow_controlled_length)
            return
        if not call.method.request_stream and (call.messages or call.taken):
            # A unary call takes one message: a second one is an error now, not
            # after the peer has sent (and we have buffered) all it likes.
            self.conn.acknowledge(sid, ev.flow_controlled_length)
            self.conn.forget(sid)
            call.fail(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"{call.method.name} takes exactly one request message; a second one arrived",
                )
            )
            return
        call.messages.append((ev.data, ev.flow_controlled_length))
        call.wake()

    def _new_call(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        limits = self.limits
        if (
            self.draining
            or len(self.calls) >= limits.max_concurrent_streams
            or self.stalled >= limits.max_stalled_calls
        ):
            self.conn.forget(sid)
            self._reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        method = self.server.registry.get(ev.service_name, ev.method_name)
        if method is None:
            status = Status(
                StatusCode.UNIMPLEMENTED,
                f"method {ev.service_name[:100]}/{ev.method_name[:100]} is not implemented",
            )
            self._finish_stream(sid, status, headers_sent=False, ended=False)
            self.conn.forget(sid)
            return
        call = Call(sid, method, ev)
        self.calls[sid] = call
        self._starting.append(call)

    def _start_calls(self, nursery: trio.Nursery) -> None:
        """Start the calls this read opened, except those it also reset.

        A stream reset in the same read as its HEADERS (Rapid Reset's signature)
        costs no task and no log line: it is counted, answered, and forgotten.
        """
        metrics = self.server.metrics
        for call in self._starting:
            if not call.peer_gone:
                nursery.start_soon(self._run_call, call)
                continue
            method = call.method
            metrics.rpc_started(method.grpc_type, method.service, method.name)
            metrics.rpc_handled(method.grpc_type, method.service, method.name, "CANCELLED", 0.0)
            del self.calls[call.stream_id]
            self.conn.forget(call.stream_id)
        self._starting.clear()
        self._call_ended()

    # -- one call ----------------------------------------------------------

    def _call_ended(self) -> None:
        # The idle clock starts now; the server's watchdog reads it (``check``).
        if not self.calls:
            self.idle_since = now = trio.current_time()
            self.server.watch(now + self.limits.idle_timeout_s)
            if self.draining:
                self._idle.set()

    def _goaway(self, code: h2.errors.ErrorCodes) -> None:
        """Queue a GOAWAY by hand: h2 cannot send more after its own close."""
        frame = GoAwayFrame(stream_id=0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = code
        self.h2._data_to_send += frame.serialize()
        self.flush()

    def start_draining(self) -> None:
        """GOAWAY naming the last stream we serve; new streams get REFUSED_STREAM."""
        if self.draining:
            return
        self.draining = True
        self._goaway(h2.errors.ErrorCodes.NO_ERROR)
        if not self.calls:
            self._idle.set()

    def reset(self) -> None:
        """Chaos (``paysim.faults.connections``): end now with RST, calls in flight unanswered."""
        with contextlib.suppress(OSError):
            linger = struct.pack("ii", 1, 0)  # close() then sends RST, not FIN
            self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self._peer_gone()
        if self._nursery_scope is not None:
            self._nursery_scope.cancel()

    async def wait_idle(self) -> None:
        await self._idle.wait()
        await self._final_flush()
