"""Time the process spends in the garbage collector: ``paysim_gc_pause_seconds``.

prometheus_client's ``python_gc_*`` series count collections and the objects
they freed, not how long they held the process; that time is what a caller of
a busy simulator waits through, and what GC_THRESHOLDS trades against
(``paysim/runtime.py``). One ``gc.callbacks`` entry, installed once per process
(``install``; idempotent), adds each collection's wall time to its generation's
total; ``GcPauseCollector`` exports the totals. A collection costs the callback
two ``perf_counter`` calls, nothing per object.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_seconds = [0.0, 0.0, 0.0]  # per generation collected (0 young, 2 full)
_started = [0.0]


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    generation = info.get("generation", 2)
    if 0 <= generation < len(_seconds):
        _seconds[generation] += time.perf_counter() - _started[0]


def install() -> None:
    """Start timing collections in this process (again: nothing more)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def pause_seconds() -> tuple[float, ...]:
    """Seconds spent in collections of each generation since ``install``."""
    return tuple(_seconds)


class GcPauseCollector(Collector):
    """``paysim_gc_pause_seconds_total{generation}``, from this process's totals."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "paysim_gc_pause_seconds",
            "Wall time spent in Python garbage collections, by the generation collected.",
            labels=["generation"],
        )
        for generation, seconds in enumerate(pause_seconds()):
            family.add_metric([str(generation)], seconds)
        yield family
