"""Plain-number series against prometheus_client: the same operations, the same exposition.

``paysim.observability.series`` replaces prometheus_client's ``Counter``,
``Gauge`` and ``Histogram`` on the hot path, and ``GrpcSeries`` derives two
gRPC families from the others. Each test here runs one sequence of
operations through prometheus_client's objects (the way ``Metrics`` and
``WebhookMetrics``/``EventMetrics`` recorded before) and through ours, and
compares the exposition text of the affected families, in both formats.
``time.time`` is frozen so that the ``_created`` samples compare too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from paysim.domain.state import TRANSITIONS
from paysim.observability.delivery_metrics import WEBHOOK_OUTCOMES
from paysim.observability.grpc_series import HANDLING_BUCKETS
from paysim.observability.metrics import SCENARIOS, Metrics
from paysim.observability.series import CounterFamily, GaugeFamily, HistogramFamily

GRPC = ("grpc_type", "grpc_service", "grpc_method")
SERVICE = "payment.v1.PaymentService"
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600)
# Bounds, between them, beyond the last, zero, negative, infinite and NaN.
AMOUNTS = (0.0, 0.005, 0.0050001, 0.3, 1, 10.0, 11.0, 3600.5, -1.0, math.inf, 2.5, math.nan)


@pytest.fixture(autouse=True)
def frozen_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_765_000_000.125)


def exposition(registry: CollectorRegistry, names: Iterable[str]) -> list[tuple[str, str]]:
    """The text and OpenMetrics blocks (HELP, TYPE, samples) of these families, in order."""
    wanted = set(names)
    out = []
    for fmt, text in (
        ("text", generate_latest(registry)),
        ("openmetrics", generate_openmetrics(registry)),
    ):
        blocks = text.decode().replace("# EOF\n", "").split("# HELP ")
        # The text format names a counter's block ``_total`` and gives ``_created`` its own.
        family = [(block, _family_name(block.split()[0], wanted)) for block in blocks if block]
        out += [(fmt, block) for block, name in family if name in wanted]
        assert wanted <= {name for _, name in family}  # every family found, in both formats
    return out


def _family_name(name: str, wanted: set[str]) -> str:
    for suffix in ("", "_total", "_created"):
        if name.endswith(suffix) and name[: len(name) - len(suffix)] in wanted:
            return name[: len(name) - len(suffix)]
    return name


def test_counter_gauge_and_histogram_families_export_like_prometheus_client() -> None:
    old, new = CollectorRegistry(), CollectorRegistry()
    old_c = Counter("c", "A counter.", ("a", "b"), registry=old)
    new_c = CounterFamily("c", "A counter.", ("a", "b"), registry=new)
    old_u, new_u = (
        Counter("u", "Unlabelled.", registry=old),
        CounterFamily("u", "Unlabelled.", registry=new),
    )
    old_g, new_g = Gauge("g", "A gauge.", registry=old), GaugeFamily("g", "A gauge.", registry=new)
    old_lg = Gauge("lg", "Labelled gauge.", ("k",), registry=old)
    new_lg = GaugeFamily("lg", "Labelled gauge.", ("k",), registry=new)
    old_h = Histogram("h", "A histogram.", ("m",), buckets=LAG_BUCKETS, registry=old)
    new_h = HistogramFamily("h", "A histogram.", ("m",), registry=new, buckets=LAG_BUCKETS)
    old_uh = Histogram("uh", "Unlabelled.", buckets=WEBHOOK_BUCKETS, registry=old)
    new_uh = HistogramFamily("uh", "Unlabelled.", registry=new, buckets=WEBHOOK_BUCKETS)

    old_c.labels("x", "y")  # created at 0, before any inc
    new_c.labels("x", "y")
    for i, amount in enumerate(AMOUNTS):
        labels = ("p", "q") if i % 3 else ("x", "y")
        old_c.labels(*labels).inc(i)
        new_c.labels(*labels).inc(i)
        old_u.inc(0.1)
        new_u.labels().inc(0.1)
        old_g.inc(amount) if i % 2 else old_g.dec(0.3)
        new_g.labels().inc(amount) if i % 2 else new_g.labels().dec(0.3)
        old_lg.labels(str(i % 2)).set(i * 1.5)
        new_lg.labels(str(i % 2)).set(i * 1.5)
        old_h.labels("a" if i % 2 else "b").observe(amount)
        new_h.labels("a" if i % 2 else "b").observe(amount)
        old_uh.observe(abs(amount) * 3)
        new_uh.labels().observe(abs(amount) * 3)
    with pytest.raises(ValueError, match="non-negative"):
        old_c.labels("x", "y").inc(-1)
    with pytest.raises(ValueError, match="non-negative"):
        new_c.labels("x", "y").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        new_c.labels("only one")

    names = ("c", "u", "g", "lg", "h", "uh")
    assert exposition(new, names) == exposition(old, names)


class _OldMetrics:
    """The hot series as ``Metrics`` and the delivery metrics recorded them before.

    prometheus_client objects, registered in the same order, touched by the same
    calls: the differential reference for ``Metrics``.
    """

    def __init__(self, reg: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started", "Total number of RPCs started on the server.", GRPC, registry=reg
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*GRPC, "grpc_code"),
            registry=reg,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            GRPC,
            buckets=HANDLING_BUCKETS,
            registry=reg,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            GRPC,
            registry=reg,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            GRPC,
            registry=reg,
        )
        self.created = Counter(
            "paysim_payments_created",
            "Payments created, by requested scenario.",
            ("scenario",),
            registry=reg,
        )
        self.transitions = Counter(
            "paysim_payment_transitions",
            "Payment status transitions.",
            ("from_status", "to_status"),
            registry=reg,
        )
        self.pending = Gauge(
            "paysim_payments_pending", "Payments waiting for their simulated outcome.", registry=reg
        )
        for scenario in SCENARIOS:
            self.created.labels(scenario)
        for old, targets in TRANSITIONS.items():
            for new in targets:
                self.transitions.labels(old.name, new.name)
        deliveries = Counter(
            "paysim_webhook_deliveries",
            "Webhook deliveries finished, by outcome"
            " (delivered, gave_up, gone, blocked, unsendable).",
            ["outcome"],
            registry=reg,
        )
        self.attempts = Counter(
            "paysim_webhook_attempts",
            "Webhook attempts, by result"
            " (2xx, 4xx, 5xx, 3xx, timeout, error, blocked, unsendable).",
            ["result"],
            registry=reg,
        )
        self.attempt_seconds = Histogram(
            "paysim_webhook_attempt_seconds",
            "Duration of one webhook attempt.",
            registry=reg,
            buckets=WEBHOOK_BUCKETS,
        )
        self.lag = Histogram(
            "paysim_webhook_lag_seconds",
            "From the status change to its successful delivery.",
            registry=reg,
            buckets=LAG_BUCKETS,
        )
        self.queued = Gauge(
            "paysim_webhook_queue_depth", "Deliveries waiting or in flight.", registry=reg
        )
        self.by_outcome = {o: deliveries.labels(o) for o in WEBHOOK_OUTCOMES}
        self.published = Counter(
            "paysim_events_published",
            "Event entries accepted by EventBridge (answered with an EventId).",
            registry=reg,
        )
        self.backlog = Gauge(
            "paysim_events_backlog",
            "Event entries not yet published (waiting, in a call, or to be retried).",
            registry=reg,
        )

    def rpc_started(self, grpc_type: str, service: str, method: str) -> None:
        self._rpc(grpc_type, service, method)
        self.started.labels(grpc_type, service, method).inc()
        self.received.labels(grpc_type, service, method).inc()

    def rpc_handled(
        self, grpc_type: str, service: str, method: str, code: str, seconds: float
    ) -> None:
        self._rpc(grpc_type, service, method)
        self.handling.labels(grpc_type, service, method).observe(seconds)
        self.handled.labels(grpc_type, service, method, code).inc()
        if code == "OK" and grpc_type == "unary":
            self.sent.labels(grpc_type, service, method).inc()

    def _rpc(self, *key: str) -> None:  # the children came into being together
        for family in (self.started, self.received, self.sent, self.handling):
            family.labels(*key)

    def payment_created(self, scenario: str) -> None:
        self.created.labels(scenario).inc()

    def payment_transition(self, from_status: str, to_status: str) -> None:
        self.transitions.labels(from_status, to_status).inc()

    def pending_changed(self, delta: int) -> None:
        self.pending.inc(delta)

    def delivered(self, outcome: str) -> None:
        self.by_outcome[outcome].inc()

    def attempted(self, result: str, seconds: float) -> None:
        self.attempts.labels(result).inc()
        self.attempt_seconds.observe(seconds)


def _drive(
    rpc_started: Callable[..., None],
    rpc_handled: Callable[..., None],
    m: Any,
    hooks: Any,
    events: Any,
) -> None:
    """A run's worth of calls: several methods and codes, streaming, every channel."""
    codes = ("OK", "OK", "INVALID_ARGUMENT", "OK", "NOT_FOUND", "UNAVAILABLE")
    for i, amount in enumerate(AMOUNTS):
        method = ("CreatePaymentIntent", "GetPayment", "CancelPayment")[i % 3]
        if i != 4:  # one call handled without being seen starting (GetPayment)
            rpc_started("unary", SERVICE, method)
        rpc_handled("unary", SERVICE, method, codes[i % len(codes)], abs(amount) / 100)
        m.payment_created(("approve", "delay", "decline")[i % 3])
        m.pending_changed(1)
        if i % 4:
            m.pending_changed(-1)
            m.payment_transition("PENDING", ("COMPLETED", "FAILED")[i % 2])
        hooks.queued.inc()
        hooks.attempted(("2xx", "5xx", "timeout")[i % 3], abs(amount))
        hooks.delivered(WEBHOOK_OUTCOMES[i % 2])
        hooks.lag.observe(amount * 7)
        hooks.queued.dec()
        events.backlog.inc()
        if i % 5 == 4:
            events.published.inc(5)
            events.backlog.dec(5)
    rpc_started("server_stream", "grpc.health.v1.Health", "Watch")
    rpc_handled("server_stream", "grpc.health.v1.Health", "Watch", "OK", 30.0)
    rpc_started("unary", "grpc.health.v1.Health", "Check")  # started, never handled


