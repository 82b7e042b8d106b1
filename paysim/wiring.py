"""The lifetimes ``app.run`` nests, one ``open_*`` each, and what the wiring built.

Each ``open_*`` is an async context manager that builds one part, runs its
tasks (if it has any) in a nursery of its own, and cancels them when its block
ends. ``app.run`` nests them in the order they must outlive each other::

    open_resources   the HTTP client for webhooks, the EventBridge client
    open_store       the store; with Redis its batch sender and readiness
    open_console     the console's memory and live overview (if it is served)
    open_outbox      the outbox and its channels (webhooks, events, the console)
    open_api_chaos   with CHAOS_API_*: the fault policy, its timeline player,
                     the reconciliation ledger (one more outbox channel)
    open_simulator   the simulator nursery: one timer task per pending payment
    open_upkeep      the retention sweeper and, sharing a store, the lease loop
    open_servers     the gRPC server and the HTTP endpoint

So a part only ever calls into parts whose blocks enclose its own: a server
never calls into a closed simulator, a timer never announces into a closed
outbox. ``Wired`` is what the drain needs of it all.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
import trio
from grpc_health.v1 import health_pb2

from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.adapters.aws import ClientTuning, make_client
from paysim.adapters.http1_client import Http1Client
from paysim.adapters.httpx_transport import CookielessClient, Http1Transport
from paysim.adapters.memory_store import MemoryStore
from paysim.adapters.redis_store import open_redis_store
from paysim.config import Environment, Settings, SimulationSettings
from paysim.console.actions import Actions
from paysim.console.api import Console
from paysim.console.auth import Guard
from paysim.console.hub import Hub
from paysim.console.observed import ObservedStore, WebhookGate
from paysim.console.overview import Overview
from paysim.console.recorder import Recorder
from paysim.console.routes import add_console
from paysim.delivery.event_publisher import (
    NO_CREDENTIALS_HINT,
    EventPublisher,
    PublisherSeams,
    has_aws_credentials,
)
from paysim.delivery.journal import DeliveryJournal
from paysim.delivery.ssrf import SsrfPolicy
from paysim.delivery.target import SendableCheck
from paysim.delivery.webhook_dispatcher import DispatcherSeams, WebhookDispatcher
from paysim.entrypoints.fault_routes import FaultRoutes
from paysim.entrypoints.grpc.health import HealthServicer
from paysim.entrypoints.grpc.payment_api import PaymentApi
from paysim.entrypoints.grpc.reflection import ReflectionServicer
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.entrypoints.http import HttpApp, HttpLimits, serve_http
from paysim.entrypoints.journal_route import add_journal_route
from paysim.faults.control import FaultControl
from paysim.faults.ledger import Ledger, register_ledger_gauges
from paysim.faults.metrics import FaultMetrics
from paysim.faults.policy import FaultPolicy
from paysim.faults.timeline import TimelinePlayer, load_timeline
from paysim.faults.worker_check import WorkerCheck
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.outbox import Channel, Outbox
from paysim.ports import Notifier, PaymentStore, SharedStore
from paysim.replica import Replica
from paysim.service import PaymentService
from paysim.simulator import Simulator
from paysim.upkeep import run_sweeper

log = structlog.get_logger("paysim.wiring")


@dataclass(frozen=True)
class Wired:
    """What the composition root built that the drain and its report use."""

    settings: Settings
    readiness: Readiness
    metrics: Metrics
    outbox: Outbox
    simulator: Simulator
    replica: Replica | None  # with a shared store


@dataclass(frozen=True)
class Resources:
    http_client: CookielessClient  # webhooks go out through it
    events_client: Any  # a boto3 ``events`` client, or None without an event bus
    webhook_policy: SsrfPolicy  # where webhooks may go: checked at the edge and when sent


@dataclass(frozen=True)
class Surfaces:
    """Where the outbox's channels show themselves: the HTTP endpoint, the console."""

    http_app: HttpApp
    console: Console | None = None
    # The webhook dispatcher's journal, once the outbox has one (its listeners
    # hear of every delivery that ended: the reconciliation ledger is one).
    journals: list[DeliveryJournal] = field(default_factory=list)
    # The webhook dispatcher, once the outbox has one (the fault policy lags it).
    dispatchers: list[WebhookDispatcher] = field(default_factory=list)


