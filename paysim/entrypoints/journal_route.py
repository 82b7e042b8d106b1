"""``GET /debug/deliveries?payment_id=…``: the delivery journal, read over HTTP.

The journal (``paysim.delivery.journal``) is data owned by the webhook
dispatcher; this is its only reader on the wire. The wiring registers the
route on the HTTP endpoint with ``add_journal_route``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from paysim.delivery.journal import DeliveryJournal
from paysim.entrypoints.http import Handler, HttpApp, HttpRequest, HttpResponse, json_response

PATH = "/debug/deliveries"


def journal_handler(journal: DeliveryJournal) -> Handler:
    """The route's handler: one payment's attempts, oldest first; 400 or 404 otherwise."""

    async def handle(request: HttpRequest) -> HttpResponse:
        ids = request.query.get("payment_id", [])
        if len(ids) != 1 or not ids[0]:
            return json_response(400, {"error": "give exactly one payment_id"})
        attempts = journal.attempts(ids[0])
        if not attempts:
            return json_response(404, {"error": "no deliveries recorded for this payment"})
        body: dict[str, Any] = {
            "payment_id": ids[0],
            "attempts": [asdict(a) for a in attempts],
        }
        return json_response(200, body)

    return handle


def add_journal_route(app: HttpApp, journal: DeliveryJournal) -> None:
    """Serve ``journal`` at ``GET /debug/deliveries`` (HEAD too) on ``app``."""
    app.add_route(PATH, frozenset({"GET"}), journal_handler(journal))
