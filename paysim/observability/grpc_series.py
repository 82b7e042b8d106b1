"""The go-grpc-prometheus families, exported by one collector from per-method series.

Every call counts as started, as one message received, as handled with its
code, in the handling-time histogram and, when it is an OK unary call, as one
message sent. Two of these five are implied by the others: a call's request
is its one received message (``grpc_server_msg_received`` is
``grpc_server_started``) and an OK unary call's response its one sent message
(``grpc_server_msg_sent`` is ``grpc_server_handled{grpc_code="OK"}`` for a
unary method, 0 for the others). So a call records three things, and the
collector derives the other two families at scrape time, in the order and
with the series prometheus_client's five ``Counter``/``Histogram`` objects
had (``Metrics`` registered them in this order: started, handled, handling
seconds, received, sent). Updated on the trio thread only (see ``series``).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from paysim.observability.series import (
    CounterChild,
    CounterFamily,
    HistogramChild,
    HistogramFamily,
    add_counter,
)

# prometheus.DefBuckets, which go-grpc-prometheus uses for handling time.
HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

_RECEIVED = (
    "grpc_server_msg_received",
    "Total number of RPC stream messages received on the server.",
)
_SENT = ("grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.")


class RpcSeries:
    """One method's series: what ``rpc_started`` and ``rpc_handled`` touch."""

    __slots__ = ("codes", "handling", "started")

    def __init__(self, started: CounterChild, handling: HistogramChild) -> None:
        self.started = started
        self.handling = handling
        self.codes: dict[str, CounterChild] = {}  # grpc_code -> its handled series


class GrpcSeries:
    """The five gRPC server families of one registry; ``method`` gives a method's series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # Not registered themselves: this object collects them, with the two derived.
        self._started = CounterFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", GRPC_LABELS
        )
        self._handled = CounterFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*GRPC_LABELS, "grpc_code"),
        )
        self._handling = HistogramFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been "
            "application-level handled by the server.",
            GRPC_LABELS,
            buckets=HANDLING_BUCKETS,
        )
        self.methods: dict[tuple[str, str, str], RpcSeries] = {}
        registry.register(self)

    def method(self, key: tuple[str, str, str]) -> RpcSeries:
        """The series of one method (``(grpc_type, service, method)``), created at 0 if new."""
        rpc = self.methods.get(key)
        if rpc is None:
            rpc = RpcSeries(self._started.labels(*key), self._handling.labels(*key))
            self.methods[key] = rpc
        return rpc

    def handled(self, key: tuple[str, str, str], rpc: RpcSeries, code: str) -> CounterChild:
        """The handled series of ``code`` for this method, created at 0 if new."""
        child = rpc.codes.get(code)
        if child is None:
            child = rpc.codes[code] = self._handled.labels(*key, code)
        return child

    def describe(self) -> Iterable[Metric]:
        return [
            self._started.family(),
            self._handled.family(),
            self._handling.family(),
            CounterMetricFamily(*_RECEIVED, labels=GRPC_LABELS),
            CounterMetricFamily(*_SENT, labels=GRPC_LABELS),
        ]

    def collect(self) -> Iterable[Metric]:
        received = CounterMetricFamily(*_RECEIVED, labels=GRPC_LABELS)
        sent = CounterMetricFamily(*_SENT, labels=GRPC_LABELS)
        for key, rpc in list(self.methods.items()):
            started = rpc.started
            add_counter(received, GRPC_LABELS, key, started.value, started.created)
            ok = rpc.codes.get("OK")
            value = ok.value if ok is not None and key[0] == "unary" else 0.0
            add_counter(sent, GRPC_LABELS, key, value, started.created)
        return [
            *self._started.collect(),
            *self._handled.collect(),
            *self._handling.collect(),
            received,
            sent,
        ]
