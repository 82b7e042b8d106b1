"""``/admin/faults`` and ``/reconciliation``: API chaos, changed live and reconciled, over HTTP.

* ``GET /admin/faults``: the seed, the current and base plans, the timeline
  being played (phase, elapsed) and the shipped example timelines.
* ``PUT /admin/faults`` (JSON): any of ``{"plan": {...}}`` (becomes the base
  plan and applies now, ending a timeline), ``{"timeline": "ticket_on_sale"}``
  (a shipped example) or ``{"timeline": {...}}`` (a timeline as JSON, the TOML
  file's shape) or ``{"timeline": null}`` (stop), ``{"seed": 7}`` (reseed).
  Refused unless ``Content-Type: application/json`` and, when the browser
  says where it comes from (``Origin``, ``Sec-Fetch-Site``), the same origin:
  a page elsewhere cannot turn the faults on. A bad body is 400 naming the
  field; nothing changes then.
* ``GET /reconciliation``: the ledger's report (``paysim.faults.ledger``),
  with a ``worker`` section when RECONCILIATION_WORKER_URL is set
  (``paysim.faults.worker_check``: fetched now, bounded by its timeout).

Registered by the wiring only when CHAOS_API_* is on, which the settings
refuse in production.
"""

from __future__ import annotations

import json
from typing import Any

from paysim.entrypoints.http import HttpApp, HttpRequest, HttpResponse, json_response
from paysim.faults.plan import FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy
from paysim.faults.timeline import EXAMPLES, Timeline, TimelinePlayer, load_timeline
from paysim.faults.worker_check import WorkerCheck


class FaultRoutes:
    def __init__(
        self, policy: FaultPolicy, player: TimelinePlayer, worker: WorkerCheck | None = None
    ) -> None:
        self._policy = policy
        self._player = player
        self._worker = worker

    def add_to(self, app: HttpApp) -> None:
        app.add_route("/admin/faults", frozenset({"GET", "PUT"}), self.faults)
        app.add_route("/reconciliation", frozenset({"GET"}), self.reconciliation)

    def state(self) -> dict[str, Any]:
        policy = self._policy
        return {
            "seed": policy.seed,
            "plan": policy.plan.to_dict(),
            "base": policy.base.to_dict(),
            "timeline": self._player.describe(),
            "examples": list(EXAMPLES),
        }

    async def faults(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            return json_response(200, self.state())
        refused = _refused(request)
        if refused is not None:
            return refused
        try:
            self._apply(json.loads(request.body))
        except (ValueError, PlanError) as exc:
            message = str(exc) if isinstance(exc, PlanError) else "the body is not JSON"
            return json_response(400, {"error": message})
        return json_response(200, self.state())

    def _apply(self, body: Any) -> None:
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
            self._policy.reseed(seed)
        if plan is not None:
            self._player.stop()
            self._policy.base = plan
            self._policy.set_plan(plan)
        if timeline is not None:
            self._player.start(timeline)
        elif "timeline" in body:
            self._player.stop()

    async def report(self) -> dict[str, Any]:
        """The reconciliation report (also what the console's page shows)."""
        report = self._policy.ledger.report()
        report["timeline"] = self._player.describe()
        if self._worker is not None:
            report["worker"] = await self._worker.section()
        return report

    async def reconciliation(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, await self.report())


def _refused(request: HttpRequest) -> HttpResponse | None:
    content_type = (request.header(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        return json_response(415, {"error": "send the change as application/json"})
    site = request.header(b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return json_response(403, {"error": "cross-site changes are refused"})
    origin = request.header(b"origin")
    host = request.header(b"host")
    if origin is not None and (host is None or origin.split(b"://", 1)[-1] != host):
        return json_response(403, {"error": "cross-origin changes are refused"})
    return None
