"""The application: the one root nursery, its wiring, signals and shutdown.

``run`` opens every long-lived resource inside its own lifetime and nothing at
import. The root nursery holds the gRPC server, the HTTP endpoint and the
signal watcher; the simulator nursery (one timer task per pending payment) is
opened here too and handed to ``Simulator``: no other code opens a nursery
that outlives a request.

Shutdown (SIGTERM/SIGINT, or ``shutdown`` set by a test): readiness turns off at
once, the gRPC server stops accepting and sends GOAWAY, in-flight RPCs get
SHUTDOWN_GRACE_MS to finish, then the root nursery is cancelled and ``run``
returns. A second signal cancels everything immediately.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from grpc_health.v1 import health_pb2

from paysim import __version__, process
from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.adapters.aws import make_client
from paysim.adapters.eventbridge import EventPublisher
from paysim.adapters.fanout_notifier import FanoutNotifier
from paysim.adapters.http1_client import Http1Client
from paysim.adapters.httpx_h11 import CookielessClient, H11Transport
from paysim.adapters.memory_store import MemoryStore
from paysim.config import Settings
from paysim.entrypoints.grpc.health import HealthServicer
from paysim.entrypoints.grpc.payment_api import PaymentApi
from paysim.entrypoints.grpc.reflection import ReflectionServicer
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.entrypoints.http import HttpApp, HttpLimits, serve_http
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.ports import Notifier, PaymentStore
from paysim.service import PaymentService
from paysim.simulator import Simulator
from paysim.webhooks.dispatcher import WebhookDispatcher
from paysim.webhooks.ssrf import SsrfPolicy

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


def build_registry(service: PaymentService, readiness: Readiness, settings: Settings) -> Registry:
    registry = Registry()
    registry.add(
        PaymentApi(
            service,
            settings.payment_url_base + "/{payment_intent_id}",
            SsrfPolicy.from_settings(settings.webhook),
        )
    )
    payment_services = list(registry.services)
    registry.add(HealthServicer(readiness, payment_services))
    for servicer in ReflectionServicer.both(
        [*payment_services, "grpc.health.v1.Health"],
        [payment_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR],
    ):
        registry.add(servicer)
    return registry


async def run(
    settings: Settings,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    store: PaymentStore | None = None,
    notifier: Notifier | None = None,
    events_client: Any = None,
    metrics: Metrics | None = None,
    rng: random.Random | None = None,
    on_serving: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shutdown is requested, then drain and return.

    ``notifier`` replaces the whole delivery chain (webhooks and events), for
    tests that only want to record changes; ``events_client`` is the boto3
    EventBridge client to use instead of one built from the environment.
    """
    shutdown = shutdown if shutdown is not None else trio.Event()
    metrics = metrics if metrics is not None else Metrics()
    readiness = Readiness()
    force = trio.CancelScope()
    # Long-lived resources open before the root nursery and close after it, so
    # nothing that runs inside can outlive them.
    async with CookielessClient(
        transport=H11Transport(
            Http1Client(
                max_connections=settings.webhook.concurrency * 2,
                connect_timeout_s=settings.webhook.timeout_s,
            )
        ),
        follow_redirects=False,
        trust_env=False,
    ) as http_client:
        if notifier is None and settings.events.enabled and events_client is None:
            events_client = await trio.to_thread.run_sync(
                functools.partial(
                    make_client,
                    "events",
                    settings.aws,
                    read_timeout_s=settings.events.call_timeout_s,
                    max_pool_connections=settings.events.concurrency,
                )
            )
        with force:
            async with trio.open_nursery() as root:
                if handle_signals:
                    root.start_soon(process.watch_signals, shutdown, force)
                http_app = HttpApp(readiness, metrics)
                flushers: list[Callable[[], Awaitable[None]]] = []
                if notifier is None:
                    dispatcher = WebhookDispatcher(settings.webhook, http_client, metrics)
                    await root.start(dispatcher.run)
                    http_app.add_route(
                        "/debug/deliveries", frozenset({"GET"}), dispatcher.journal.handle
                    )
                    notifiers: list[Notifier] = [dispatcher]
                    flushers.append(dispatcher.wait_idle)
                    if settings.events.enabled:
                        publisher = EventPublisher(
                            settings.events, settings.aws, metrics, events_client
                        )
                        await root.start(publisher.run)
                        notifiers.append(publisher)
                        flushers.append(publisher.flush)
                    notifier = FanoutNotifier(notifiers)
                await _serve(
                    settings,
                    root,
                    http_app,
                    readiness,
                    metrics,
                    store if store is not None else MemoryStore(),
                    notifier,
                    rng,
                    shutdown,
                    flushers,
                    on_serving,
                    task_status,
                )
                root.cancel_scope.cancel()
    log.info("stopped")


async def _serve(
    settings: Settings,
    root: trio.Nursery,
    http_app: HttpApp,
    readiness: Readiness,
    metrics: Metrics,
    store: PaymentStore,
    notifier: Notifier,
    rng: random.Random | None,
    shutdown: trio.Event,
    flushers: list[Callable[[], Awaitable[None]]],
    on_serving: Callable[[], None] | None,
    task_status: trio.TaskStatus[Running],
) -> None:
    """The serving lifetime: the simulator nursery, both servers, the drain."""
    async with trio.open_nursery() as simulator_nursery:
        simulator = Simulator(
            simulator_nursery, settings.simulation.max_pending_payments, metrics.pending_changed
        )
        service = PaymentService(
            store=store,
            simulator=simulator,
            notifier=notifier,
            metrics=metrics,
            settings=settings.simulation,
            rng=rng,
        )
        grpc = GrpcServer(
            build_registry(service, readiness, settings),
            GrpcLimits(
                max_message_bytes=settings.grpc.max_message_bytes,
                max_concurrent_streams=settings.grpc.max_concurrent_streams,
                max_connections=settings.grpc.max_connections,
            ),
            metrics,
        )
        http = settings.http
        grpc_port = await root.start(grpc.serve, settings.grpc.host, settings.grpc.port)
        http_port = await root.start(
            serve_http,
            http.host,
            http.port,
            http_app,
            HttpLimits(
                max_header_bytes=http.max_header_bytes,
                max_body_bytes=http.max_body_bytes,
                request_timeout_s=http.request_timeout_s,
                max_connections=http.max_connections,
            ),
        )
        readiness.mark_serving()
        if on_serving is not None:
            on_serving()
        log.info(
            "paysim serving",
            version=__version__,
            grpc_port=grpc_port,
            http_port=http_port,
            environment=settings.environment.value,
        )
        task_status.started(Running(grpc_port, http_port, service, simulator, readiness, metrics))
        await shutdown.wait()
        readiness.mark_draining()
        log.info("shutting down", grace_s=settings.shutdown_grace_s)
        with trio.move_on_after(settings.shutdown_grace_s) as grace:
            await grpc.drain()
            simulator_nursery.cancel_scope.cancel()
            for flush in flushers:
                await flush()
        if grace.cancelled_caught:
            log.warning("grace period over; cancelling in-flight work")
        simulator_nursery.cancel_scope.cancel()
