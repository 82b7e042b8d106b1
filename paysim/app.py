"""The composition root: ``run`` builds the process and serves until shutdown.

Read ``run`` top to bottom: each lifetime is one ``async with`` block
(``paysim.wiring``), nested in the order the parts must outlive each other::

    resources (webhook HTTP client, EventBridge client)
      store (with Redis: its batch sender, readiness following it)
        outbox and its channels (webhook dispatcher, event publisher)
          simulator (one timer task per pending payment)
            upkeep (retention sweeper; sharing a store, the lease loop)
              servers (gRPC, HTTP)  <- the drain runs here

So the structure, not the order of calls, guarantees that nothing calls into
a part that is closed: the servers stop before the simulator, the simulator
before the outbox it announces into, the outbox before the store. Nothing
opens at import.

Shutdown (SIGTERM/SIGINT, or ``shutdown`` set by a test) is ``paysim.drain``:
not ready, DRAIN_DELAY_MS, then a grace window of SHUTDOWN_GRACE_MS for the
calls in flight, the pending payments and the outbox; what is left is logged
and counted. Then every block closes in turn and ``run`` returns (exit 0). A
second signal cancels everything at once (``process.watch_signals``; exit
status 128 + signal), and the report is still written.

A store outage (Redis unreachable) is weather, not a reason to exit: calls
answer UNAVAILABLE (``StoreUnavailable``, mapped at the store's edge), the
process turns not ready until the store answers again, and every loop that
needs the store backs off and tries again (``backoff``): the batch sender,
the lease loop (``replica``), the retention sweeper (``upkeep``) and each
payment's timer. Nothing escapes to a nursery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from paysim import __version__, process, wiring
from paysim.config import Settings
from paysim.drain import drain, report_left_behind
from paysim.entrypoints.http import HttpApp
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.ports import Notifier
from paysim.replica import Replica
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import Simulator

log = structlog.get_logger("paysim.app")


@dataclass(frozen=True)
class Running:
    """What ``run`` reports through ``task_status`` once it serves."""

    grpc_port: int
    http_port: int
    service: PaymentService
    simulator: Simulator
    readiness: Readiness
    metrics: Metrics


async def run(
    settings: Settings,
    *,
    shutdown: trio.Event | None = None,
    notifier: Notifier | None = None,
    events_client: Any = None,
    on_serving: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shutdown is requested, then drain and return.

    Without ``shutdown`` the process's signals begin the shutdown; with it (a
    test, or a host process) setting it does, and signals are left alone.
    ``notifier`` replaces every delivery channel (tests that only record the
    changes); ``events_client`` is the boto3 EventBridge client to use instead
    of one built from the environment. ``on_serving`` is called once both
    ports listen.
    """
    metrics, readiness = Metrics(), Readiness()
    http_app = HttpApp(readiness, metrics)
    with trio.CancelScope() as force:
        async with trio.open_nursery() as signals:
            if shutdown is None:
                shutdown = trio.Event()
                signals.start_soon(process.watch_signals, shutdown, force)
            async with (
                wiring.open_resources(settings, events_client, events=notifier is None) as res,
                wiring.open_console(settings, metrics) as console,
                wiring.open_store(settings, readiness) as (store, shared),
                wiring.open_outbox(
                    settings,
                    res,
                    metrics,
                    shared,
                    surfaces := wiring.Surfaces(http_app, console),
                    notifier,
                ) as outbox,
                wiring.open_api_chaos(settings, metrics, surfaces, outbox, store) as faults,
                wiring.open_simulator(settings.simulation, metrics) as simulator,
            ):
                service = PaymentService(
                    ServiceParts(
                        store=wiring.observed(store, console),
                        simulator=simulator,
                        notifier=outbox,
                        metrics=metrics,
                    ),
                    settings.simulation,
                )
                replica = None
                if shared is not None:
                    interval_s = settings.store.takeover_interval_s
                    replica = Replica(shared, service, outbox, interval_s)
                wired = wiring.Wired(settings, readiness, metrics, outbox, simulator, replica)
                registry = wiring.build_registry(settings, service, readiness, res.webhook_policy)
                wiring.add_console_routes(surfaces, service, res.webhook_policy)
                async with (
                    wiring.open_upkeep(settings, service, replica),
                    wiring.open_servers(settings, registry, http_app, metrics, faults) as servers,
                ):
                    readiness.mark_serving()
                    if on_serving is not None:
                        on_serving()
                    log.info(
                        "paysim serving",
                        version=__version__,
                        grpc_port=servers.grpc_port,
                        http_port=servers.http_port,
                        environment=settings.environment.value,
                    )
                    task_status.started(
                        Running(
                            servers.grpc_port,
                            servers.http_port,
                            service,
                            simulator,
                            readiness,
                            metrics,
                        )
                    )
                    try:
                        await shutdown.wait()
                        await drain(wired, servers.grpc)
                    finally:
                        # Also after a second signal: the report is synchronous.
                        report_left_behind(wired)
            signals.cancel_scope.cancel()
    log.info("stopped")
