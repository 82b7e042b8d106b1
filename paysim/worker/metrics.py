"""The worker's Prometheus series, in a registry of its own.

``WorkerMetrics`` is a ``ProcessMetrics`` (the process, build and HTTP series
every paysim process exports, and ``render`` for the HTTP endpoint) plus the
``paysim_worker_*`` series: the worker's /metrics shows nothing of the API's
payments. ``run_worker`` builds one per process; tests build a fresh one per
worker. One ``ReservationWorker`` per ``WorkerMetrics``: the in-flight gauge
reads the worker that calls ``track_in_flight``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from paysim.domain.event_parsing import MALFORMED_REASONS
from paysim.observability.metrics import HANDLING_BUCKETS, ProcessMetrics

OUTCOMES = ("confirmed", "cancelled", "ignored", "duplicate")
FAILURE_REASONS = ("http_status", "connection", "timeout", "internal")
SQS_OPERATIONS = ("check", "receive", "delete", "release")


class WorkerMetrics(ProcessMetrics):
    """The worker process's metrics; the labelled children are created once, here."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        reg = self.registry
        self.received = Counter(
            "paysim_worker_messages_received", "SQS messages received.", registry=reg
        )
        handled = Counter(
            "paysim_worker_messages_handled",
            "Messages handled (and deleted), by outcome.",
            ("outcome",),
            registry=reg,
        )
        self.handled = {o: handled.labels(o) for o in OUTCOMES}
        failures = Counter(
            "paysim_worker_failures",
            "Messages left for redelivery because the reservation call failed, by reason.",
            ("reason",),
            registry=reg,
        )
        self.failures = {r: failures.labels(r) for r in FAILURE_REASONS}
        malformed = Counter(
            "paysim_worker_malformed",
            "Malformed messages (left for the DLQ), by reason.",
            ("reason",),
            registry=reg,
        )
        self.malformed = {r: malformed.labels(r) for r in MALFORMED_REASONS}
        self.delete_failures = Counter(
            "paysim_worker_delete_failures",
            "Handled messages whose deletion failed (they will be redelivered).",
            registry=reg,
        )
        self.released = Counter(
            "paysim_worker_messages_released",
            "In-flight messages made visible again at shutdown.",
            registry=reg,
        )
        sqs_errors = Counter(
            "paysim_worker_sqs_errors",
            "Failed SQS calls, by operation.",
            ("operation",),
            registry=reg,
        )
        self.sqs_errors = {op: sqs_errors.labels(op) for op in SQS_OPERATIONS}
        self.handling = Histogram(
            "paysim_worker_handling_seconds",
            "Time from the start of handling a message to its outcome.",
            buckets=HANDLING_BUCKETS,
            registry=reg,
        )
        self._in_flight = Gauge(
            "paysim_worker_messages_in_flight",
            "Messages received and not yet deleted, left or released.",
            registry=reg,
        )

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """Read the in-flight gauge from ``count`` at each scrape."""
        self._in_flight.set_function(lambda: float(count()))
