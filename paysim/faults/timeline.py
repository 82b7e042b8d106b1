"""Fault timelines ("storm profiles"): phases of fault plans on a clock, from TOML.

A timeline file::

    name = "ticket-on-sale"
    repeat = false                   # true: start over after the last phase
    [[phases]]
    name = "queue-opens"
    duration_s = 60
    [phases.rpcs."*"]                # the phase's plan, as in plan.py
    latency = { distribution = "lognormal", p50_ms = 300, p99_ms = 2000 }
    [[phases]]
    name = "webhooks-lag"
    duration_s = 30
    [phases.webhooks]                # webhooks that become due wait 30 s
    lag_ms = 30000

A phase without ``rpcs`` or ``webhooks`` injects nothing. When the last phase ends the policy
returns to its base plan (the settings' or the last ``PUT /admin/faults``).

``TimelinePlayer.run`` is the player's task (the wiring starts it in its own
nursery); ``start`` replaces whatever plays, ``stop`` ends it. Each phase sets
``paysim_api_fault_phase{timeline,phase}`` and logs ``fault phase``. Phases run
on trio's clock (real time, or a test's MockClock), not the simulated one.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from paysim.faults.metrics import FaultMetrics
from paysim.faults.plan import FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy

log = structlog.get_logger("paysim.faults")

EXAMPLES = ("ticket_on_sale", "pg_partial_outage", "regional_blip")
MAX_PHASES = 100


@dataclass(frozen=True)
class Phase:
    name: str
    duration_s: float
    plan: FaultPlan


@dataclass(frozen=True)
class Timeline:
    name: str
    phases: tuple[Phase, ...]
    repeat: bool = False

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    @classmethod
    def from_toml(cls, text: str) -> Timeline:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"timeline: not valid TOML ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        unknown = sorted(set(data) - {"name", "description", "repeat", "phases"})
        if unknown:
            raise PlanError(f"timeline: unknown field {unknown[0]!r}")
        phases = data.get("phases")
        if not isinstance(phases, list) or not 0 < len(phases) <= MAX_PHASES:
            raise PlanError(f"timeline.phases: 1 to {MAX_PHASES} [[phases]] tables")
        return cls(
            name=_text(data.get("name", "timeline"), "timeline.name"),
            phases=tuple(_phase(p, i) for i, p in enumerate(phases)),
            repeat=data.get("repeat", False) is True,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repeat": self.repeat,
            "phases": [
                {"name": p.name, "duration_s": p.duration_s, **p.plan.to_dict()}
                for p in self.phases
            ],
        }


def _phase(data: Any, index: int) -> Phase:
    where = f"timeline.phases[{index}]"
    if not isinstance(data, dict):
        raise PlanError(f"{where}: a table")
    duration = data.get("duration_s")
    if not isinstance(duration, int | float) or isinstance(duration, bool) or not duration > 0:
        raise PlanError(f"{where}.duration_s: a positive number of seconds")
    plan = {k: v for k, v in data.items() if k not in ("name", "duration_s")}
    try:
        parsed = FaultPlan.from_dict(plan)
    except PlanError as exc:
        raise PlanError(f"{where}: {exc}") from None
    return Phase(_text(data.get("name", f"phase-{index + 1}"), f"{where}.name"), duration, parsed)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not value.isprintable():
        raise PlanError(f"{where}: a printable name of 1 to 64 characters")
    return value


def load_timeline(name_or_path: str) -> Timeline:
    """A shipped example by name (``EXAMPLES``), else a TOML file at that path."""
    if name_or_path in EXAMPLES:
        files = importlib.resources.files("paysim.faults") / "examples"
        return Timeline.from_toml((files / f"{name_or_path}.toml").read_text("utf-8"))
    try:
        text = Path(name_or_path).read_text("utf-8")
    except OSError as exc:
        raise PlanError(f"timeline {name_or_path!r}: {exc.strerror}") from None
    return Timeline.from_toml(text)


class TimelinePlayer:
    """Plays one timeline at a time into a ``FaultPolicy`` (see the module docstring)."""

    def __init__(self, policy: FaultPolicy, metrics: FaultMetrics) -> None:
        self._policy = policy
        self._metrics = metrics
        self.timeline: Timeline | None = None
        self.phase_index = -1
        self._phase_started = 0.0
        self._queued: Timeline | None = None
        self._scope = trio.CancelScope()
        self._wake = trio.Event()

    def start(self, timeline: Timeline) -> None:
        """Play ``timeline`` from its first phase (in force now), ending whatever plays."""
        self._leave()
        self._queued = timeline
        self._scope.cancel()
        self._enter(timeline, 0)
        self._wake.set()

    def stop(self) -> None:
        """End the timeline now: the base plan is in force again."""
        self._queued = None
        self._scope.cancel()
        self._leave()

    def _enter(self, timeline: Timeline, index: int, started: float | None = None) -> None:
        phase = timeline.phases[index]
        self.timeline, self.phase_index = timeline, index
        self._phase_started = trio.current_time() if started is None else started
        self._policy.set_plan(phase.plan)
        self._metrics.phase(timeline.name, phase.name)
        log.info(
            "fault phase",
            timeline=timeline.name,
            phase=phase.name,
            index=index,
            duration_s=phase.duration_s,
        )

    def _leave(self) -> None:
        if self.timeline is None:
            return
        log.info("fault timeline ended", timeline=self.timeline.name)
        self._policy.set_plan(self._policy.base)
        self.timeline, self.phase_index = None, -1
        self._metrics.phase(None, None)

    def describe(self) -> dict[str, Any] | None:
        timeline = self.timeline
        if timeline is None:
            return None
        phase = timeline.phases[self.phase_index]
        return {
            "name": timeline.name,
            "phase": phase.name,
            "phase_index": self.phase_index,
            "phase_elapsed_s": round(trio.current_time() - self._phase_started, 3),
            "phases": [{"name": p.name, "duration_s": p.duration_s} for p in timeline.phases],
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            timeline, self._queued = self._queued, None
            if timeline is None:
                continue
            with trio.CancelScope() as self._scope:
                await self._play(timeline)

    async def _play(self, timeline: Timeline) -> None:
        """Phase 0 is in force already (``start``); each later one when its turn comes."""
        first = True
        ends = self._phase_started  # each phase ends on the timeline's clock, not
        try:  # its task's wake-up: late wake-ups do not add up over the phases
            while True:
                for index, phase in enumerate(timeline.phases):
                    if not first:
                        self._enter(timeline, index, started=ends)
                    first = False
                    ends += phase.duration_s
                    await trio.sleep_until(ends)
                if not timeline.repeat:
                    break
        finally:
            if self.timeline is timeline:
                self._leave()
