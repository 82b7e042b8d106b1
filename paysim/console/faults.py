"""The console's Faults view: ``GET`` and ``POST /console/api/faults``.

The read is ``GET /admin/faults``'s answer (``FaultControl.state``: the plan in
force, the base plan, the seed, the timeline playing with its phase and elapsed
time, the shipped examples). The change takes the body ``PUT /admin/faults``
takes and goes through the same ``FaultControl.change``: start an example
timeline (``{"timeline": "ticket_on_sale", "seed": 7}``), stop it
(``{"timeline": null}``), clear the plan (``{"plan": {}}``) or apply one
(``{"plan": {...}}``). A bad body is 400 with the same message naming the
field, and nothing changes. The routes' guard (token, same origin, JSON,
read-only refusing writes) is ``paysim.console.routes``'s.

Both answer 404 while API faults are off (no ``FaultControl``: the wiring sets
one only when CHAOS_API_* is on, which production refuses).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from paysim.entrypoints.http import HttpRequest, HttpResponse, json_response
from paysim.faults.control import FaultControl
from paysim.faults.plan import PlanError

OFF = "API faults are off: start paysim with CHAOS_API_ENABLED=true (refused in production)"


class FaultsView:
    def __init__(self, control: Callable[[], FaultControl | None]) -> None:
        self._control = control  # read per request: the wiring sets it after the routes

    async def read(self, request: HttpRequest) -> HttpResponse:
        control = self._control()
        if control is None:
            return json_response(404, {"error": OFF})
        return json_response(200, control.state())

    async def change(self, request: HttpRequest) -> HttpResponse:
        control = self._control()
        if control is None:
            return json_response(404, {"error": OFF})
        try:
            control.change(json.loads(request.body))
        except (ValueError, PlanError) as exc:
            message = str(exc) if isinstance(exc, PlanError) else "the body must be JSON"
            return json_response(400, {"error": message})
        return json_response(200, control.state())
