"""The worker process (``paysim worker``): its one root nursery, wiring, signals and shutdown.

``run_worker`` holds, in its root nursery, the HTTP endpoint for probes and
metrics (WORKER_HTTP_PORT, 8040), the ``ReservationWorker`` and the signal
watcher. It opens the clients it is not given (an ``Http1Client`` for the
reservation service, which it closes, and a boto3 SQS client, which needs no
closing) and nothing at import.

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
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from paysim import __version__, process
from paysim.adapters.http1_client import Http1Client
from paysim.config import ConfigError, Settings, WorkerSettings
from paysim.entrypoints.http import HttpApp, HttpLimits, serve_http
from paysim.entrypoints.sqs_worker import ReservationHttp, ReservationWorker, sqs_threads
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.worker_app")

SERVICE_NAME = "payment-sim-worker"  # in /health; the API's is payment-sim-api


@dataclass(frozen=True)
class WorkerRunning:
    """What ``run_worker`` reports through ``task_status`` once it consumes."""

    http_port: int
    worker: ReservationWorker
    readiness: Readiness
    metrics: Metrics


def make_http_client(worker: WorkerSettings) -> Http1Client:
    """The client for the reservation service: one connection per concurrent handler.

    Not httpx: it cost the worker most of its CPU (see ``paysim.adapters.http1_client``).
    The connect gets the call's whole timeout; the worker bounds every call.
    """
    return Http1Client(
        max_connections=worker.concurrency,
        connect_timeout_s=worker.reservation_timeout_s,
        headers=[("User-Agent", f"PaymentSim-Worker/{__version__}")],
    )


def make_sqs_client(settings: Settings) -> Any:
    """A boto3 SQS client; the endpoint is boto3's (AWS_ENDPOINT_URL[_SQS] or AWS)."""
    from paysim.adapters.aws import make_client

    return make_client(
        "sqs",
        settings.aws,
        # Above the long poll, so that botocore ends a stuck call before we give up on it.
        read_timeout_s=settings.worker.wait_time_s + 10.0,
        max_pool_connections=sqs_threads(settings.worker),
    )


async def run_worker(
    settings: Settings,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    sqs_client: Any = None,
    http_client: ReservationHttp | None = None,
    metrics: Metrics | None = None,
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
    metrics = metrics if metrics is not None else Metrics()
    if sqs_client is None:
        sqs_client = await trio.to_thread.run_sync(make_sqs_client, settings)
    force = trio.CancelScope()
    with force:
        async with contextlib.AsyncExitStack() as stack:
            if http_client is None:
                http_client = await stack.enter_async_context(make_http_client(settings.worker))
            await _serve(
                settings,
                shutdown,
                handle_signals,
                sqs_client,
                http_client,
                metrics,
                force,
                task_status,
            )
    log.info("worker stopped")


async def _serve(
    settings: Settings,
    shutdown: trio.Event,
    handle_signals: bool,
    sqs_client: Any,
    http_client: ReservationHttp,
    metrics: Metrics,
    force: trio.CancelScope,
    task_status: trio.TaskStatus[WorkerRunning],
) -> None:
    ws, http = settings.worker, settings.http
    readiness = Readiness()
    worker = ReservationWorker(
        ws, sqs_client, http_client, metrics, event_source=settings.aws.event_source
    )
    async with trio.open_nursery() as root:
        if handle_signals:
            root.start_soon(process.watch_signals, shutdown, force)
        http_port = await root.start(
            serve_http,
            ws.http_host,
            ws.http_port,
            HttpApp(readiness, metrics, service_name=SERVICE_NAME),
            HttpLimits.from_settings(http),
        )
        log.info("worker starting", version=__version__, http_port=http_port, queue=ws.queue_url)
        # Until the queue answers, a shutdown request cancels the start.
        async with trio.open_nursery() as starting:
            starting.start_soon(_cancel_on, shutdown, starting.cancel_scope)
            await root.start(worker.run)
            starting.cancel_scope.cancel()
        if not shutdown.is_set():
            readiness.mark_serving()
            log.info(
                "worker consuming",
                http_port=http_port,
                reservation_api=ws.reservation_api_url or "(none: decisions are logged)",
                pollers=ws.pollers,
                concurrency=ws.concurrency,
            )
            task_status.started(WorkerRunning(http_port, worker, readiness, metrics))
            await shutdown.wait()
        readiness.mark_draining()
        log.info("shutting down", grace_s=settings.shutdown_grace_s)
        await worker.stop(settings.shutdown_grace_s)
        root.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


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

    paysim_logging.configure(settings.log.level, settings.log.json)
    try:
        sqs = make_sqs_client(settings)
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        print(f"paysim worker: cannot create the SQS client: {exc}", file=sys.stderr)
        return 2
    return process.run_main(
        "paysim worker",
        functools.partial(run_worker, settings, sqs_client=sqs),
        "WORKER_HTTP_PORT",
    )
