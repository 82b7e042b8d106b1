"""Prometheus metrics for paysim, as an object that owns its registry.

``app.run`` builds one ``Metrics`` and passes it to whoever records (the gRPC
server, the payment service, the HTTP endpoint); tests build a fresh one each,
so nothing is ever registered in prometheus_client's global ``REGISTRY``.

The gRPC metrics use go-grpc-prometheus' names and labels so that existing
dashboards work unchanged; paysim's own metrics are prefixed ``paysim_``.

Recording sits on the hot path (thousands of calls per second). The series
every payment touches (gRPC calls, created, transitions, pending, and the
delivery channels' in ``delivery_metrics``) are plain numbers from
``paysim.observability.series``, exported with the exposition prometheus_client's
objects gave them; a call records about 0.1 µs per series instead of 0.3-0.7 µs
through a locked prometheus_client value. They are updated on the trio thread
only. The rare ones stay prometheus_client objects, each labelled child looked
up once and cached. Label values must come from small fixed sets (gRPC method
names, status and code names, route names): never pass client-controlled text
as a label.
"""

from __future__ import annotations

from functools import cached_property

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

import paysim
from paysim.domain.models import SCENARIO_NAMES
from paysim.domain.state import TRANSITIONS
from paysim.observability import gc_pauses
from paysim.observability.delivery_metrics import EventMetrics, WebhookMetrics
from paysim.observability.grpc_series import HANDLING_BUCKETS, GrpcSeries
from paysim.observability.series import CounterFamily, GaugeFamily

__all__ = ["HANDLING_BUCKETS", "Metrics", "ProcessMetrics"]

# Known values are pre-created so that their series exist (at 0) from the start.
SCENARIOS = SCENARIO_NAMES
DELIVERY_CHANNELS = ("webhook", "event")
REJECT_REASONS = ("overload", "idempotency_conflict")


