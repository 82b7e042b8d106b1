"""One gRPC call on a connection: its task, its messages in, its answer out.

``CallRunner`` is the call half of ``connection.Connection`` (a mixin: the
connection owns the socket, h2 and the dict of calls; this half runs each one).
A call's task runs the handler inside the call's ``CancelScope`` (the caller's
``grpc-timeout``), takes request messages (acknowledging their bytes to the
peer's window only then), writes the answer within ``write_timeout_s`` of the
peer's flow control, and ends the stream with the status, whatever happened:

* an unexpected handler exception ends the call with INTERNAL and a generic
  message; the traceback goes to the log, never to the client;
* at ``grpc-timeout`` the handler is cancelled: DEADLINE_EXCEEDED;
* a unary request that has not ended ``request_timeout_s`` after its headers:
  DEADLINE_EXCEEDED; with other than one message: INVALID_ARGUMENT;
* an answer the peer will not take (its window shut) for ``write_timeout_s``:
  RST_STREAM(CANCEL); while more than ``max_stalled_calls`` wait so, the
  connection refuses new streams;
* a call whose answer is sent before the client finished sending gets
  RST_STREAM(NO_ERROR), so late DATA frames cannot become connection errors;
* chaos (``paysim.faults``, only with a fault policy): an answer the policy
  wraps in a ``SlowDrip`` is written ``chunk_bytes`` at a time with
  ``interval_s`` between chunks, each chunk its own DATA frame flushed on its
  own, within the same flow control and write timeout as any answer (the
  pauses are not counted against the timeout). Only this call's task sleeps:
  the connection's other streams go on. The deadline or a RST_STREAM cancels
  it mid-answer like any call.
"""

from __future__ import annotations

import collections
import math
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.exceptions
import structlog
import trio
from purerpc.grpclib.events import RequestReceived
from purerpc.grpclib.status import Status, StatusCode

from paysim.entrypoints.grpc.errors import INTERNAL_MESSAGE, status_for
from paysim.entrypoints.grpc.protocol import ACCEPT_ENCODING, ServerConnection
from paysim.entrypoints.grpc.reflection import QUIET_SERVICES
from paysim.faults.policy import InjectedFault, SlowDrip
from paysim.observability.logging import Trusted

if TYPE_CHECKING:
    from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Method

log = structlog.get_logger("paysim.grpc")
# Each code's name, read once: an enum member's ``.name`` is a property lookup per
# call. Trusted: the log line does not scrub it (see observability.logging).
CODE_NAMES = {code: Trusted(code.name) for code in StatusCode}


# Reflection and health chatter: a client that closes its reflection stream
# (grpcurl, after every call) ends it CANCELLED; neither is news at info.
_QUIET_CODES = (StatusCode.OK, StatusCode.CANCELLED)


def _log_rpc(grpc_method: Trusted, status: Status, elapsed: float, service: str) -> None:
    """The call's one "rpc" line: info (debug for reflection that succeeded or that
    its client closed); a failed call's line carries the message its client got
    (generic for INTERNAL).

    Costs counted (one line per call): the fields go as keywords, not through a
    dict and ``**``, and ``log.bind()`` is what ``log.info`` would call first
    (through the lazy proxy's ``__getattr__``, 0.6 us more)."""
    code = status.status_code
    logger = log.bind()
    emit = logger.debug if service in QUIET_SERVICES and code in _QUIET_CODES else logger.info
    ms = round(elapsed * 1000, 3)
    if code is StatusCode.OK or not status.status_message:
        emit("rpc", grpc_method=grpc_method, grpc_code=CODE_NAMES[code], ms=ms)
    else:
        message = status.status_message
        emit(
            "rpc", grpc_method=grpc_method, grpc_code=CODE_NAMES[code], grpc_message=message, ms=ms
        )


RESPONSE_HEADERS = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-accept-encoding", ACCEPT_ENCODING),
]
OK_TRAILERS = [("grpc-status", "0")]


class _CallFailed(Exception):
    def __init__(self, status: Status) -> None:
        super().__init__(status.status_message)
        self.status = status


