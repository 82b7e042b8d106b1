"""The delivery journal: the last webhook attempts of the most recent payments, as data.

The webhook dispatcher owns one and records every attempt in it; the HTTP
entrypoint reads it (``GET /debug/deliveries?payment_id=…``, served by
``paysim.entrypoints.journal_route``). Bounded twice (attempts per payment,
payments in all, least recently touched dropped first), so it cannot grow
without limit. It records what an operator needs to debug a receiver (time,
status code or error, latency) and never headers, bodies or secrets.

Listeners (``on_finished``) hear of every delivery that ended, with its last
attempt (the reconciliation ledger counts the ones never acknowledged with a
2xx); duplicates sent by webhook chaos are not reported there.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


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
    next_retry_s: float | None = None  # when the next attempt is due, if any
    excerpt: str = ""  # the start of the receiver's answer (printable, at most 120 chars)


class DeliveryJournal:
    def __init__(self, max_payments: int = 10_000, per_payment: int = 20) -> None:
        self._max_payments = max_payments
        self._per_payment = per_payment
        self._entries: OrderedDict[str, deque[Attempt]] = OrderedDict()
        self._listeners: list[Callable[[str, Attempt], None]] = []

    def on_finished(self, listener: Callable[[str, Attempt], None]) -> None:
        """Call ``listener(payment_id, last_attempt)`` whenever a delivery ends."""
        self._listeners.append(listener)

    def finished(self, payment_id: str, last: Attempt) -> None:
        """The dispatcher is done with a delivery (delivered or not): tell the listeners."""
        for listener in self._listeners:
            listener(payment_id, last)

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
        """The payment's recorded attempts, oldest first (empty if none)."""
        return list(self._entries.get(payment_id, ()))

    def recent(self) -> list[tuple[str, list[Attempt]]]:
        """Every payment's attempts (oldest first), least recently touched payment first."""
        return [(pid, list(entries)) for pid, entries in self._entries.items()]