class ProcessMetrics:
    """What every paysim process exports, in a ``CollectorRegistry`` it owns.

    The standard ``process_*``/``python_*`` series, ``paysim_build_info`` and
    the HTTP endpoint's ``paysim_http_requests``; ``render`` serialises the
    registry. The API's ``Metrics`` and the worker's ``WorkerMetrics`` add
    their own series to it, so each process exports only its own. The
    registry is created here unless one is given. Counters are named without
    ``_total``: prometheus_client appends the suffix in the exposition.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        # The standard process_*, python_gc_* and python_info series, as every
        # Python exporter has them (our registry is not the global default one).
        ProcessCollector(registry=reg)
        GCCollector(registry=reg)
        PlatformCollector(registry=reg)
        # And how long collections held the process (they are counted above).
        gc_pauses.install()
        reg.register(gc_pauses.GcPauseCollector())
        self._http_requests = Counter(
            "paysim_http_requests",
            "HTTP requests on the health/metrics endpoint, by route and status code.",
            ("path", "code"),
            registry=reg,
        )
        build_info = Gauge(
            "paysim_build_info",
            "Build information; the value is always 1.",
            ("version",),
            registry=reg,
        )
        build_info.labels(paysim.__version__).set(1)
        self._http_children: dict[tuple[str, int], Counter] = {}

    def http_request(self, path: str, code: int) -> None:
        """Count one HTTP response; ``path`` is a route name or ``"other"``, never raw."""
        key = (path, code)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_requests.labels(path, str(code))
            self._http_children[key] = child
        child.inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Serialise the registry for a scrape; return ``(body, content_type)``.

        The format follows the Accept header: OpenMetrics when the scraper asks
        for ``application/openmetrics-text``, the classic text format otherwise.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class Metrics(ProcessMetrics):
    """The API process's metrics: gRPC, payments and delivery, besides ``ProcessMetrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        reg = self.registry
        self._grpc = GrpcSeries(reg)

        self._created = CounterFamily(
            "paysim_payments_created",
            "Payments created, by requested scenario.",
            ("scenario",),
            registry=reg,
        )
        self._transitions = CounterFamily(
            "paysim_payment_transitions",
            "Payment status transitions.",
            ("from_status", "to_status"),
            registry=reg,
        )
        self._pending = GaugeFamily(
            "paysim_payments_pending",
            "Payments waiting for their simulated outcome.",
            registry=reg,
        ).labels()
        self._dropped = Counter(
            "paysim_payments_dropped",
            "Settled payments dropped by retention (RETENTION_MS).",
            registry=reg,
        )
        self._rejected = Counter(
            "paysim_payments_rejected",
            "Payment requests rejected before creation, by reason.",
            ("reason",),
            registry=reg,
        )
        self._shutdown_undelivered = Counter(
            "paysim_shutdown_undelivered",
            "Webhook deliveries and events not yet delivered when the process stopped, "
            "by channel (each is also logged with its payment id).",
            ("channel",),
            registry=reg,
        )
        self._shutdown_unresolved = Counter(
            "paysim_shutdown_unresolved_payments",
            "Payments whose outcome was not yet announced when the process stopped.",
            registry=reg,
        )
        for channel in DELIVERY_CHANNELS:
            self._shutdown_undelivered.labels(channel)
        self._rpc_methods = self._grpc.methods
        self._rejected_children = {r: self._rejected.labels(r) for r in REJECT_REASONS}
        for scenario in SCENARIOS:
            self._created.labels(scenario)
        # Every legal transition, as the state table has them: besides rate()
        # working from the first event, no series is born in the middle of a
        # storm, where its few objects would pin a 1 MiB block of the
        # allocator that the storm's own objects have left (issue 18).
        for from_status, targets in TRANSITIONS.items():
            for to_status in targets:
                self._transitions.labels(from_status.name, to_status.name)

    # -- gRPC (go-grpc-prometheus) ---------------------------------------

    def rpc_started(self, grpc_type: str, service: str, method: str) -> None:
        """Count a started call, and its request message as received (the same series)."""
        key = (grpc_type, service, method)
        rpc = self._rpc_methods.get(key)
        if rpc is None:
            rpc = self._grpc.method(key)
        rpc.started.value += 1.0

    def rpc_handled(
        self, grpc_type: str, service: str, method: str, code: str, seconds: float
    ) -> None:
        """Count a finished call by gRPC code name (``"OK"``, ``"INVALID_ARGUMENT"``...).

        An OK unary call has sent exactly one message; other calls are not
        counted as sending (streaming handlers know better and do not use this):
        ``GrpcSeries`` derives the sent count from the OK count.
        """
        key = (grpc_type, service, method)
        rpc = self._rpc_methods.get(key)
        if rpc is None:
            rpc = self._grpc.method(key)
        rpc.handling.observe(seconds)
        handled = rpc.codes.get(code)
        if handled is None:
            handled = self._grpc.handled(key, rpc, code)
        handled.value += 1.0

    # -- paysim ------------------------------------------------------------

    def payment_created(self, scenario: str) -> None:
        child = self._created.children.get((scenario,))
        if child is None:
            child = self._created.labels(scenario)
        child.value += 1.0

    def payment_transition(self, from_status: str, to_status: str) -> None:
        key = (from_status, to_status)
        child = self._transitions.children.get(key)
        if child is None:
            child = self._transitions.labels(*key)
        child.value += 1.0

    def pending_changed(self, delta: int) -> None:
        """Move the pending gauge by ``delta`` (+1 when scheduled, -1 when settled)."""
        self._pending.value += delta

    def payments_dropped(self, count: int) -> None:
        self._dropped.inc(count)

    def payment_rejected(self, reason: str) -> None:
        """Count a refused request by reason: one of REJECT_REASONS, which exist from the start."""
        child = self._rejected_children.get(reason)
        if child is None:
            child = self._rejected.labels(reason)
            self._rejected_children[reason] = child
        child.inc()

    def shutdown_undelivered(self, channel: str, count: int) -> None:
        """Count what the shutdown left undelivered; ``channel`` is one of DELIVERY_CHANNELS."""
        self._shutdown_undelivered.labels(channel).inc(count)

    def shutdown_unresolved(self, count: int) -> None:
        """Count payments the shutdown left without an announced outcome."""
        self._shutdown_unresolved.inc(count)

    # -- the delivery channels (registered when a channel first asks) ---------

    @cached_property
    def webhooks(self) -> WebhookMetrics:
        return WebhookMetrics(self.registry)

    @cached_property
    def events(self) -> EventMetrics:
        return EventMetrics(self.registry)
