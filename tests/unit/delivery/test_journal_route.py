"""``GET /debug/deliveries``: the delivery journal read through the HTTP endpoint's routing.

The journal is data (``paysim.delivery.journal``); its route lives on the
entrypoint side (``paysim.entrypoints.journal_route``).
"""

from __future__ import annotations

import json

from paysim.delivery.journal import Attempt, DeliveryJournal
from paysim.entrypoints.http import HttpApp, HttpRequest
from paysim.entrypoints.journal_route import add_journal_route
from paysim.observability.health import Readiness
from paysim.observability.metrics import Metrics


def attempt(n: int, outcome: str) -> Attempt:
    return Attempt(
        event_id="evt_1",
        status="PAYMENT_STATUS_COMPLETED",
        attempt=n,
        at=1_700_000_000.0 + n,
        url="http://hooks.example/x",
        outcome=outcome,
        http_status=500 if outcome == "retry" else 200,
        error=None,
        latency_ms=1.5,
    )


def app_with(journal: DeliveryJournal) -> HttpApp:
    app = HttpApp(Readiness(), Metrics())
    add_journal_route(app, journal)
    return app


async def test_the_route_answers_a_payments_attempts_oldest_first() -> None:
    journal = DeliveryJournal()
    journal.record("pay_1", attempt(1, "retry"))
    journal.record("pay_1", attempt(2, "delivered"))
    app = app_with(journal)
    response = await app.handle(
        HttpRequest("GET", "/debug/deliveries", query={"payment_id": ["pay_1"]})
    )
    assert response.status == 200
    body = json.loads(response.body)
    assert body["payment_id"] == "pay_1"
    assert [(a["attempt"], a["outcome"]) for a in body["attempts"]] == [
        (1, "retry"),
        (2, "delivered"),
    ]


async def test_the_route_wants_exactly_one_payment_id_and_says_when_none_is_recorded() -> None:
    app = app_with(DeliveryJournal())
    for query in ({}, {"payment_id": [""]}, {"payment_id": ["a", "b"]}):
        response = await app.handle(HttpRequest("GET", "/debug/deliveries", query=query))
        assert response.status == 400
    response = await app.handle(
        HttpRequest("GET", "/debug/deliveries", query={"payment_id": ["pay_none"]})
    )
    assert response.status == 404
    head = await app.handle(
        HttpRequest("HEAD", "/debug/deliveries", query={"payment_id": ["pay_none"]})
    )
    assert head.status == 404
