"""The application: the one root nursery, its wiring, signals and shutdown.

``run`` opens every long-lived resource inside its own lifetime and nothing at
import. The root nursery holds the gRPC server, the HTTP endpoint and the
signal watcher; the simulator nursery (one timer task per pending payment) is
opened here too and handed to ``Simulator``: no other code opens a nursery
that outlives a request.

Shutdown (SIGTERM/SIGINT, or ``shutdown`` set by a test), in order:

1. readiness turns NOT_SERVING at once (``/readyz`` and gRPC health read the
   same ``Readiness``), and the process keeps serving for DRAIN_DELAY_MS:
   Kubernetes removes endpoints asynchronously, so calls still arrive;
2. the grace window of SHUTDOWN_GRACE_MS opens. With the pending policy
   "resolve", timers due in its first half keep their time and every later one
   fires now (the outcome was decided at creation), also for payments created
   by calls still in flight; the second half is left for their webhooks and
   events (``FLUSH_SHARE``);
3. the gRPC server stops accepting, sends GOAWAY on every connection and waits
   for in-flight calls; then the simulator must be idle; then the webhook queue
   and the event buffer are flushed (together);
4. when all of that is done, or the grace runs out, whatever is left is logged
   with its payment ids and counted (``paysim_shutdown_undelivered_total``,
   ``paysim_shutdown_unresolved_payments_total``): never dropped silently. Then
   the root nursery is cancelled and ``run`` returns (exit status 0).

A store outage (Redis unreachable) is weather, not a reason to exit: calls
answer UNAVAILABLE (``StoreUnavailable``, mapped at the store's edge), the
process turns not ready until the store answers again (``_follow_store``), and
every loop that needs the store backs off and tries again (``backoff``):
the batch sender, the lease and takeover loop, the retention sweeper
(``run_sweeper``) and each payment's timer. Nothing escapes to the nursery.

So a shutdown takes at most DRAIN_DELAY_MS + SHUTDOWN_GRACE_MS plus the final
cancellation: the budget that ``k8s/`` sizes terminationGracePeriodSeconds
for (after the preStop sleep). A second signal cancels everything at once
(``process.watch_signals``; exit status 128 + signal, see ``process``).
"""

from __future__ import annotations

import contextlib
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
from paysim.adapters.fanout_notifier import FanoutNotifier
from paysim.adapters.http1_client import Http1Client
from paysim.adapters.httpx_h11 import CookielessClient, H11Transport
from paysim.adapters.memory_store import MemoryStore
from paysim.adapters.redis_store import RedisStore, open_redis_store
from paysim.backoff import Backoff
from paysim.config import Settings
from paysim.delivery.event_publisher import EventPublisher
from paysim.delivery.ssrf import SsrfPolicy
from paysim.delivery.webhook_dispatcher import WebhookDispatcher
from paysim.entrypoints.grpc.health import HealthServicer
from paysim.entrypoints.grpc.payment_api import PaymentApi
from paysim.entrypoints.grpc.reflection import ReflectionServicer
from paysim.entrypoints.grpc.transport import GrpcLimits, GrpcServer, Registry
from paysim.entrypoints.http import HttpApp, HttpLimits, serve_http
from paysim.entrypoints.journal_route import add_journal_route
from paysim.errors import StoreUnavailable
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.ports import Notifier, PaymentStore
from paysim.replica import run_replica
from paysim.service import PaymentService
from paysim.simulator import Simulator

log = structlog.get_logger("paysim.app")

# The share of the grace window kept for delivery: with the "resolve" policy a
# timer due later than (grace end - FLUSH_SHARE * grace) fires when the window
# opens, so that its webhook and event have at least that long to go out (a
# slow receiver, a retry or two) instead of racing the end of the window.
FLUSH_SHARE = 0.5
_IDS_PER_LINE = 1_000  # a report line names at most this many payment ids


@dataclass(frozen=True)
class Outbox:
    """A delivery channel that the drain flushes and, if it cannot, reports."""

    channel: str  # "webhook" or "event": the metrics label and the log wording
    flush: Callable[[], Awaitable[None]]  # returns once everything went out
    pending_payment_ids: Callable[[], list[str]]  # one id per item not delivered


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
    async with contextlib.AsyncExitStack() as resources:
        if store is None and settings.store.shared:
            store = await resources.enter_async_context(
                open_redis_store(
                    settings.store,
                    retention_s=settings.simulation.retention_s,
                    time_scale=settings.simulation.time_scale,
                )
            )
        await _run(
            settings,
            shutdown if shutdown is not None else trio.Event(),
            handle_signals,
            store if store is not None else MemoryStore(settings.simulation.retention_s),
            notifier,
            events_client,
            metrics if metrics is not None else Metrics(),
            rng,
            on_serving,
            task_status,
        )


