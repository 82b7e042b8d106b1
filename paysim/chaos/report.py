"""A chaos run's results: the value (``Result``), the text table, and JSON.

The table has two parts: the faults (what was asked for and the evidence
that it really happened: a fault that was on but never fired proves nothing,
and is reported as a warning) and the invariants (checked, violations,
PASS/FAIL/SKIP, with a few examples of each violation).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from paysim.chaos.invariants import Check


@dataclass
class FaultRow:
    name: str
    setting: str  # what was asked for, e.g. "p=0.05", "2 x 1.5 s", "off"
    enabled: bool
    exercised: int  # how many times it happened (the main evidence)
    evidence: str  # the evidence in words


@dataclass
class Window:
    kind: str  # "receiver down", "EventBridge outage"
    start_s: float  # from the start of the run
    end_s: float


@dataclass
class Result:
    title: str
    seed: int
    command: str  # how to repeat this run
    settings: dict[str, Any]
    wall_s: float
    phases: dict[str, float]  # phase -> seconds
    counts: dict[str, Any]
    faults: list[FaultRow]
    windows: list[Window]
    checks: list[Check]
    timeline: list[dict[str, float]]  # one point a second: t and counters
    sigterm_at_s: float | None = None
    load_end_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


def to_json(result: Result) -> str:
    doc = dataclasses.asdict(result)
    doc["passed"] = result.passed
    return json.dumps(doc, indent=2, default=str)


def write_json(result: Result, path: Path) -> None:
    path.write_text(to_json(result) + "\n")


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def print_table(result: Result, out: TextIO) -> None:
    w = out.write
    w(f"\n{result.title}\n")
    w(f"  repeat with: {result.command}\n\n")
    w(f"  {'fault':<28}{'setting':<16}{'happened':>10}  evidence\n")
    for f in result.faults:
        happened = _n(f.exercised) if f.enabled else "-"
        w(f"  {f.name:<28}{f.setting:<16}{happened:>10}  {f.evidence}\n")
    w(f"\n  {'invariant':<64}{'checked':>9}{'violations':>12}  result\n")
    for c in result.checks:
        checked = _n(c.checked) if c.status != "skip" or c.checked else "-"
        w(f"  {c.title:<64}{checked:>9}{_n(c.violations):>12}  {c.status.upper()}\n")
        if c.detail:
            w(f"      {c.detail}\n")
        for example in c.examples:
            w(f"      e.g. {example}\n")
    for warning in result.warnings:
        w(f"\n  warning: {warning}")
    if result.warnings:
        w("\n")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items())
    failed = sum(c.status == "fail" for c in result.checks)
    verdict = "PASS" if result.passed else f"FAIL ({failed} invariants violated)"
    w(f"\n  result: {verdict}; wall time {result.wall_s:.1f} s ({phases})\n")
