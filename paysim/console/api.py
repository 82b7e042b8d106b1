"""The console's read side: ``GET /console/api/...`` and the live stream.

``Console`` holds what the console reads (the recorder, the delivery journal,
the endpoint gate, the service for payments it never saw) and answers:

* ``payments``: recent payments, newest first, filtered by status, user,
  reservation, idempotency key and id (a substring), with counts per status;
* ``payment``: one payment's timeline: status changes (time and cause),
  webhook attempts from the journal, the events published, notes;
* ``endpoints``: deliveries per endpoint (host): delivered, retrying and
  failed deliveries, the last errors, and whether it is disabled;
* ``overview`` and ``meta`` (what the page's forms offer);
* ``reconciliation``: the report of ``GET /reconciliation`` (404 while the
  fault policy is off: then there is no report); ``faults`` is
  ``paysim.console.faults``;
* ``events``: Server-Sent Events (``paysim.console.hub`` bounds each page's
  queue; dropped updates are announced as a ``dropped`` event).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from paysim.console.auth import Guard
from paysim.console.hub import Hub
from paysim.console.observed import WebhookGate
from paysim.console.overview import Overview
from paysim.console.recorder import Recorder
from paysim.console.settings import ConsoleSettings
from paysim.console.views import endpoint_of, safe_url, summary
from paysim.delivery.journal import Attempt, DeliveryJournal
from paysim.domain.forced_outcomes import OUTCOMES
from paysim.domain.models import SCENARIO_NAMES
from paysim.entrypoints.http import HttpRequest, HttpResponse, json_response
from paysim.entrypoints.http_stream import Send
from paysim.errors import NotFound
from paysim.faults.control import FaultControl
from paysim.service import PaymentService

_FLUSH_EVERY_S = 0.1
_HEARTBEAT_S = 15.0
_MAX_LIST = 500
_FAILED = frozenset({"gave_up", "gone", "blocked", "unsendable"})


@dataclass
class Console:
    settings: ConsoleSettings
    guard: Guard
    hub: Hub
    recorder: Recorder
    overview: Overview
    journal: DeliveryJournal | None  # None when a test replaced the channels
    gate: WebhookGate | None
    events_enabled: bool
    service: PaymentService | None = None  # set once the service exists
    max_delay_s: float = 600.0  # the create form's delay bound (MAX_DELAY_MS)
    # The reconciliation report, set by the wiring when the fault policy is on.
    reconciliation: Callable[[], Awaitable[dict[str, Any]]] | None = None
    # API faults, read and changed live (``paysim.console.faults``); set with the policy.
    faults: FaultControl | None = None

    # -- GET /console/api/payments -------------------------------------------------
    async def payments(self, request: HttpRequest) -> HttpResponse:
        q = {k: v[0].strip() for k, v in request.query.items() if v and v[0].strip()}
        try:
            limit = min(max(int(q.get("limit", "100")), 1), _MAX_LIST)
        except ValueError:
            return json_response(400, {"error": "limit must be a number"})
        wanted = [
            (field, q[name])
            for name, field in (
                ("status", "status"),
                ("user", "user_id"),
                ("reservation", "reservation_id"),
                ("key", "idempotency_key"),
            )
            if name in q
        ]
        needle = q.get("q", "")
        found: list[dict[str, Any]] = []
        for entry in self.recorder.newest_first():
            p = entry.payment
            if needle and needle not in p.payment_intent_id:
                continue
            row = summary(p, entry.idempotency_key)
            if all(str(row[field]) == value for field, value in wanted):
                found.append(row)
                if len(found) >= limit:
                    break
        counts = {k: v for k, v in self.recorder.counts.items() if v > 0}
        return json_response(200, {"payments": found, "counts": counts})

    # -- GET /console/api/payment?id=… ------------------------------------------------
    async def payment(self, request: HttpRequest) -> HttpResponse:
        pid = (request.query.get("id") or [""])[0]
        entry = self.recorder.entry(pid)
        items: list[dict[str, Any]] = []
        if entry is not None:
            payment, key = entry.payment, entry.idempotency_key
            items.extend(entry.timeline)
            note = ""
        else:
            try:
                assert self.service is not None
                payment, key = await self.service.get_payment(pid), ""
            except NotFound:
                return json_response(404, {"error": "no such payment"})
            note = "this console did not see this payment change: no timeline"
        if self.events_enabled:
            for item in list(items):
                if item["kind"] == "status" and item.get("from"):
                    items.append(
                        {"at": item["at"], "kind": "event", "detail": f"payment.{item['to']}"}
                    )
        for attempt in self.journal.attempts(pid) if self.journal is not None else []:
            items.append(_attempt(attempt))
        items.sort(key=lambda i: i["at"])
        body = {"payment": summary(payment, key), "timeline": items, "note": note}
        return json_response(200, body)

    # -- GET /console/api/endpoints --------------------------------------------------------
    async def endpoints(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, {"endpoints": self.endpoint_rows()})

    def endpoint_rows(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = defaultdict(
            lambda: {"delivered": 0, "retrying": 0, "failed": 0, "errors": []}
        )
        for pid, attempts in self.journal.recent() if self.journal is not None else []:
            last: dict[str, Attempt] = {}
            for a in attempts:
                last[a.event_id] = a
                if a.outcome != "delivered":
                    rows[endpoint_of(a.url)]["errors"].append({"payment_id": pid, **_attempt(a)})
            for a in last.values():
                row = rows[endpoint_of(a.url)]
                kind = "delivered" if a.outcome == "delivered" else "retrying"
                row["failed" if a.outcome in _FAILED else kind] += 1
        disabled = self.gate.disabled if self.gate is not None else set()
        for host in disabled:
            rows.setdefault(host, rows[host])  # a disabled endpoint shows without deliveries
        skipped: dict[str, int] = defaultdict(int)
        for _, _, host in self.recorder.skipped:
            skipped[host] += 1
        out = []
        for host, row in sorted(rows.items()):
            errors = sorted(row["errors"], key=lambda e: e["at"])[-5:]
            out.append(
                {
                    **row,
                    "host": host,
                    "errors": errors[::-1],
                    "disabled": host in disabled,
                    "skipped": skipped.get(host, 0),
                }
            )
        return out

    # -- GET /console/api/overview, /console/api/meta ------------------------------------
    async def overview_route(self, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.overview.snapshot())

    async def meta(self, request: HttpRequest) -> HttpResponse:
        codes = [
            {"code": name, "reason": f.gateway_response, "response_code": f.response_code}
            for name, f in OUTCOMES.items()
            if f.failure_reason and name != "pg_timeout"
        ]
        return json_response(
            200,
            {
                "read_only": self.guard.read_only,
                "decline_codes": codes,
                "scenarios": list(SCENARIO_NAMES),
                "default_webhook_url": safe_url(self.settings.default_webhook_url),
                "events_enabled": self.events_enabled,
                "reconciliation": self.reconciliation is not None,
                "faults": self.faults is not None,
            },
        )

    # -- GET /console/api/reconciliation -------------------------------------------------
    async def reconciliation_route(self, request: HttpRequest) -> HttpResponse:
        if self.reconciliation is None:
            message = (
                "no reconciliation report: set CHAOS_API_ENABLED=true or RECONCILIATION_WORKER_URL"
            )
            return json_response(404, {"error": message})
        return json_response(200, await self.reconciliation())

    # -- GET /console/api/events (Server-Sent Events) ------------------------------------
    async def events(self, request: HttpRequest) -> HttpResponse:
        async def stream(send: Send) -> None:
            subscriber = self.hub.subscribe()
            try:
                await send(b"retry: 1000\nevent: hello\ndata: {}\n\n")
                while True:
                    with trio.move_on_after(_HEARTBEAT_S):
                        await subscriber.wait()
                        # Let a burst gather (and coalesce by payment): at most one
                        # write per _FLUSH_EVERY_S per page, however fast payments go.
                        await trio.sleep(_FLUSH_EVERY_S)
                    updates, dropped = subscriber.take()
                    chunk = [f"event: {u.event}\ndata: {u.data}\n\n" for u in updates]
                    if dropped:
                        chunk.append(f"event: dropped\ndata: {json.dumps({'count': dropped})}\n\n")
                    await send("".join(chunk).encode() if chunk else b": keep-alive\n\n")
            finally:
                self.hub.unsubscribe(subscriber)

        headers = (("Cache-Control", "no-store"), ("X-Accel-Buffering", "no"))
        return HttpResponse(200, b"", "text/event-stream", headers, stream=stream)


def _attempt(a: Attempt) -> dict[str, Any]:
    return {
        "at": a.at,
        "kind": "webhook",
        "event_id": a.event_id,
        "attempt": a.attempt,
        "url": safe_url(a.url),
        "outcome": a.outcome,
        "http_status": a.http_status,
        "error": a.error,
        "latency_ms": a.latency_ms,
        "next_retry_s": a.next_retry_s,
        "excerpt": a.excerpt,
        "status": a.status,
    }