@dataclass(frozen=True)
class Servers:
    grpc: GrpcServer
    grpc_port: int
    http_port: int


@asynccontextmanager
async def open_resources(
    settings: Settings, events_client: Any, *, events: bool
) -> AsyncIterator[Resources]:
    """The webhook HTTP client (closed after), and the EventBridge client if ``events``.

    ``events_client`` is used instead of one built from the environment.
    """
    async with CookielessClient(
        transport=Http1Transport(
            Http1Client(
                max_connections=settings.webhook.concurrency * 2,
                connect_timeout_s=settings.webhook.timeout_s,
            )
        ),
        follow_redirects=False,
        trust_env=False,
    ) as http_client:
        if events and settings.events.enabled and events_client is None:
            if not await _events_can_be_signed(settings):
                yield Resources(http_client, None, SsrfPolicy.from_settings(settings.webhook))
                return
            events_client = await trio.to_thread.run_sync(
                functools.partial(
                    make_client,
                    "events",
                    settings.aws,
                    tuning=ClientTuning(
                        read_timeout_s=settings.events.call_timeout_s,
                        max_pool_connections=settings.events.concurrency,
                        lean_http=True,
                    ),
                )
            )
        yield Resources(http_client, events_client, SsrfPolicy.from_settings(settings.webhook))


async def _events_can_be_signed(settings: Settings) -> bool:
    """False (events off, said once) in development when boto3 finds no AWS
    credentials: every PutEvents would fail and be retried until shutdown.
    Elsewhere an operator fixes credentials in place: said once, events stay on."""
    if await trio.to_thread.run_sync(has_aws_credentials, settings.aws):
        return True
    if settings.environment is Environment.DEVELOPMENT:
        log.warning("events off: no AWS credentials found", hint=NO_CREDENTIALS_HINT)
        return False
    log.error("no AWS credentials found: events cannot be published", hint=NO_CREDENTIALS_HINT)
    return True


@asynccontextmanager
async def open_store(
    settings: Settings, readiness: Readiness
) -> AsyncIterator[tuple[PaymentStore, SharedStore | None]]:
    """The store, and the same store as a ``SharedStore`` if replicas share it.

    A shared store's calls are sent by its ``run`` task, and readiness follows
    whether it answers; both end with the block, then its pool closes.
    """
    if not settings.store.shared:
        yield MemoryStore(settings.simulation.retention_s), None
        return
    opened = open_redis_store(
        settings.store,
        retention_s=settings.simulation.retention_s,
        time_scale=settings.simulation.time_scale,
    )
    async with opened as store, trio.open_nursery() as nursery:
        await nursery.start(store.run)
        nursery.start_soon(_follow_store, store, readiness)
        yield store, store
        nursery.cancel_scope.cancel()


async def _follow_store(store: SharedStore, readiness: Readiness) -> None:
    """Readiness follows the store: not ready while it is unreachable."""
    async for available in store.available.eventual_values():
        readiness.mark_store(available)