HOT_FAMILIES = (
    "grpc_server_started",
    "grpc_server_handled",
    "grpc_server_handling_seconds",
    "grpc_server_msg_received",
    "grpc_server_msg_sent",
    "paysim_payments_created",
    "paysim_payment_transitions",
    "paysim_payments_pending",
    "paysim_webhook_deliveries",
    "paysim_webhook_attempts",
    "paysim_webhook_attempt_seconds",
    "paysim_webhook_lag_seconds",
    "paysim_webhook_queue_depth",
    "paysim_events_published",
    "paysim_events_backlog",
)


def test_metrics_export_what_prometheus_client_objects_exported() -> None:
    old_reg = CollectorRegistry()
    old = _OldMetrics(old_reg)
    new = Metrics()
    _drive(old.rpc_started, old.rpc_handled, old, old, old)
    _drive(new.rpc_started, new.rpc_handled, new, new.webhooks, new.events)
    assert exposition(new.registry, HOT_FAMILIES) == exposition(old_reg, HOT_FAMILIES)


def test_a_fresh_metrics_exports_what_a_fresh_reference_did() -> None:
    old_reg = CollectorRegistry()
    _OldMetrics(old_reg)
    new = Metrics()
    new.webhooks, new.events  # noqa: B018 - the channels register on first read
    assert exposition(new.registry, HOT_FAMILIES) == exposition(old_reg, HOT_FAMILIES)
