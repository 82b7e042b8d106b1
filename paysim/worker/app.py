"""The worker process (``paysim worker``): its wiring, its one root nursery, signals, shutdown.

Lifetimes, outermost first: the clients (a boto3 SQS client, which needs no
closing, and an ``Http1Client`` for the reservation service, which
``run_worker`` opens and closes unless it is given one) ⊃ the root nursery,
which holds the signal watcher, the HTTP endpoint for probes, metrics and
``GET /reconciliation`` (what the worker did per reservation, for the API's
reconciliation report: ``paysim.worker.record``; ``paysim.entrypoints.http``,
WORKER_HTTP_PORT 8040) and the
``ReservationWorker``. Nothing opens at import. The API and the worker share
the HTTP endpoint, ``Settings`` and ``paysim.process`` (signals, exit status);
the worker's /metrics carries only its own series (``WorkerMetrics``).

Readiness: ``/readyz`` answers 200 once the queue answered and the pollers
run, 503 before that and from the moment shutdown begins.

Shutdown (SIGTERM/SIGINT, or ``shutdown`` set by a test): readiness turns off,
the worker stops receiving, in-flight messages get SHUTDOWN_GRACE_MS to
finish, what is left is released to the queue (visibility 0), then the root
nursery is cancelled and ``run_worker`` returns. A second signal cancels
everything at once (unfinished messages then come back after their
visibility timeout).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from trio_util import move_on_when

from paysim import __version__, process
from paysim.config import ConfigError, Settings
from paysim.entrypoints.http import (
    HttpApp,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    json_response,
    serve_http,
)
from paysim.observability.health import Readiness
from paysim.worker.consumer import ConsumerOptions, ReservationWorker
from paysim.worker.metrics import WorkerMetrics
from paysim.worker.reservations import ReservationHttp, make_http_client
from paysim.worker.sqs_queue import SQS_CALL_TIMEOUT_S, sqs_threads

log = structlog.get_logger("paysim.worker_app")

SERVICE_NAME = "payment-sim-worker"  # in /health; the API's is payment-sim-api


@dataclass(frozen=True)
class WorkerRunning:
    """What ``run_worker`` reports through ``task_status`` once it consumes."""

    http_port: int
    worker: ReservationWorker
    readiness: Readiness
    metrics: WorkerMetrics


@dataclass(frozen=True)
class _Wiring:
    """What ``run_worker`` built, for ``_serve``."""

    settings: Settings
    worker: ReservationWorker
    shutdown: trio.Event
    force: trio.CancelScope  # cancelled by a second signal
    handle_signals: bool


def make_sqs_client(settings: Settings) -> Any:
    """A boto3 SQS client; the endpoint is boto3's (AWS_ENDPOINT_URL[_SQS] or AWS)."""
    from paysim.adapters.aws import ClientTuning, make_client

    tuning = ClientTuning(
        # Above the long poll, so that botocore ends a stuck call before we give up on it.
        read_timeout_s=settings.worker.wait_time_s + SQS_CALL_TIMEOUT_S,
        max_pool_connections=sqs_threads(settings.worker),
    )
    return make_client("sqs", settings.aws, tuning=tuning)


async def run_worker(
    settings: Settings,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    sqs_client: Any = None,
    http_client: ReservationHttp | None = None,
    task_status: trio.TaskStatus[WorkerRunning] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Consume until shutdown is requested, then drain and return.

    Raises ``ConfigError`` when PAYMENT_WEBHOOK_QUEUE_URL is not set. While
    the queue does not answer (no credentials, no such queue, no network) the
    worker retries with backoff, logging each failure, and stays not ready; a
    shutdown in that time returns without reporting through ``task_status``.
    """
    if settings.worker.queue_url is None:
        raise ConfigError("PAYMENT_WEBHOOK_QUEUE_URL", "the worker needs the queue to consume")
    shutdown = shutdown if shutdown is not None else trio.Event()
    if sqs_client is None:
        sqs_client = await trio.to_thread.run_sync(make_sqs_client, settings)
    force = trio.CancelScope()
    with force:
        async with contextlib.AsyncExitStack() as stack:
            if http_client is None:
                http_client = await stack.enter_async_context(make_http_client(settings.worker))
            options = ConsumerOptions(event_source=settings.aws.event_source)
            worker = ReservationWorker(settings.worker, sqs_client, http_client, options=options)
            await _serve(_Wiring(settings, worker, shutdown, force, handle_signals), task_status)
    log.info("worker stopped")


async def _serve(wiring: _Wiring, task_status: trio.TaskStatus[WorkerRunning]) -> None:
    settings, worker, shutdown = wiring.settings, wiring.worker, wiring.shutdown
    ws = settings.worker
    readiness = Readiness()
    async with trio.open_nursery() as root:
        if wiring.handle_signals:
            root.start_soon(process.watch_signals, shutdown, wiring.force)
        http_app = HttpApp(readiness, worker.metrics, service_name=SERVICE_NAME)
        http_app.add_route("/reconciliation", frozenset({"GET"}), _reconciliation(worker))
        http_port = await root.start(
            serve_http,
            ws.http_host,
            ws.http_port,
            http_app,
            HttpLimits.from_settings(settings.http),
        )
        log.info("worker starting", version=__version__, http_port=http_port, queue=ws.queue_url)
        async with move_on_when(shutdown.wait):  # until the queue answers, a shutdown cancels
            await root.start(worker.run)
        if not shutdown.is_set():
            readiness.mark_serving()
            log.info(
                "worker consuming",
                http_port=http_port,
                reservation_api=ws.reservation_api_url or "(none: decisions are logged)",
                pollers=ws.pollers,
                concurrency=ws.concurrency,
            )
            task_status.started(WorkerRunning(http_port, worker, readiness, worker.metrics))
            await shutdown.wait()
        readiness.mark_draining()
        log.info("shutting down", grace_s=settings.shutdown_grace_s)
        await worker.stop(settings.shutdown_grace_s)
        root.cancel_scope.cancel()


def _reconciliation(worker: ReservationWorker) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    """``GET /reconciliation``: the worker's record (facts only; the API cross-checks)."""

    async def handle(request: HttpRequest) -> HttpResponse:
        return json_response(200, worker.record.report(reservation_api=worker.reservation_api))

    return handle


def worker_main(settings: Settings) -> int:
    """Run the worker process; the exit status: 0 clean stop, 1 cannot start, 2 bad config."""
    if settings.worker.queue_url is None:
        print(
            "paysim worker: configuration error: PAYMENT_WEBHOOK_QUEUE_URL is not set "
            "(the SQS queue the worker consumes)",
            file=sys.stderr,
        )
        return 2
    from botocore.exceptions import BotoCoreError

    from paysim.observability import logging as paysim_logging

    paysim_logging.configure(settings.log.level, settings.log.json, process="worker")
    try:
        sqs = make_sqs_client(settings)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        print(f"paysim worker: cannot create the SQS client: {exc}", file=sys.stderr)
        return 2
    return process.run_main(
        "paysim worker",
        functools.partial(run_worker, settings, sqs_client=sqs),
        {settings.worker.http_port: "WORKER_HTTP_PORT"},
    )
