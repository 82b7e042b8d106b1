"""What a run measured: latency histograms, status codes, errors, a per-second timeline.

``Histogram`` is HDR-like: logarithmic buckets 1 % wide from 1 µs up, kept
sparse in a dict, so memory does not grow with the number of requests (an hour
at 5,000 req/s is a few hundred buckets, not 18 million floats) and two
histograms merge by adding counts. Percentiles are read to within 0.5 % (the
middle of the bucket, clamped to the exact minimum and maximum, which are kept
alongside with the exact sum). 0.5 % is far below what separates two runs of
the same benchmark on a shared machine.

Percentiles use the nearest-rank definition: ``percentile(q)`` is the smallest
recorded value such that at least ``q`` of all values are at or below it
(also what ``paysim.benchmarks.h2load`` computes from h2load's log).

``Stats`` is one process's record of one phase; workers send theirs to the
parent through a pipe (they pickle small) and the parent merges them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

PERCENTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99, 0.999)
_MIN_S = 1e-6
_GROWTH = 1.01
_INV_LOG_GROWTH = 1.0 / math.log(_GROWTH)
MAX_ERROR_KINDS = 100  # distinct error messages kept; the rest are counted together
OTHER_ERRORS = "(other error messages)"


def percentile_label(q: float) -> str:
    """``0.999`` -> ``"p99.9"``, ``0.5`` -> ``"p50"``."""
    return "p" + f"{q * 100:.1f}".rstrip("0").rstrip(".")


@dataclass
class Histogram:
    """Latencies in seconds, in 1 % log buckets, with the exact count, sum, min and max."""

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = 0.0

    def record(self, seconds: float) -> None:
        index = int(math.log(seconds / _MIN_S) * _INV_LOG_GROWTH) if seconds > _MIN_S else 0
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def _value(self, index: int) -> float:
        """A bucket's representative value: its geometric middle, within [min, max]."""
        middle: float = _MIN_S * _GROWTH ** (index + 0.5)
        return min(max(middle, self.min), self.max)

    def percentile(self, q: float) -> float:
        """Nearest rank: the smallest value with at least ``q`` of all values at or below."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q * self.count - 1e-9))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return self._value(index)
        return self.max  # pragma: no cover - rank never exceeds count

    def linear_bins(self, n_bins: int) -> list[tuple[float, int]]:
        """``n_bins`` equal-width bins from min to max: (upper edge, count), as ghz draws them."""
        if not self.count:
            return []
        width = (self.max - self.min) / n_bins
        counts = [0] * n_bins
        for index, n in self.buckets.items():
            value = self._value(index)
            slot = int((value - self.min) / width) if width > 0 else 0
            counts[min(max(slot, 0), n_bins - 1)] += n
        return [(self.min + width * (i + 1), counts[i]) for i in range(n_bins)]


@dataclass
class Second:
    """One second of the timeline: calls that ended in it."""

    ok: int = 0
    errors: int = 0
    latency_total: float = 0.0


@dataclass
class PhaseStats:
    """The calls sent during one phase of a fault timeline (``phases.py``)."""

    latency: Histogram = field(default_factory=Histogram)
    codes: Counter[str] = field(default_factory=Counter)

    def merge(self, other: PhaseStats) -> None:
        self.latency.merge(other.latency)
        self.codes.update(other.codes)


@dataclass
class Stats:
    """One phase of one worker (or, merged, of all of them).

    ``latency`` is measured from the intended send time in open loop (so
    queueing inside the generator counts: no coordinated omission) and from
    the send in closed loop; ``service`` is always from the actual send.
    ``lateness`` (open loop only) is how late the scheduler dispatched each
    request: a large value means the generator could not keep the rate.
    ``cpu_s`` is the process CPU time over the phase; ``wall_s`` the phase's
    length from the common start to the last answer. ``phases`` (with
    ``--timeline`` only) splits the calls by the phase in force when each was
    sent: the index ``phases.PhaseClock.index_at`` gave.
    """

    latency: Histogram = field(default_factory=Histogram)
    service: Histogram = field(default_factory=Histogram)
    lateness: Histogram = field(default_factory=Histogram)
    codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, Second] = field(default_factory=dict)
    sent: int = 0
    send_span_s: float = 0.0  # open loop: from t0 to the last dispatch
    wall_s: float = 0.0
    cpu_s: float = 0.0
    cpu_by_worker: list[float] = field(default_factory=list)
    wall_by_worker: list[float] = field(default_factory=list)
    phases: dict[int, PhaseStats] = field(default_factory=dict)

    def record(
        self,
        start_offset_s: float,
        latency_s: float,
        service_s: float,
        code: str,
        phase: int | None = None,
    ) -> None:
        """One finished call; ``start_offset_s`` is when it ended, from the phase start;
        ``phase``: the timeline's phase in force when it was sent, if one plays."""
        if phase is not None:
            of_phase = self.phases.get(phase)
            if of_phase is None:
                of_phase = self.phases[phase] = PhaseStats()
            of_phase.latency.record(latency_s)
            of_phase.codes[code] += 1
        self.latency.record(latency_s)
        self.service.record(service_s)
        self.codes[code] += 1
        second = self.timeline.get(int(start_offset_s))
        if second is None:
            second = self.timeline[int(start_offset_s)] = Second()
        if code == "OK":
            second.ok += 1
        else:
            second.errors += 1
        second.latency_total += latency_s

    def offered_rps(self, rps: float) -> float:
        """Open loop: the rate really offered (``rps`` if every call left on time)."""
        return self.sent / (self.send_span_s + 1.0 / rps) if self.sent else 0.0

    def record_error(self, message: str) -> None:
        if message not in self.errors and len(self.errors) >= MAX_ERROR_KINDS:
            message = OTHER_ERRORS
        self.errors[message] += 1

    @property
    def count(self) -> int:
        return self.latency.count

    @property
    def error_count(self) -> int:
        return self.count - self.codes.get("OK", 0)

    def merge(self, other: Stats) -> None:
        """Add ``other`` (another worker's record of the same phase) into this one."""
        self.latency.merge(other.latency)
        self.service.merge(other.service)
        self.lateness.merge(other.lateness)
        self.codes.update(other.codes)
        for message, n in other.errors.items():
            if message not in self.errors and len(self.errors) >= MAX_ERROR_KINDS:
                message = OTHER_ERRORS
            self.errors[message] += n
        for t, s in other.timeline.items():
            mine = self.timeline.setdefault(t, Second())
            mine.ok += s.ok
            mine.errors += s.errors
            mine.latency_total += s.latency_total
        for index, of_phase in other.phases.items():
            self.phases.setdefault(index, PhaseStats()).merge(of_phase)
        self.sent += other.sent
        self.send_span_s = max(self.send_span_s, other.send_span_s)
        self.wall_s = max(self.wall_s, other.wall_s)
        self.cpu_s += other.cpu_s
        self.cpu_by_worker += other.cpu_by_worker or [other.cpu_s]
        self.wall_by_worker += other.wall_by_worker or [other.wall_s]


def merge_all(parts: list[Stats]) -> Stats:
    merged = Stats()
    for part in parts:
        merged.merge(part)
    return merged
