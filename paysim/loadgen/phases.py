"""A fault timeline's phases on the run's clock: which phase was in force when.

``paysim bench --timeline`` starts the timeline on the server just before the
load (``fault_admin.py``); ``PhaseClock`` then places its phases on the load's
clock, in seconds from the common start ``t0``: ``start_s`` is when the
timeline began (a little before ``t0``: negative). Calls are given to the
phase in force when they were *sent* (the server decides a call's fault when
it arrives), as an index into ``names``; the last name, ``BASE``, is the base
plan, in force before the timeline and after its last phase (unless it
repeats). Pure values: workers receive one through the pipe.

``summaries`` turns what the workers recorded per phase (``results.PhaseStats``)
into the report's per-phase rows; ``bands`` lists the phases' stretches of the
run for the charts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from paysim.loadgen.results import PhaseStats

BASE = "(base plan)"
MAX_BANDS = 500  # a repeating timeline of tiny phases would otherwise draw thousands


@dataclass(frozen=True)
class PhaseClock:
    """The phases' names and durations, and when the timeline started (from ``t0``)."""

    names: tuple[str, ...]  # the timeline's phases, then BASE
    durations: tuple[float, ...]
    start_s: float
    repeat: bool = False

    @classmethod
    def of(cls, phases: list[tuple[str, float]], start_s: float, repeat: bool) -> PhaseClock:
        names = (*(name for name, _ in phases), BASE)
        return cls(names, tuple(duration for _, duration in phases), start_s, repeat)

    @property
    def base(self) -> int:
        return len(self.durations)

    @property
    def period_s(self) -> float:
        return sum(self.durations)

    @property
    def end_s(self) -> float:
        """When the last phase ends (from ``t0``); infinite for a repeating timeline."""
        return math.inf if self.repeat else self.start_s + self.period_s

    def index_at(self, offset_s: float) -> int:
        """The phase in force ``offset_s`` seconds after ``t0`` (``base`` outside the timeline)."""
        return self.position(offset_s)[0]

    def position(self, offset_s: float) -> tuple[int, float]:
        """The phase in force ``offset_s`` after ``t0``, and the seconds it has been in force
        (for the base plan: since the timeline ended, or since ``t0`` before it began)."""
        into = offset_s - self.start_s
        if into < 0:
            return self.base, offset_s
        if not self.repeat and into >= self.period_s:
            return self.base, into - self.period_s
        into = math.fmod(into, self.period_s)
        for index, duration in enumerate(self.durations):
            if into < duration:
                return index, into
            into -= duration
        last = len(self.durations) - 1  # rounding at the very end of a cycle
        return last, self.durations[last]

    def name_at(self, offset_s: float) -> str:
        return self.names[self.index_at(offset_s)]

    def spans(self, until_s: float) -> list[tuple[int, float, float]]:
        """(phase, from, to) for each stretch of ``[0, until_s]``, base plan included, in order."""
        out: list[tuple[int, float, float]] = []
        start = self.start_s
        if self.repeat and start < 0:  # skip whole cycles that ended before t0
            start += math.floor(-start / self.period_s) * self.period_s
        if start > 0:
            out.append((self.base, 0.0, min(start, until_s)))
        while start < until_s and len(out) < MAX_BANDS:
            for index, duration in enumerate(self.durations):
                low, high = max(start, 0.0), min(start + duration, until_s)
                if high > low:
                    out.append((index, low, high))
                start += duration
            if not self.repeat:
                break
        if not self.repeat and self.end_s < until_s:
            out.append((self.base, max(self.end_s, 0.0), until_s))
        return out

    def exposure(self, until_s: float) -> list[float]:
        """Seconds each phase (then the base plan) was in force during ``[0, until_s]``."""
        seconds = [0.0] * len(self.names)
        if self.repeat and until_s - self.start_s > MAX_BANDS * self.period_s:
            return self._exposure_by_cycles(until_s)
        for index, low, high in self.spans(until_s):
            seconds[index] += high - low
        return seconds

    def _exposure_by_cycles(self, until_s: float) -> list[float]:
        """Long runs of a repeating timeline: counted by whole cycles, not stretch by stretch."""
        seconds = [*self._played(until_s - self.start_s), max(self.start_s, 0.0)]
        if self.start_s < 0:  # the part played before t0 is not the run's
            before = self._played(-self.start_s)
            seconds = [s - b for s, b in zip(seconds, [*before, 0.0], strict=True)]
        return seconds

    def _played(self, length_s: float) -> list[float]:
        """Seconds each phase was in force during the timeline's first ``length_s``."""
        cycles, rest = divmod(max(length_s, 0.0), self.period_s)
        seconds = [cycles * d for d in self.durations]
        for index, duration in enumerate(self.durations):
            seconds[index] += min(duration, max(rest, 0.0))
            rest -= duration
        return seconds


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1e3, 4)


def summaries(
    clock: PhaseClock, recorded: dict[int, PhaseStats], wall_s: float
) -> list[dict[str, Any]]:
    """One row per phase of the timeline (and the base plan, if calls were sent under it)."""
    exposure = clock.exposure(wall_s)
    rows = []
    for index, name in enumerate(clock.names):
        stats = recorded.get(index, PhaseStats())
        seconds = exposure[index]
        if index == clock.base and not stats.latency.count:
            continue  # the tail after the last phase while the last answers came in
        errors = {code: n for code, n in stats.codes.most_common() if code != "OK"}
        rows.append(
            {
                "name": name,
                "index": index,
                "seconds": round(seconds, 4),
                "calls": stats.latency.count,
                "rps": round(stats.latency.count / seconds, 2) if seconds > 0 else None,
                "ok": stats.codes.get("OK", 0),
                "errors": sum(errors.values()),
                "errors_by_code": errors,
                "latency_ms": {
                    "p50": _ms(stats.latency.percentile(0.5)),
                    "p99": _ms(stats.latency.percentile(0.99)),
                },
            }
        )
    return rows


def bands(clock: PhaseClock, until_s: float) -> list[dict[str, Any]]:
    """The phases' stretches of the run, for the charts: name, from_s, to_s."""
    return [
        {
            "name": clock.names[index],
            "index": index,
            "from_s": round(low, 4),
            "to_s": round(high, 4),
        }
        for index, low, high in clock.spans(until_s)
    ]
