"""``--timeline``: start a fault timeline on the server just before the load, stop it after.

Theory of operation. ``playing`` is a context manager around the measured
load. On entry it ``PUT /admin/faults {"timeline": {...}, "seed": N}`` (the
timeline inline, as read locally by the options), then reads ``GET
/admin/faults`` back: the server must be playing this timeline, in the phase
and at the elapsed time our own estimate of its start predicts (the PUT's
midpoint; within ``CHECK_SLACK_S`` plus the round trips), else the report
carries a warning. On exit, whatever happened (an error, Ctrl-C), it reads
the phase once more (``check_end``, when the load ended normally) and ``PUT
/admin/faults {"timeline": null}``: the server's base plan is in force again.

Policy decisions:

* A server that has no ``/admin/faults`` (API faults off, which production
  always is) answers 404: the run stops before the load, exit 1, saying how
  to turn them on. A refused body (400, 403, 415) shows the server's reason.
* A failed stop does not hide the run's own outcome: it becomes a warning on
  stderr naming the command that stops the timeline by hand.
* Blocking (httpx's sync client), as the rest of the orchestration in
  ``main.py``; every request has a short timeout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from paysim.faults.timeline import Timeline
from paysim.loadgen.phases import PhaseClock
from paysim.loadgen.pool import RunError

ADMIN_TIMEOUT_S = 5.0
CHECK_SLACK_S = 0.05  # besides the round trips: the server's clock reading and rounding
PATH = "/admin/faults"


@dataclass
class Playing:
    """The timeline as started: our estimate of its start (``time.monotonic()``) and checks."""

    timeline: Timeline
    seed: int | None
    started: float
    admin: httpx.Client
    checks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def clock(self, t0: float) -> PhaseClock:
        """The phases on the load's clock, which starts at ``t0``."""
        phases = [(p.name, p.duration_s) for p in self.timeline.phases]
        return PhaseClock.of(phases, self.started - t0, self.timeline.repeat)

    def check(self, when: str) -> None:
        """Compare the server's phase and elapsed time with ours; a warning if they differ
        (or, at the end, if the server cannot be read: the load's figures stand)."""
        sent = time.monotonic()
        try:
            state = _state(_request(self.admin, "GET", None))
        except RunError as exc:
            if when == "start":
                raise
            self.warnings.append(f"the fault phase could not be read at the {when}: {exc}")
            return
        received = time.monotonic()
        clock = self.clock(self.started)  # its start_s is 0
        at = (sent + received) / 2 - self.started
        slack = CHECK_SLACK_S + (received - sent)
        index, into = clock.position(at)
        playing = state.get("timeline")
        if not isinstance(playing, dict) or playing.get("name") != self.timeline.name:
            playing = None
        row: dict[str, Any] = {
            "when": when,
            "expected_phase": clock.names[index],
            "expected_elapsed_s": None if index == clock.base else round(into, 3),
            "server_phase": playing.get("phase") if playing else None,
            "server_elapsed_s": playing.get("phase_elapsed_s") if playing else None,
        }
        # Near a boundary either side may be right: the clocks agree within ``slack``.
        row["agrees"] = any(
            _agrees(clock, clock.position(at + d), d, playing, slack) for d in (0.0, -slack, slack)
        )
        self.checks.append(row)
        if not row["agrees"]:
            self.warnings.append(
                f"at the {when} the server's fault phase was {row['server_phase']!r} "
                f"({row['server_elapsed_s']} s in), the timeline's clock says "
                f"{row['expected_phase']!r} ({row['expected_elapsed_s']} s in): "
                "another change to /admin/faults during the run? The phases in this "
                "report follow the clock"
            )

    def describe(self, clock: PhaseClock) -> dict[str, Any]:
        return {
            "timeline": self.timeline.name,
            "seed": self.seed,
            "repeat": self.timeline.repeat,
            "start_s": round(clock.start_s, 4),
            "phases": [{"name": p.name, "duration_s": p.duration_s} for p in self.timeline.phases],
            "checks": self.checks,
        }


def _agrees(
    clock: PhaseClock,
    position: tuple[int, float],
    shift: float,
    playing: dict[str, Any] | None,
    slack: float,
) -> bool:
    """Does the server's state match ``position`` (our clock read ``shift`` s later)?"""
    index, into = position
    if index == clock.base:
        return playing is None
    if playing is None or playing.get("phase") != clock.names[index]:
        return False
    elapsed = playing.get("phase_elapsed_s")
    if not isinstance(elapsed, int | float) or isinstance(elapsed, bool):
        return False
    return abs(elapsed - (into - shift)) <= slack


@contextlib.contextmanager
def playing(
    http_target: str, timeline: Timeline, seed: int | None, stderr: TextIO
) -> Iterator[Playing]:
    """Start ``timeline`` on the server at ``http_target`` (host:port); stop it on exit."""
    body: dict[str, Any] = {"timeline": timeline.to_dict()}
    if seed is not None:
        body["seed"] = seed
    with httpx.Client(
        base_url=f"http://{http_target}", trust_env=False, timeout=ADMIN_TIMEOUT_S
    ) as admin:
        sent = time.monotonic()
        _request(admin, "PUT", body)
        started = (sent + time.monotonic()) / 2
        try:
            run = Playing(timeline, seed, started, admin)
            run.check("start")
            yield run
        finally:
            _stop(admin, stderr)


def _stop(admin: httpx.Client, stderr: TextIO) -> None:
    try:
        _request(admin, "PUT", {"timeline": None})
    except RunError as exc:
        print(
            f"paysim bench: warning: could not stop the fault timeline ({exc}); stop it with "
            f"curl -X PUT -H 'Content-Type: application/json' -d '{{\"timeline\": null}}' "
            f"{str(admin.base_url).rstrip('/')}{PATH}",
            file=stderr,
        )


def _request(admin: httpx.Client, method: str, body: dict[str, Any] | None) -> httpx.Response:
    where = f"{str(admin.base_url).rstrip('/')}{PATH}"
    try:
        answer = admin.request(method, PATH, json=body)
    except httpx.HTTPError as exc:
        raise RunError(
            f"cannot reach {where} for --timeline ({type(exc).__name__}: {exc}); "
            "give the server's HTTP endpoint with --http-target HOST:PORT"
        ) from None
    if answer.status_code == 404:
        raise RunError(
            f"{where} does not exist: API faults are off on that server "
            "(start it with CHAOS_API_ENABLED=true; they are refused in production)"
        )
    if answer.status_code != 200:
        raise RunError(
            f"{where} refused the timeline (HTTP {answer.status_code}): {_reason(answer)}"
        )
    return answer


def _reason(answer: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        doc = answer.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            return str(doc["error"])[:300]
    return "no reason given"


def _state(answer: httpx.Response) -> dict[str, Any]:
    try:
        doc = answer.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise RunError(f"{answer.url} did not answer with the fault state (a JSON object)")
    return doc
