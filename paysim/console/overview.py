"""The console's live overview: one sample a second, the last five minutes.

``run`` samples once a second while some page listens: creates and
settlements (COMPLETED or FAILED) from the recorder, webhook deliveries
(delivered, and every other finished outcome as failed) and the webhook lag
histogram from the process's metrics registry. Rates are the differences
between samples; the lag p99 is read from the histogram's buckets over the
last minute (the upper bound of the bucket that holds the 99th percentile).
Costs nothing when no page is open.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, NoReturn

import trio
from prometheus_client import CollectorRegistry

from paysim.console.hub import Hub
from paysim.console.recorder import Recorder

_FAILED_OUTCOMES = ("gave_up", "gone", "blocked", "unsendable")
_WINDOW = 300  # samples kept (seconds)
_P99_WINDOW = 60


@dataclass(frozen=True, slots=True)
class Sample:
    created: int
    settled: int
    delivered: float
    failed: float
    lag_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


class Overview:
    def __init__(self, recorder: Recorder, registry: CollectorRegistry, hub: Hub) -> None:
        self._recorder, self._registry, self._hub = recorder, registry, hub
        self._samples: deque[Sample] = deque(maxlen=_WINDOW + 1)

    def sample(self) -> Sample:
        reg = self._registry

        def value(name: str, labels: dict[str, str] | None = None) -> float:
            return reg.get_sample_value(name, labels or {}) or 0.0

        buckets: list[tuple[float, float]] = []
        for metric in reg.collect():
            if metric.name == "paysim_webhook_lag_seconds":
                for s in metric.samples:
                    if s.name.endswith("_bucket"):
                        buckets.append((float(s.labels["le"]), s.value))
        return Sample(
            created=self._recorder.created_total,
            settled=self._recorder.settled_total,
            delivered=value("paysim_webhook_deliveries_total", {"outcome": "delivered"}),
            failed=sum(
                value("paysim_webhook_deliveries_total", {"outcome": o}) for o in _FAILED_OUTCOMES
            ),
            lag_buckets=tuple(buckets),
        )

    def tick(self) -> None:
        self._samples.append(self.sample())

    def snapshot(self) -> dict[str, Any]:
        """Per-second series (oldest first) and the current figures."""
        s = list(self._samples)
        pairs = list(itertools.pairwise(s))
        counts = self._recorder.counts
        return {
            "creates": [b.created - a.created for a, b in pairs],
            "settled": [b.settled - a.settled for a, b in pairs],
            "delivered": [b.delivered - a.delivered for a, b in pairs],
            "failed": [b.failed - a.failed for a, b in pairs],
            "pending": counts["PENDING"] + counts["PROCESSING"],
            "counts": {k: v for k, v in counts.items() if v > 0},
            "lag_p99_s": _p99(s[-_P99_WINDOW - 1] if len(s) > _P99_WINDOW else s[0], s[-1])
            if s
            else None,
        }

    async def run(self) -> NoReturn:
        while True:
            # No page open: no samples, and no wake-ups (a virtual clock in a
            # test would otherwise spin through every second of its hours).
            await self._hub.watching.wait_value(lambda n: n > 0)
            self.tick()
            self._hub.publish("overview", "overview", json.dumps(self.snapshot()))
            await trio.sleep(1.0)


def _p99(first: Sample, last: Sample) -> float | None:
    """The 99th percentile's bucket bound between two samples; None without deliveries."""
    before = dict(first.lag_buckets)
    deltas = [(le, count - before.get(le, 0.0)) for le, count in last.lag_buckets]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    for le, count in deltas:
        if count >= 0.99 * total:
            return None if math.isinf(le) else le
    return None
