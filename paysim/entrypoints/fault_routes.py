"""``/admin/faults`` and ``/reconciliation``: API chaos, changed live and reconciled, over HTTP.

* ``GET /admin/faults``: the seed, the current and base plans, the timeline
  being played (phase, elapsed) and the shipped example timelines.
* ``PUT /admin/faults`` (JSON): the change ``paysim.faults.control`` parses
  and applies (the console's Faults view calls the same): any of
  ``{"plan": {...}}``, ``{"timeline": "ticket_on_sale"}``,
  ``{"timeline": {...}}``, ``{"timeline": null}`` (stop), ``{"seed": 7}``.
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
from paysim.faults.control import FaultControl
from paysim.faults.plan import PlanError
from paysim.faults.worker_check import WorkerCheck


class FaultRoutes:
    def __init__(self, control: FaultControl, worker: WorkerCheck | None = None) -> None:
        self._control = control
        self._policy = control.policy
        self._player = control.player
        self._worker = worker

    def add_to(self, app: HttpApp) -> None:
        app.add_route("/admin/faults", frozenset({"GET", "PUT"}), self.faults)
        app.add_route("/reconciliation", frozenset({"GET"}), self.reconciliation)

    async def faults(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            return json_response(200, self._control.state())
        refused = _refused(request)
        if refused is not None:
            return refused
        try:
            self._control.change(json.loads(request.body))
        except (ValueError, PlanError) as exc:
            message = str(exc) if isinstance(exc, PlanError) else "the body is not JSON"
            return json_response(400, {"error": message})
        return json_response(200, self._control.state())

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
