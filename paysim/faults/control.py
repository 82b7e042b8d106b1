"""``FaultControl``: what API chaos is doing, and changing it live (one code path).

Both ``PUT /admin/faults`` (``paysim.entrypoints.fault_routes``) and the
console's Faults view (``paysim.console.faults``) read ``state`` and call
``change`` with the same JSON body: any of ``{"plan": {...}}`` (becomes the
base plan and applies now, ending a timeline), ``{"timeline": "ticket_on_sale"}``
(a shipped example), ``{"timeline": {...}}`` (a timeline as JSON, the TOML
file's shape), ``{"timeline": null}`` (stop) and ``{"seed": 7}`` (reseed). A
bad body raises ``PlanError`` naming the field, and nothing changes then.
"""

from __future__ import annotations

from typing import Any

from paysim.faults.plan import FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy
from paysim.faults.timeline import EXAMPLES, Timeline, TimelinePlayer, load_timeline


class FaultControl:
    def __init__(self, policy: FaultPolicy, player: TimelinePlayer) -> None:
        self.policy = policy
        self.player = player

    def state(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "seed": policy.seed,
            "plan": policy.plan.to_dict(),
            "base": policy.base.to_dict(),
            "timeline": self.player.describe(),
            "examples": list(EXAMPLES),
        }

    def change(self, body: Any) -> None:
        """Parse everything first, then change: a bad body changes nothing."""
        if not isinstance(body, dict) or not body or set(body) - {"plan", "timeline", "seed"}:
            raise PlanError("give an object with plan, timeline and/or seed")
        plan = FaultPlan.from_dict(body["plan"]) if "plan" in body else None
        timeline: Timeline | None = None
        raw = body.get("timeline")
        if isinstance(raw, str):
            if raw not in EXAMPLES:
                raise PlanError(f"timeline: one of {', '.join(EXAMPLES)}, or a timeline object")
            timeline = load_timeline(raw)
        elif isinstance(raw, dict):
            timeline = Timeline.from_dict(raw)
        elif raw is not None:
            raise PlanError("timeline: an example's name, a timeline object or null")
        seed = body.get("seed")
        if "seed" in body and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise PlanError("seed: an integer")
        if "seed" in body:
            self.policy.reseed(seed)
        if plan is not None:
            self.player.stop()
            self.policy.base = plan
            self.policy.set_plan(plan)
        if timeline is not None:
            self.player.start(timeline)
        elif "timeline" in body:
            self.player.stop()