async def _run(
    settings: Settings,
    shutdown: trio.Event,
    handle_signals: bool,
    store: PaymentStore,
    notifier: Notifier | None,
    events_client: Any,
    metrics: Metrics,
    rng: random.Random | None,
    on_serving: Callable[[], None] | None,
    task_status: trio.TaskStatus[Running],
) -> None:
    readiness = Readiness()
    force = trio.CancelScope()
    shared = store if isinstance(store, RedisStore) else None
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
                if shared is not None:
                    await root.start(shared.run)
                    root.start_soon(_follow_store, shared, readiness)
                http_app = HttpApp(readiness, metrics)
                outboxes: list[Outbox] = []
                if notifier is None:
                    fanout = FanoutNotifier(
                        on_finished=shared.outbox_done if shared is not None else None
                    )
                    if shared is not None:
                        shared.track_deliveries(fanout.delivering)
                    dispatcher = WebhookDispatcher(
                        settings.webhook,
                        http_client,
                        metrics,
                        time_scale=settings.simulation.time_scale,
                        on_done=fanout.channel_done,
                    )
                    await root.start(dispatcher.run)
                    add_journal_route(http_app, dispatcher.journal)
                    fanout.add(dispatcher)
                    outboxes.append(
                        Outbox("webhook", dispatcher.wait_idle, dispatcher.pending_payment_ids)
                    )
                    if settings.events.enabled:
                        publisher = EventPublisher(
                            settings.events,
                            settings.aws,
                            metrics,
                            events_client,
                            on_done=fanout.channel_done,
                        )
                        await root.start(publisher.run)
                        fanout.add(publisher)
                        outboxes.append(
                            Outbox("event", publisher.flush, publisher.pending_payment_ids)
                        )
                    notifier = fanout
                await _serve(
                    settings,
                    root,
                    http_app,
                    readiness,
                    metrics,
                    store,
                    notifier,
                    rng,
                    shutdown,
                    outboxes,
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
    outboxes: list[Outbox],
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
        simulator_nursery.start_soon(run_sweeper, service, settings.simulation.sweep_interval_s)
        replica = trio.CancelScope()
        if isinstance(store, RedisStore):
            await simulator_nursery.start(
                _replica_lifetime, replica, store, service, settings.store.takeover_interval_s
            )
        grpc = GrpcServer(
            build_registry(service, readiness, settings),
            GrpcLimits.from_settings(settings.grpc),
            metrics,
        )
        http = settings.http
        grpc_port = await root.start(
            functools.partial(grpc.serve, reuse_port=settings.reuse_port),
            settings.grpc.host,
            settings.grpc.port,
        )
        http_port = await root.start(
            functools.partial(serve_http, reuse_port=settings.reuse_port),
            http.host,
            http.port,
            http_app,
            HttpLimits.from_settings(http),
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
        try:
            await shutdown.wait()
            await _drain(
                settings,
                readiness,
                grpc,
                simulator,
                outboxes,
                _Handover(service, store, replica) if isinstance(store, RedisStore) else None,
            )
        finally:
            # Also after a second signal: the report is synchronous, so it runs
            # even while everything around it is being cancelled.
            _report_left_behind(settings.pending_on_shutdown, simulator, outboxes, metrics)
            simulator_nursery.cancel_scope.cancel()


async def run_sweeper(
    service: PaymentService, interval_s: float, backoff: Backoff | None = None
) -> None:
    """Retention: ``service.sweep()`` every ``interval_s``, until cancelled.

    A store that does not answer is logged once and tried again with backoff;
    any other error is logged (its kind, never a trace) and tried again alike.
    """
    backoff = backoff if backoff is not None else Backoff()
    delay = interval_s
    while True:
        await trio.sleep(delay)
        try:
            await service.sweep()
        except StoreUnavailable:
            if not backoff.failures:
                log.warning("retention sweep failed: the store is unavailable; retrying")
        except Exception as exc:
            log.exception("retention sweep failed; retrying", error=type(exc).__name__)
        else:
            backoff.reset()
            delay = interval_s
            continue
        delay = backoff.failed()


async def _follow_store(store: RedisStore, readiness: Readiness) -> None:
    """Readiness follows the store: not ready while it is unreachable."""
    async for available in store.available.eventual_values():
        readiness.mark_store(available)


async def _replica_lifetime(
    scope: trio.CancelScope,
    store: RedisStore,
    service: PaymentService,
    interval_s: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``run_replica`` under ``scope``, which the handover cancels before the replica leaves."""
    with scope:
        await run_replica(store, service, interval_s, task_status=task_status)


@dataclass(frozen=True)
class _Handover:
    """What a replica sharing a store needs to hand its work over when it drains."""

    service: PaymentService
    store: RedisStore
    replica: trio.CancelScope  # the lease and takeover loop

    async def pending(self) -> None:
        """Stop the local timers and give their payments to the other replicas."""
        stopped = self.service.release_timers()
        try:
            moved, _ = await self.store.hand_over(leave=False)
        except StoreUnavailable:
            log.warning(
                "could not hand over pending payments; others take them when the lease ends",
                pending=len(stopped),
            )
            return
        log.info("pending payments handed over", count=moved, local_timers=len(stopped))

    async def leave(self) -> None:
        """End the lease; changes still undelivered go to the other replicas."""
        self.replica.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self.store.timeout_s):
            try:
                _, changes = await self.store.hand_over(leave=True)
            except StoreUnavailable:
                log.warning("could not leave cleanly; others take over when the lease ends")
                return
            log.info("left the replica set", undelivered_handed_over=changes)


async def _drain(
    settings: Settings,
    readiness: Readiness,
    grpc: GrpcServer,
    simulator: Simulator,
    outboxes: list[Outbox],
    handover: _Handover | None,
) -> None:
    """The graceful part of the shutdown; the module docstring gives the order and budget."""
    readiness.mark_draining()
    resolve = settings.pending_on_shutdown == "resolve"
    log.info(
        "shutting down",
        drain_delay_s=settings.drain_delay_s,
        grace_s=settings.shutdown_grace_s,
        pending_policy=settings.pending_on_shutdown,
        pending=simulator.pending,
    )
    await trio.sleep(settings.drain_delay_s)  # not ready, still serving
    started = trio.current_time()
    deadline = started + settings.shutdown_grace_s
    if resolve:
        cutoff = deadline - settings.shutdown_grace_s * FLUSH_SHARE
        moved = simulator.resolve_by(cutoff)
        log.info(
            "resolving pending payments",
            early=len(moved),
            on_time=simulator.pending - len(moved),
            on_time_until_s=round(cutoff - started, 3),
        )
    try:
        with trio.move_on_at(deadline) as grace:
            await grpc.drain()
            if resolve:
                await simulator.wait_idle()
            elif handover is not None:
                await handover.pending()
            async with trio.open_nursery() as flushing:
                for outbox in outboxes:
                    flushing.start_soon(outbox.flush)
    finally:
        if handover is not None:
            await handover.leave()
    if grace.cancelled_caught:
        log.warning("grace period over; cancelling what is left", grace_s=settings.shutdown_grace_s)
    else:
        log.info("drained", s=round(trio.current_time() - started, 3))


def _report_left_behind(
    policy: str, simulator: Simulator, outboxes: list[Outbox], metrics: Metrics
) -> None:
    """Log (with payment ids) and count every outcome the drain could not announce."""
    for outbox in outboxes:
        ids = outbox.pending_payment_ids()
        if ids:
            metrics.shutdown_undelivered(outbox.channel, len(ids))
            _log_ids(
                log.warning,
                f"undelivered {outbox.channel}s at shutdown",
                ids,
                channel=outbox.channel,
            )
    pending = simulator.pending_ids()
    if not pending:
        return
    if policy == "handover":
        _log_ids(log.info, "pending payments left for another replica", pending)
    else:
        metrics.shutdown_unresolved(len(pending))
        _log_ids(log.warning, "unresolved payments at shutdown", pending)


def _log_ids(report: Callable[..., Any], event: str, ids: list[str], **fields: Any) -> None:
    """One line per ``_IDS_PER_LINE`` payment ids; ``count`` items in all (ids may repeat)."""
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IDS_PER_LINE):
        report(event, count=len(ids), payment_ids=unique[start : start + _IDS_PER_LINE], **fields)
