"""paysim_gc_pause_seconds: the collector's time, by generation, in every registry."""

from __future__ import annotations

import gc

from paysim.observability import gc_pauses
from paysim.observability.metrics import Metrics


def _pause(metrics: Metrics, generation: int) -> float:
    value = metrics.registry.get_sample_value(
        "paysim_gc_pause_seconds_total", {"generation": str(generation)}
    )
    assert value is not None
    return value


def test_a_collection_adds_its_time_to_its_generation() -> None:
    metrics = Metrics()
    gc.disable()  # only the collection below, none set off by the allocations
    try:
        before = [_pause(metrics, g) for g in range(3)]
        garbage: list[list[int]] = [
            [] for _ in range(10_000)
        ]  # something for the collection to walk
        gc.collect(1)
        del garbage
        after = [_pause(metrics, g) for g in range(3)]
    finally:
        gc.enable()
    assert after[1] > before[1]
    assert after[0] == before[0]
    assert after[2] == before[2]


def test_installed_once_however_many_registries() -> None:
    Metrics()
    Metrics()
    gc_pauses.install()
    assert gc.callbacks.count(gc_pauses._on_collection) == 1


def test_every_registry_reads_the_same_process_totals() -> None:
    first, second = Metrics(), Metrics()
    gc.collect(2)
    assert _pause(first, 2) == _pause(second, 2) == gc_pauses.pause_seconds()[2] > 0
