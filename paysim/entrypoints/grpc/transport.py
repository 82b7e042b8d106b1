"""The gRPC server: our own trio listener driving a bounded gRPC/HTTP/2 layer.

Theory of operation
-------------------
``GrpcServer.serve`` binds its listeners (SO_REUSEPORT only when asked, for
``paysim serve --workers``; otherwise a second process on the same port fails
loudly with EADDRINUSE), then runs one ``Connection`` task per TCP connection
(``connection.py``: reader, writer, one task per call, and every bound a peer
meets). A connection that fails for any reason is logged and closed; it never
takes the server down. At ``max_connections`` a new connection closes the one
that has been idle longest (GOAWAY, no call lost); if none is idle, the new
one is closed.

Draining (``GrpcServer.drain``): listeners close, every connection gets a
GOAWAY naming the last stream it will serve, new streams are refused with
REFUSED_STREAM (clients retry those elsewhere), and each connection closes once
its in-flight calls are done. The caller bounds all of it with a deadline.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import structlog
import trio
from purerpc import Servicer
from purerpc.rpc import Cardinality

from paysim.config import GrpcSettings
from paysim.entrypoints.grpc.connection import Connection
from paysim.entrypoints.grpc.h2_guard import FrameLimits
from paysim.entrypoints.listeners import open_listeners
from paysim.faults.policy import FaultPolicy
from paysim.observability.logging import Trusted
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.grpc")

_GRPC_TYPE = {
    Cardinality.UNARY_UNARY: "unary",
    Cardinality.UNARY_STREAM: "server_stream",
    Cardinality.STREAM_UNARY: "client_stream",
    Cardinality.STREAM_STREAM: "bidi_stream",
}


@dataclass(frozen=True)
class GrpcLimits:
    """Everything a peer can make the server hold or do, bounded (see connection.py)."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 256
    max_connections: int = 10_000
    max_header_list_size: int = 16_384
    # The peer's connection-level window: what one connection may have buffered.
    # None: room for two largest messages.
    connection_window: int | None = None
    max_stalled_calls: int = 100
    max_outbound_bytes: int = 1024 * 1024
    handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    request_timeout_s: float = 30.0
    write_timeout_s: float = 30.0
    read_size: int = 64 * 1024
    frames: FrameLimits = field(default_factory=FrameLimits)

    @classmethod
    def from_settings(cls, grpc: GrpcSettings) -> GrpcLimits:
        return cls(
            max_message_bytes=grpc.max_message_bytes,
            max_concurrent_streams=grpc.max_concurrent_streams,
            max_connections=grpc.max_connections,
            idle_timeout_s=grpc.idle_timeout_s,
            write_timeout_s=grpc.write_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    fn: Callable[..., Any]
    cardinality: Cardinality
    request_type: Any
    grpc_type: str
    # "service/name" for the call's log line, made once: a registered name, not the
    # peer's :path, so the log does not scrub it.
    full_name: Trusted = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full_name", Trusted(f"{self.service}/{self.name}"))

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


class GrpcServer:
    """Owns the listeners and the connections; ``serve`` never returns."""

    def __init__(
        self,
        registry: Registry,
        limits: GrpcLimits,
        metrics: Metrics,
        faults: FaultPolicy | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.metrics = metrics
        # API-side chaos (paysim.faults): None when off, and then nothing is decided.
        self.faults = faults
        self.connections: set[Connection] = set()
        self._listeners: list[trio.SocketListener] = []
        self._accepting = trio.CancelScope()
        self._stopped_accepting = trio.Event()
        self._poke = trio.Event()
        self._next_look = math.inf

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
            nursery.start_soon(self._watchdog)
            if self.faults is not None:
                nursery.start_soon(self.faults.storm_connections, self)
            task_status.started(bound_port)
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    def watch(self, deadline: float) -> None:
        """A connection has a new deadline: wake the watchdog if it comes before its next look."""
        if deadline < self._next_look:
            self._poke.set()

    async def _watchdog(self) -> NoReturn:
        """Every connection's clocks (handshake, idle, write) in one task.

        It sleeps until the earliest deadline of any connection, or until poked
        by one with an earlier deadline: no timer per read, write or call, and no
        ticking while nothing can expire (a virtual clock in a test stays still).
        """
        while True:
            now = trio.current_time()
            next_look = math.inf
            for connection in list(self.connections):
                next_look = min(next_look, connection.check(now))
            self._next_look = next_look
            with trio.move_on_at(next_look):
                await self._poke.wait()
            self._poke = trio.Event()

    async def _accept_loop(self, nursery: trio.Nursery) -> None:
        with self._accepting:
            await trio.serve_listeners(self._handle, self._listeners, handler_nursery=nursery)

    def _make_room(self) -> bool:
        """At ``max_connections``: evict the longest-idle connection, if there is one."""
        busy = sum(1 for c in self.connections if not c.evicted)
        if busy < self.limits.max_connections:
            return True
        idle = [c for c in self.connections if not c.calls and not c.evicted]
        if not idle:
            return False
        min(idle, key=lambda c: c.idle_since).evict()
        return True

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._stopped_accepting.is_set() or not self._make_room():
            await stream.aclose()
            return
        sock = stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        connection = Connection(self, stream)
        self.watch(connection.accepted_at + self.limits.handshake_timeout_s)
        self.connections.add(connection)
        try:
            await connection.run()
        except Exception:
            # A bug in one connection must not take the server down with it.
            log.exception("grpc connection failed")
        finally:
            self.connections.discard(connection)

    # -- connection-level chaos (paysim.faults.connections.Connections) ------------------
    def goaway_all(self) -> int:
        """GOAWAY to every connection: each finishes its calls, refuses new streams
        (the caller retries them elsewhere) and closes when the peer or its idle
        timeout does. Closing an idle one at once could discard a request already
        sent and unread: the peer would see a reset, not a GOAWAY."""
        live = [c for c in self.connections if not c.closed and not c.draining]
        for connection in live:
            connection.start_draining()
        return len(live)

    def _busy(self) -> list[Connection]:
        busy = [c for c in self.connections if c.calls and not c.closed]
        return sorted(busy, key=lambda c: c.accepted_at)

    def busy_connections(self) -> int:
        return len(self._busy())

    def reset_busy(self, index: int) -> bool:
        busy = self._busy()
        if not 0 <= index < len(busy):
            return False
        busy[index].reset()
        return True

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
