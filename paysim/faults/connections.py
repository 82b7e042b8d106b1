"""Connection-level faults: GOAWAY storms and resets of connections with calls in flight.

``CHAOS_API_GOAWAY_EVERY_MS``: every so often, GOAWAY(NO_ERROR) to every
connection: each finishes the calls it has, refuses new streams (a caller
retries them on a new connection) and closes when the peer or its idle
timeout does, so callers must reconnect.
``CHAOS_API_RESET_EVERY_MS``: every so often, one connection with calls in
flight (chosen with the fault policy's seeded draw, oldest first) is reset:
its socket closes with RST and every call on it ends unanswered, work done or
not. Each is counted in ``paysim_api_faults_total{kind="goaway"|"reset",
rpc="*"}``.

The gRPC server (``paysim.entrypoints.grpc.transport``) runs ``storm`` beside
its watchdog when the policy asks for it; it sees the server only through the
``Connections`` protocol, so this package imports no entrypoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

import structlog
import trio

from paysim.faults.metrics import FaultMetrics

log = structlog.get_logger("paysim.faults")


@dataclass(frozen=True)
class ConnectionFaults:
    goaway_every_s: float = 0.0  # 0: no GOAWAY storm
    reset_every_s: float = 0.0  # 0: no resets

    @property
    def empty(self) -> bool:
        return self.goaway_every_s <= 0 and self.reset_every_s <= 0


class Connections(Protocol):
    def goaway_all(self) -> int:
        """GOAWAY to every connection; how many."""
        ...

    def busy_connections(self) -> int:
        """How many connections have calls in flight."""
        ...

    def reset_busy(self, index: int) -> bool:
        """Reset the ``index``-th busy connection (oldest first); whether one was."""
        ...


async def storm(
    faults: ConnectionFaults, server: Connections, rng: random.Random, metrics: FaultMetrics
) -> None:
    """Play ``faults`` against ``server`` until cancelled."""
    async with trio.open_nursery() as nursery:
        if faults.goaway_every_s > 0:
            nursery.start_soon(_goaways, faults.goaway_every_s, server, metrics)
        if faults.reset_every_s > 0:
            nursery.start_soon(_resets, faults.reset_every_s, server, rng, metrics)


async def _goaways(every_s: float, server: Connections, metrics: FaultMetrics) -> None:
    while True:
        await trio.sleep(every_s)
        sent = server.goaway_all()
        for _ in range(sent):
            metrics.injected("goaway", "*", "NO_ERROR")
        if sent:
            log.info("fault goaway storm", connections=sent)


async def _resets(
    every_s: float, server: Connections, rng: random.Random, metrics: FaultMetrics
) -> None:
    while True:
        await trio.sleep(every_s)
        busy = server.busy_connections()
        if busy and server.reset_busy(rng.randrange(busy)):
            metrics.injected("reset", "*", "UNAVAILABLE")
            log.info("fault connection reset")