@asynccontextmanager
async def open_outbox(
    settings: Settings,
    resources: Resources,
    metrics: Metrics,
    shared: SharedStore | None,
    surfaces: Surfaces,
    notifier: Notifier | None,
) -> AsyncIterator[Outbox]:
    """The outbox with its channels: the console's recorder, webhooks, and events if enabled.

    ``notifier`` (tests) replaces every channel but the console's, and nothing
    is tracked for the store. The channels' tasks end with the block.
    """
    console = surfaces.console
    if notifier is not None:
        outbox = Outbox([Channel("recording", notifier)])
        if console is not None:
            outbox.add(Channel("console", console.recorder))
        yield outbox
        return
    outbox = Outbox(forget=shared.outbox_done if shared is not None else None)
    if console is not None:
        console.recorder.report_done(outbox.channel_done)
        outbox.add(Channel("console", console.recorder))
    if shared is not None:
        shared.track_deliveries(outbox.delivering)
    async with trio.open_nursery() as nursery:
        dispatcher = WebhookDispatcher(
            settings.webhook,
            resources.http_client,
            metrics,
            time_scale=settings.simulation.time_scale,
            on_done=outbox.channel_done,
            seams=DispatcherSeams(policy=resources.webhook_policy),
        )
        await nursery.start(dispatcher.run)
        add_journal_route(surfaces.http_app, dispatcher.journal)
        surfaces.journals.append(dispatcher.journal)
        surfaces.dispatchers.append(dispatcher)
        webhooks: Notifier = dispatcher
        if console is not None:
            webhooks = console.gate = WebhookGate(dispatcher, console.recorder, outbox.channel_done)
            console.journal = dispatcher.journal
        outbox.add(
            Channel("webhook", webhooks, dispatcher.wait_idle, dispatcher.pending_payment_ids)
        )
        if settings.events.enabled and resources.events_client is not None:
            publisher = EventPublisher(
                settings.events,
                settings.aws,
                metrics,
                resources.events_client,
                on_done=outbox.channel_done,
                # An in-memory client (paysim.testing's) brings ``run_blocking``
                # to be called inline: a MockClock jumps while a thread runs.
                seams=PublisherSeams(
                    run_blocking=getattr(resources.events_client, "run_blocking", None)
                ),
            )
            await nursery.start(publisher.run)
            outbox.add(Channel("event", publisher, publisher.flush, publisher.pending_payment_ids))
        yield outbox
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_console(settings: Settings, metrics: Metrics) -> AsyncIterator[Console | None]:
    """The console's memory, hub and live overview (None when it is not served here).

    Off in production unless CONSOLE_TOKEN is set (``ConsoleSettings.served``).
    The overview's sampler ends with the block.
    """
    production = settings.environment is Environment.PRODUCTION
    if not settings.console.served(production=production):
        yield None
        return
    hub = Hub()
    recorder = Recorder(hub, settings.simulation.clock)
    console = Console(
        settings.console,
        Guard(settings.console.token, read_only=settings.console.read_only),
        hub,
        recorder,
        Overview(recorder, metrics.registry, hub),
        journal=None,
        gate=None,
        events_enabled=settings.events.enabled,
        max_delay_s=settings.simulation.max_delay_s,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(console.overview.run)
        yield console
        nursery.cancel_scope.cancel()


def observed(store: PaymentStore, console: Console | None) -> PaymentStore:
    """The store the service uses: told to the console, if there is one."""
    return store if console is None else ObservedStore(store, console.recorder)


def add_console_routes(surfaces: Surfaces, service: PaymentService, policy: SsrfPolicy) -> None:
    """Serve the console (if there is one) on the HTTP endpoint, acting through ``service``."""
    console = surfaces.console
    if console is not None:
        console.service = service
        add_console(surfaces.http_app, console, Actions(console, service, SendableCheck(policy)))


@asynccontextmanager
async def open_api_chaos(
    settings: Settings, metrics: Metrics, surfaces: Surfaces, outbox: Outbox, store: PaymentStore
) -> AsyncIterator[FaultPolicy | None]:
    """The fault policy for the gRPC edge, or None (and nothing at all) when chaos is off.

    On: the reconciliation ledger joins the outbox as a channel, the routes
    ``/admin/faults`` and ``/reconciliation`` are added (and the console's
    reconciliation view reads the same report, its faults view changes the
    faults through the same ``FaultControl``), the webhook dispatcher asks the
    policy how long to lag each delivery, and the timeline player runs
    (playing CHAOS_TIMELINE from the start) until the block ends. With
    RECONCILIATION_WORKER_URL, an HTTP client (closed after) reads the
    worker's record for the report and the gauges (``WorkerCheck``), which
    looks payments up in ``store``.
    """
    chaos = settings.api_chaos
    if not chaos.active:
        yield None
        return
    fault_metrics = FaultMetrics(metrics.registry)
    ledger = Ledger(outbox.channel_done, completions=chaos.worker.url is not None)
    outbox.add(Channel("reconciliation", ledger))
    policy = FaultPolicy(chaos.plan, chaos.seed, fault_metrics, ledger, chaos.connections)
    player = TimelinePlayer(policy, fault_metrics)
    for journal in surfaces.journals:
        journal.on_finished(
            lambda pid, last: ledger.webhook_ended(pid, last.event_id, last.outcome)
        )
    for dispatcher in surfaces.dispatchers:
        dispatcher.lag_with(policy.webhook_lag)
    register_ledger_gauges(fault_metrics, ledger)
    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        check = None
        if chaos.worker.url is not None:
            client = await stack.enter_async_context(
                httpx.AsyncClient(trust_env=False, follow_redirects=False)
            )
            check = WorkerCheck(chaos.worker, ledger, client, store)
            check.register(metrics.registry)
            nursery.start_soon(check.run)
        control = FaultControl(policy, player)
        routes = FaultRoutes(control, check)
        routes.add_to(surfaces.http_app)
        if surfaces.console is not None:
            surfaces.console.reconciliation = routes.report
            surfaces.console.faults = control
        await nursery.start(player.run)
        if chaos.timeline is not None:
            player.start(load_timeline(chaos.timeline))
        yield policy
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_simulator(
    settings: SimulationSettings, metrics: Metrics
) -> AsyncIterator[Simulator]:
    """The simulator and its nursery; every timer still armed is cancelled at the end."""
    async with trio.open_nursery() as nursery:
        yield Simulator(nursery, settings.max_pending_payments, metrics.pending_changed)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_upkeep(
    settings: Settings, service: PaymentService, replica: Replica | None
) -> AsyncIterator[None]:
    """The retention sweeper and, sharing a store, the lease loop (started: first round done)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_sweeper, service, settings.simulation.sweep_interval_s)
        if replica is not None:
            await nursery.start(replica.run)
        yield
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_servers(
    settings: Settings,
    registry: Registry,
    http_app: HttpApp,
    metrics: Metrics,
    faults: FaultPolicy | None = None,
) -> AsyncIterator[Servers]:
    """The gRPC server and the HTTP endpoint, listening; both stop when the block ends."""
    grpc = GrpcServer(registry, GrpcLimits.from_settings(settings.grpc), metrics, faults)
    http = settings.http
    async with trio.open_nursery() as nursery:
        grpc_port = await nursery.start(
            functools.partial(grpc.serve, reuse_port=settings.reuse_port),
            settings.grpc.host,
            settings.grpc.port,
        )
        http_port = await nursery.start(
            functools.partial(serve_http, reuse_port=settings.reuse_port),
            http.host,
            http.port,
            http_app,
            HttpLimits.from_settings(http),
        )
        yield Servers(grpc, grpc_port, http_port)
        nursery.cancel_scope.cancel()


def build_registry(
    settings: Settings, service: PaymentService, readiness: Readiness, policy: SsrfPolicy
) -> Registry:
    """The gRPC services: payments, health (following ``readiness``) and reflection."""
    registry = Registry()
    registry.add(
        PaymentApi(
            service,
            settings.payment_url_base + "/{payment_intent_id}",
            SendableCheck(policy),
            max_delay_s=settings.simulation.max_delay_s,
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
