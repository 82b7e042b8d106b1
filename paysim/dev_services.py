"""The two stand-ins ``paysim dev`` runs beside the API, so one terminal shows
the whole chain: create -> webhook -> event -> queue -> worker -> reservation.

* ``receiver_app``: a webhook receiver that verifies each delivery's signature
  with ``paysim.webhooks.verify`` and prints one line;
* ``ReservationStandIn``: the reservation service the worker PATCHes
  (``PATCH /internal/reservations/{id}`` with ``{"status": "CONFIRMED"}``…);
  it answers 200, prints one line, and keeps the last patches
  (``ReservationStandIn.received``) for whoever wants to show them.

Both are ``HttpApp``s served by ``serve_http`` (h11 on trio): no second web
server. Printed lines start with the stand-in's name, like every log line of
``paysim dev`` says which process wrote it. No header, secret or signature is
printed: only the verified body, which carries none.
"""

from __future__ import annotations

import collections
import datetime
import json
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

from paysim.entrypoints.http import HttpApp, HttpRequest, HttpResponse, json_response
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics
from paysim.webhooks import WebhookVerificationError, verify

RESERVATIONS_PREFIX = "/internal/reservations/"
_KEEP = 1000  # patches the stand-in remembers


def receiver_app(secrets: tuple[str, ...], out: Any = None) -> HttpApp:
    """A webhook receiver on ``/webhooks`` that verifies and prints every delivery."""
    out = out if out is not None else sys.stdout
    receiver = HttpApp(Readiness(), Metrics(), service_name="paysim-dev-receiver")

    async def deliver(request: HttpRequest) -> HttpResponse:
        headers = [(k.decode(), v.decode()) for k, v in request.headers]
        try:
            verified = verify(request.body, headers, secrets)
        except WebhookVerificationError as exc:
            print(f"[receiver] webhook REJECTED: {exc}", file=out, flush=True)
            return json_response(400, {"error": str(exc)})
        print(
            f"[receiver] webhook ok ({verified.style}, id={verified.webhook_id}): "
            f"{request.body.decode(errors='replace')}",
            file=out,
            flush=True,
        )
        return json_response(200, {"received": True})

    receiver.add_route("/webhooks", frozenset({"POST"}), deliver)
    return receiver


@dataclass(frozen=True)
class ReservationPatch:
    """One PATCH the stand-in received: which reservation, to what, when (UTC)."""

    reservation_id: str
    status: str
    received_at: datetime.datetime


class ReservationStandIn(HttpApp):
    """The reservation service's internal API, as far as the worker uses it.

    ``PATCH /internal/reservations/{id}`` with a JSON ``{"status": ...}``: 200
    and the reservation as stored; a body that is not that: 400. The health
    and metrics routes of every ``HttpApp`` stay.
    """

    def __init__(self, out: Any = None) -> None:
        super().__init__(Readiness(), Metrics(), service_name="paysim-dev-reservations")
        self._out = out if out is not None else sys.stdout
        self._patches: collections.deque[ReservationPatch] = collections.deque(maxlen=_KEEP)

    def received(self) -> list[ReservationPatch]:
        """The patches received so far (the last 1,000), oldest first."""
        return list(self._patches)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(RESERVATIONS_PREFIX):
            return await super().handle(request)
        reservation_id = urllib.parse.unquote(request.path[len(RESERVATIONS_PREFIX) :])
        if request.method != "PATCH" or not reservation_id or "/" in reservation_id:
            response = json_response(405 if reservation_id else 404, {"error": "not here"})
        else:
            response = self._patch(reservation_id, request.body)
        self.record(RESERVATIONS_PREFIX, response.status)
        return response

    def _patch(self, reservation_id: str, body: bytes) -> HttpResponse:
        try:
            status = json.loads(body)["status"]
        except (ValueError, KeyError, TypeError):
            return json_response(400, {"error": 'expected {"status": "..."}'})
        if not isinstance(status, str):
            return json_response(400, {"error": "status must be a string"})
        patch = ReservationPatch(reservation_id, status, datetime.datetime.now(datetime.UTC))
        self._patches.append(patch)
        print(
            f"[reservations] reservation {reservation_id} {status} (PATCH from the worker)",
            file=self._out,
            flush=True,
        )
        return json_response(200, {"reservation_id": reservation_id, "status": status})
