"""The delivery journal: the last webhook attempts of the most recent payments.

Bounded twice (attempts per payment, payments in all, least recently touched
dropped first), so it cannot grow without limit. Read over HTTP as
``GET /debug/deliveries?payment_id=…``. It records what an operator needs to
debug a receiver (time, status code or error, latency) and never headers,
bodies or secrets.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from typing import Any

from paysim.entrypoints.http import HttpRequest, HttpResponse, json_response


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    status: str
    attempt: int
    at: float
    url: str
    outcome: str  # delivered | retry | gave_up | gone | blocked | unsendable
    http_status: int | None
    error: str | None
    latency_ms: float


class DeliveryJournal:
    def __init__(self, max_payments: int = 10_000, per_payment: int = 20) -> None:
        self._max_payments = max_payments
        self._per_payment = per_payment
        self._entries: OrderedDict[str, deque[Attempt]] = OrderedDict()

    def record(self, payment_id: str, attempt: Attempt) -> None:
        entries = self._entries.get(payment_id)
        if entries is None:
            entries = self._entries[payment_id] = deque(maxlen=self._per_payment)
            if len(self._entries) > self._max_payments:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(payment_id)
        entries.append(attempt)

    def attempts(self, payment_id: str) -> list[Attempt]:
        return list(self._entries.get(payment_id, ()))

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """``GET /debug/deliveries?payment_id=…``: the payment's attempts, oldest first."""
        ids = request.query.get("payment_id", [])
        if len(ids) != 1 or not ids[0]:
            return json_response(400, {"error": "give exactly one payment_id"})
        attempts = self.attempts(ids[0])
        if not attempts:
            return json_response(404, {"error": "no deliveries recorded for this payment"})
        body: dict[str, Any] = {
            "payment_id": ids[0],
            "attempts": [asdict(a) for a in attempts],
        }
        return json_response(200, body)