class Call:
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
        "taken",
    )

    def __init__(self, stream_id: int, method: Method, event: RequestReceived) -> None:
        self.stream_id = stream_id
        self.method = method
        self.event = event
        self.messages: collections.deque[tuple[bytes, int]] = collections.deque()
        self.arrived = trio.Event()
        self.ended = False
        self.taken = 0  # messages the handler has taken
        self.failure: Status | None = None
        self.peer_gone = False
        self.response_started = False
        deadline = (
            trio.current_time() + event.timeout.total_seconds()
            if event.timeout is not None
            else math.inf
        )
        self.scope = trio.CancelScope(deadline=deadline)

    def wake(self) -> None:
        self.arrived.set()

    def fail(self, status: Status) -> None:
        if self.failure is None:
            self.failure = status
        self.wake()


class CallRunner:
    """The call half of a connection (see the module docstring)."""

    server: GrpcServer
    limits: GrpcLimits
    conn: ServerConnection
    h2: Any
    calls: dict[int, Call]
    stalled: int
    _window: trio.Event

    def flush(self) -> None:
        raise NotImplementedError

    def _call_ended(self) -> None:
        raise NotImplementedError

    async def _run_call(self, call: Call) -> None:
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
            for _, length in call.messages:
                self.conn.acknowledge(call.stream_id, length)
            self.conn.forget(call.stream_id)
            elapsed = time.perf_counter() - started
            code = CODE_NAMES[status.status_code]
            metrics.rpc_handled(method.grpc_type, method.service, method.name, code, elapsed)
            _log_rpc(method.full_name, status, elapsed, method.service)
            self._call_ended()

    async def _invoke(self, call: Call) -> Status | None:
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
                faults = self.server.faults
                if faults is None:
                    response = await method.fn(request, request=call.event)
                else:
                    response = await faults.around(
                        method.service, method.name, method.fn, request, call.event
                    )
                    if type(response) is SlowDrip:
                        await self._drip(call, response)
                        return Status(StatusCode.OK)
                payload = response.SerializeToString()
                if not call.peer_gone:
                    await self._send_message(call, payload)
                return Status(StatusCode.OK)
        except _CallFailed as exc:
            return exc.status
        except InjectedFault as exc:
            return self._injected(call, exc)
        except Exception as exc:
            status = status_for(exc)
            if status is None:
                log.exception(
                    "rpc handler failed",
                    grpc_method=method.full_name,
                )
                status = Status(StatusCode.INTERNAL, INTERNAL_MESSAGE)
            return status
        return None  # the call's scope was cancelled: deadline or RST_STREAM

    def _injected(self, call: Call, fault: InjectedFault) -> Status:
        """A fault the policy injected (paysim.faults): its status, or a reset stream."""
        if fault.reset:
            self._reset(call.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
            call.peer_gone = True
            return Status(StatusCode.UNAVAILABLE, fault.message)
        code = StatusCode[fault.code.upper()]
        if fault.retry_after_s > 0:
            return _StatusWithTrailers(code, fault.message, _pushback(fault.retry_after_s))
        return Status(code, fault.message)

    async def _single_message(self, call: Call) -> Any:
        timeout = self.limits.request_timeout_s
        if not call.ended and call.failure is None:
            # Most requests end in the read that opened them: no timer for those.
            with trio.move_on_after(timeout):
                while not call.ended and call.failure is None:
                    await call.arrived.wait()
                    call.arrived = trio.Event()
        if call.failure is not None:
            raise _CallFailed(call.failure)
        if not call.ended:
            raise _CallFailed(
                Status(
                    StatusCode.DEADLINE_EXCEEDED,
                    f"the request did not end within {timeout:g} s of its headers",
                )
            )
        if len(call.messages) != 1:
            raise _CallFailed(
                Status(
                    StatusCode.INVALID_ARGUMENT,
                    f"expected exactly one request message, got {len(call.messages)}",
                )
            )
        return self._take(call)

    def _take(self, call: Call) -> Any:
        data, length = call.messages.popleft()
        call.taken += 1
        self.conn.acknowledge(call.stream_id, length)
        if self.h2._data_to_send:  # a WINDOW_UPDATE (now and then): wake the writer for it
            self.flush()
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

    async def _message_iter(self, call: Call) -> AsyncIterator[Any]:
        while True:
            while call.messages:
                yield self._take(call)
            if call.failure is not None:
                raise _CallFailed(call.failure)
            if call.ended:
                return
            await call.arrived.wait()
            call.arrived = trio.Event()

    async def _stream_response(self, call: Call) -> Status:
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

    async def _drip(self, call: Call, drip: SlowDrip) -> None:
        """Chaos: send the answer slowly (module docstring); the policy hears how it went."""
        if call.peer_gone:
            drip.cut_short()
            return
        try:
            await self._send_message(call, drip.response.SerializeToString(), drip)
        except BaseException:
            drip.cut_short()
            raise
        drip.delivered()

    async def _send_message(self, call: Call, payload: bytes, drip: SlowDrip | None = None) -> None:
        sid = call.stream_id
        if len(payload) > self.limits.max_message_bytes:
            raise _CallFailed(
                Status(StatusCode.RESOURCE_EXHAUSTED, "response larger than the message limit")
            )
        h2c = self.h2
        data = b"\x00" + len(payload).to_bytes(4, "big") + payload
        give_up = trio.current_time() + self.limits.write_timeout_s
        try:
            if not call.response_started:
                h2c.send_headers(sid, RESPONSE_HEADERS)
                call.response_started = True
            while data:
                window = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
                if window <= 0:
                    self.flush()
                    await self._wait_window(call, give_up)
                    continue
                if drip is not None:
                    window = min(window, drip.chunk_bytes)
                h2c.send_data(sid, data[:window])
                data = data[window:]
                if drip is not None and data:
                    self.flush()
                    await trio.sleep(drip.interval_s)
                    give_up = trio.current_time() + self.limits.write_timeout_s
        except h2.exceptions.H2Error:
            call.peer_gone = True
            raise _CallFailed(Status(StatusCode.CANCELLED, "stream closed")) from None
        self.flush()

    async def _wait_window(self, call: Call, give_up: float) -> None:
        self.stalled += 1
        try:
            with trio.move_on_at(give_up):
                await self._window.wait()
                return
        finally:
            self.stalled -= 1
        # The peer kept its window shut: stop holding this answer for it.
        self._reset(call.stream_id, h2.errors.ErrorCodes.CANCEL)
        call.peer_gone = True
        raise _CallFailed(Status(StatusCode.CANCELLED, "the client did not read the response"))

    def _finish_stream(
        self,
        sid: int,
        status: Status,
        *,
        headers_sent: bool,
        ended: bool,
        http_status: int = 200,
    ) -> None:
        trailers = OK_TRAILERS if status.status_code is StatusCode.OK else trailers_for(status)
        if not headers_sent:
            head = RESPONSE_HEADERS if http_status == 200 else _headers_with(http_status)
            trailers = [*head, *trailers]
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


def trailers_for(status: Status) -> list[tuple[str, str]]:
    out = [("grpc-status", str(status.int_value))]
    if status.status_message:
        out.append(("grpc-message", urllib.parse.quote(status.status_message, safe=" ")))
    if isinstance(status, _StatusWithTrailers):
        out.extend(status.trailers)
    return out


class _StatusWithTrailers(Status):  # type: ignore[misc]
    def __init__(self, code: StatusCode, message: str, trailers: list[tuple[str, str]]) -> None:
        super().__init__(code, message)
        self.trailers = trailers


def _pushback(seconds: float) -> list[tuple[str, str]]:
    """Retry-after as gRPC clients read it (gRFC A6 pushback) and as people read it."""
    return [
        ("grpc-retry-pushback-ms", str(round(seconds * 1000))),
        ("retry-after", str(max(1, round(seconds)))),
    ]


def _headers_with(http_status: int) -> list[tuple[str, str]]:
    return [(":status", str(http_status)), *RESPONSE_HEADERS[1:]]
