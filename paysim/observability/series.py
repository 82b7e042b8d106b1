"""Counters, gauges and histograms kept as plain Python numbers, exported by a collector.

prometheus_client's metric objects check their labels and take a
``threading.Lock`` on every ``inc``/``observe`` (0.3 µs an ``inc``, 0.7 µs an
``observe`` on the 2-core machine), and the whole path records about fifteen
of them per payment. The series here keep each value as a float on a slotted
object, so recording is one addition, and turn them into the same metric
families when the registry is collected: names, HELP, TYPE, label names and
order, bucket bounds, ``_created`` and every sample value as
prometheus_client's own ``Counter``, ``Gauge`` and ``Histogram`` would give
them. ``tests/unit/observability/test_series.py`` holds them to that, against
prometheus_client's output for the same operations.

Threads: nothing here is locked. A series may only be updated from the trio
thread, which is where every caller records today (the event publisher counts
after ``trio.to_thread.run_sync`` has returned, never inside the boto3
thread), and a scrape reads it there too. A metric that a worker thread
updates must stay a prometheus_client object.

Each family registers itself with the ``CollectorRegistry`` it is given, as
prometheus_client's objects do; ``labels`` creates a child the first time a
label tuple is seen, so label values must come from small fixed sets.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

# prometheus_client's own switch, read the way it reads it (at import).
USE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in (
    "true",
    "1",
    "t",
)


class CounterChild:
    """One counter series: ``value`` only ever grows."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class GaugeChild:
    """One gauge series."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value += -amount  # as prometheus_client does: the same float, bit for bit

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramChild:
    """One histogram series: per-bucket (not cumulative) counts, and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds  # shared with the family; ends with +Inf
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount  # before the buckets, as prometheus_client does
        bounds = self.bounds
        i = bisect_left(bounds, amount)
        # The first bound >= amount. NaN lands at 0 and fails the check, so it
        # is counted in no bucket, as prometheus_client's loop does it.
        if amount <= bounds[i]:
            self.counts[i] += 1.0


C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[C]):
    """A metric family's children by label values; a ``Collector`` for the registry."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # Read by the hot path directly (``children.get(key)``); only ``labels`` adds.
        self.children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self.children[()] = self._child()
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> C:
        """The child for these label values, created (with its series at 0) if new."""
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames) or not values:
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self.children[values] = self._child()
        return child

    def _child(self) -> C:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        return [self.family()]

    def collect(self) -> Iterable[Metric]:
        family = self.family()
        for values, child in list(self.children.items()):
            self.add(family, values, child)
        return [family]

    def family(self) -> Metric:
        raise NotImplementedError

    def add(self, family: Metric, values: tuple[str, ...], child: C) -> None:
        raise NotImplementedError


class CounterFamily(_Family[CounterChild]):
    """Exports as prometheus_client's ``Counter``: ``<name>_total`` and ``<name>_created``."""

    def _child(self) -> CounterChild:
        return CounterChild()

    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def add(self, family: Metric, values: tuple[str, ...], child: CounterChild) -> None:
        add_counter(family, self.labelnames, values, child.value, child.created)


def add_counter(
    family: Metric,
    labelnames: tuple[str, ...],
    values: tuple[str, ...],
    value: float,
    created: float,
) -> None:
    """Append one counter series' samples, in prometheus_client's order."""
    labels = dict(zip(labelnames, values, strict=True))
    family.samples.append(Sample(family.name + "_total", labels, value))
    if USE_CREATED:
        family.samples.append(Sample(family.name + "_created", dict(labels), created))


class GaugeFamily(_Family[GaugeChild]):
    """Exports as prometheus_client's ``Gauge`` (no ``_created``)."""

    def _child(self) -> GaugeChild:
        return GaugeChild()

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def add(self, family: Metric, values: tuple[str, ...], child: GaugeChild) -> None:
        labels = dict(zip(self.labelnames, values, strict=True))
        family.samples.append(Sample(self.name, labels, child.value))


class HistogramFamily(_Family[HistogramChild]):
    """Exports as prometheus_client's ``Histogram`` with the same ``buckets``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float],
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or bounds[0] < 0:
            raise ValueError("buckets must be sorted and not negative")
        if bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = bounds
        # The ``le`` label as prometheus_client writes it ("0.005", "1.0", "+Inf").
        self._le: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def add(self, family: Metric, values: tuple[str, ...], child: HistogramChild) -> None:
        assert isinstance(family, HistogramMetricFamily)
        acc = 0.0
        cumulative = []
        for le, count in zip(self._le, child.counts, strict=True):
            acc += count
            cumulative.append((le, acc))
        family.add_metric(values, cumulative, child.sum)
        if USE_CREATED:
            labels = dict(zip(self.labelnames, values, strict=True))
            family.samples.append(Sample(self.name + "_created", labels, child.created))
