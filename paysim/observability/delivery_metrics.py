"""The delivery channels' series: webhooks (``paysim_webhook_*``) and events (``paysim_events_*``).

Made by ``Metrics`` on its own registry, the first time ``metrics.webhooks`` or
``metrics.events`` is read (so a process without a channel exposes none of its
series, as before); the webhook dispatcher and the EventBridge publisher only
record through them. Labelled children are created up front or cached, as in
``Metrics``: recording is a dict lookup, never a ``.labels()`` call. The series
every payment touches (deliveries, attempts and their durations, lag, queue
depth, events published and backlog) are plain numbers from
``paysim.observability.series``, updated on the trio thread only (the
publisher counts after its boto3 thread has returned); the rare ones stay
prometheus_client objects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from paysim.observability.series import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
)

WEBHOOK_OUTCOMES = ("delivered", "gave_up", "gone", "blocked", "unsendable")
WEBHOOK_CHAOS_KINDS = ("duplicate", "hold", "reorder")
EVENT_FAILURE_REASONS = (
    "failed_entry",
    "throttled",
    "connection",
    "timeout",
    "server",
    "rejected",
    "error",
)


class WebhookMetrics:
    """The webhook dispatcher's series (see ``paysim.delivery.webhook_dispatcher``)."""

    def __init__(self, reg: CollectorRegistry) -> None:
        deliveries = CounterFamily(
            "paysim_webhook_deliveries",
            "Webhook deliveries finished, by outcome"
            " (delivered, gave_up, gone, blocked, unsendable).",
            ["outcome"],
            registry=reg,
        )
        self._attempts = CounterFamily(
            "paysim_webhook_attempts",
            "Webhook attempts, by result"
            " (2xx, 4xx, 5xx, 3xx, timeout, error, blocked, unsendable).",
            ["result"],
            registry=reg,
        )
        self._attempt_seconds = HistogramFamily(
            "paysim_webhook_attempt_seconds",
            "Duration of one webhook attempt.",
            registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ).labels()
        self.lag = HistogramFamily(
            "paysim_webhook_lag_seconds",
            "From the status change to its successful delivery.",
            registry=reg,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600),
        ).labels()
        self.queued = GaugeFamily(
            "paysim_webhook_queue_depth", "Deliveries waiting or in flight.", registry=reg
        ).labels()
        self.enqueue_waits = Counter(
            "paysim_webhook_enqueue_waits",
            "Times a status change waited because the webhook queue was full.",
            registry=reg,
        )
        chaos = Counter(
            "paysim_webhook_chaos",
            "Chaos injected into webhook delivery, by kind (duplicate, hold, reorder).",
            ["kind"],
            registry=reg,
        )
        self.chaos = {kind: chaos.labels(kind) for kind in WEBHOOK_CHAOS_KINDS}
        self._by_outcome = {o: deliveries.labels(o) for o in WEBHOOK_OUTCOMES}

    def delivered(self, outcome: str) -> None:
        """Count a finished delivery; ``outcome`` is one of WEBHOOK_OUTCOMES."""
        self._by_outcome[outcome].value += 1.0

    def attempted(self, result: str, seconds: float) -> None:
        """Count one attempt by result (``2xx``, ``timeout``...) and its duration."""
        child = self._attempts.children.get((result,))
        if child is None:
            child = self._attempts.labels(result)
        child.value += 1.0
        self._attempt_seconds.observe(seconds)


class EventMetrics:
    """The EventBridge publisher's series (see ``paysim.delivery.event_publisher``)."""

    def __init__(self, reg: CollectorRegistry) -> None:
        self.published = CounterFamily(
            "paysim_events_published",
            "Event entries accepted by EventBridge (answered with an EventId).",
            registry=reg,
        ).labels()
        failed_attempts = Counter(
            "paysim_events_failed_attempts",
            "Event entry attempts that failed and will be retried, by reason.",
            ("reason",),
            registry=reg,
        )
        dropped = Counter(
            "paysim_events_dropped",
            "Event entries dropped before sending: buffer overflow or too large.",
            ("reason",),
            registry=reg,
        )
        self.unsent = Counter(
            "paysim_events_unsent",
            "Event entries still unpublished when the publisher was stopped.",
            registry=reg,
        )
        self.backlog = GaugeFamily(
            "paysim_events_backlog",
            "Event entries not yet published (waiting, in a call, or to be retried).",
            registry=reg,
        ).labels()
        self.failed_by_reason = {r: failed_attempts.labels(r) for r in EVENT_FAILURE_REASONS}
        self.dropped_overflow = dropped.labels("overflow")
        self.dropped_too_large = dropped.labels("too_large")
        self.dropped_error = dropped.labels("error")
