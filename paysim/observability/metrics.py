"""Prometheus metrics for paysim, as an object that owns its registry.

``app.run`` builds one ``Metrics`` and passes it to whoever records (the gRPC
server, the payment service, the HTTP endpoint); tests build a fresh one each,
so nothing is ever registered in prometheus_client's global ``REGISTRY``.

The gRPC metrics use go-grpc-prometheus' names and labels so that existing
dashboards work unchanged; paysim's own metrics are prefixed ``paysim_``.

Recording sits on the hot path (thousands of calls per second), so each
labelled child is looked up once and then cached in a dict keyed by its label
tuple: ``.labels()`` validates and locks on every call, a dict lookup does not.
Label values must come from small fixed sets (gRPC method names, status and
code names, route names): never pass client-controlled text as a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

import paysim
from paysim.domain.models import SCENARIO_NAMES
from paysim.observability.delivery_metrics import EventMetrics, WebhookMetrics

# prometheus.DefBuckets, which go-grpc-prometheus uses for handling time.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Known values are pre-created so that their series exist (at 0) from the start.
SCENARIOS = SCENARIO_NAMES
DELIVERY_CHANNELS = ("webhook", "event")

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


@dataclass(frozen=True, slots=True)
class _RpcChildren:
    """The per-method children touched by every call of one gRPC method."""

    started: Counter
    received: Counter
    sent: Counter
    handling: Histogram


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
        self._grpc_started = Counter(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            _GRPC_LABELS,
            registry=reg,
        )
        self._grpc_handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=reg,
        )
        self._grpc_handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            _GRPC_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=reg,
        )
        self._grpc_received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            _GRPC_LABELS,
            registry=reg,
        )
        self._grpc_sent = Counter(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server.",
            _GRPC_LABELS,
            registry=reg,
        )

        self._created = Counter(
            "paysim_payments_created",
            "Payments created, by requested scenario.",
            ("scenario",),
            registry=reg,
        )
        self._transitions = Counter(
            "paysim_payment_transitions",
            "Payment status transitions.",
            ("from_status", "to_status"),
            registry=reg,
        )
        self._pending = Gauge(
            "paysim_payments_pending",
            "Payments waiting for their simulated outcome.",
            registry=reg,
        )
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
        self._rpc_children: dict[tuple[str, str, str], _RpcChildren] = {}
        self._handled_children: dict[tuple[str, str, str, str], Counter] = {}
        self._created_children: dict[str, Counter] = {}
        self._transition_children: dict[tuple[str, str], Counter] = {}
        self._rejected_children: dict[str, Counter] = {}
        for scenario in SCENARIOS:
            self._created_child(scenario)

    # -- gRPC (go-grpc-prometheus) ---------------------------------------

    def _rpc(self, key: tuple[str, str, str]) -> _RpcChildren:
        children = self._rpc_children.get(key)
        if children is None:
            children = _RpcChildren(
                started=self._grpc_started.labels(*key),
                received=self._grpc_received.labels(*key),
                sent=self._grpc_sent.labels(*key),
                handling=self._grpc_handling.labels(*key),
            )
            self._rpc_children[key] = children
        return children

    def rpc_started(self, grpc_type: str, service: str, method: str) -> None:
        """Count a started call, and its request message as received."""
        children = self._rpc((grpc_type, service, method))
        children.started.inc()
        children.received.inc()

    def rpc_handled(
        self, grpc_type: str, service: str, method: str, code: str, seconds: float
    ) -> None:
        """Count a finished call by gRPC code name (``"OK"``, ``"INVALID_ARGUMENT"``...).

        An OK unary call has sent exactly one message; other calls are not
        counted as sending (streaming handlers know better and do not use this).
        """
        key = (grpc_type, service, method)
        children = self._rpc(key)
        children.handling.observe(seconds)
        handled_key = (grpc_type, service, method, code)
        handled = self._handled_children.get(handled_key)
        if handled is None:
            handled = self._grpc_handled.labels(*handled_key)
            self._handled_children[handled_key] = handled
        handled.inc()
        if code == "OK" and grpc_type == "unary":
            children.sent.inc()

    # -- paysim ------------------------------------------------------------

    def _created_child(self, scenario: str) -> Counter:
        child = self._created_children.get(scenario)
        if child is None:
            child = self._created.labels(scenario)
            self._created_children[scenario] = child
        return child

    def payment_created(self, scenario: str) -> None:
        self._created_child(scenario).inc()

    def payment_transition(self, from_status: str, to_status: str) -> None:
        key = (from_status, to_status)
        child = self._transition_children.get(key)
        if child is None:
            child = self._transitions.labels(*key)
            self._transition_children[key] = child
        child.inc()

    def pending_changed(self, delta: int) -> None:
        """Move the pending gauge by ``delta`` (+1 when scheduled, -1 when settled)."""
        self._pending.inc(delta)

    def payments_dropped(self, count: int) -> None:
        self._dropped.inc(count)

    def payment_rejected(self, reason: str) -> None:
        """Count a refused request: ``"overload"``, ``"invalid_argument"``..."""
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
