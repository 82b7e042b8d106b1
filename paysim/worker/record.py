"""What the worker did per reservation: facts for the API's reconciliation report.

``ReservationRecord.add`` is called once per decision the worker carried out
(the reservation service answered 2xx, or, without RESERVATION_API_URL, the
decision was only logged): the reservation, CONFIRMED or CANCELLED, for which
payment and which status, when (wall-clock seconds). ``report`` is what
``GET :8040/reconciliation`` answers. The worker states facts only; the API,
which knows the truth of every payment, does the cross-check
(``paysim.faults.worker_check``).

Bounded: at most ``max_entries`` reservations (the least recently acted on is
dropped first and counted in ``evicted``; ``dropped_before`` is the time of the
newest action dropped so far, so a reader knows the record is complete only
after it) and at most ``per_reservation`` actions each (the oldest dropped).

Owned by one ``ReservationWorker``; trio-only (no threads).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Action:
    decision: str  # CONFIRMED or CANCELLED
    payment_id: str
    status: str  # the event's status, e.g. PAYMENT_STATUS_COMPLETED
    at: float  # wall-clock seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "payment_id": self.payment_id,
            "status": self.status,
            "at": self.at,
        }


class ReservationRecord:
    """The last ``per_reservation`` actions of the last ``max_entries`` reservations."""

    def __init__(self, max_entries: int = 20_000, per_reservation: int = 4) -> None:
        if max_entries < 1 or per_reservation < 1:
            raise ValueError("the record's bounds must be positive")
        self._max = max_entries
        self._per = per_reservation
        self._actions: OrderedDict[str, list[Action]] = OrderedDict()
        self.recorded = 0
        self.evicted = 0
        self.dropped_before = 0.0

    def __len__(self) -> int:
        return len(self._actions)

    def add(self, reservation_id: str, action: Action) -> None:
        actions = self._actions.get(reservation_id)
        if actions is None:
            if len(self._actions) >= self._max:
                _, gone = self._actions.popitem(last=False)
                self.evicted += 1
                self.dropped_before = max(self.dropped_before, gone[-1].at)
            actions = self._actions[reservation_id] = []
        else:
            self._actions.move_to_end(reservation_id)
        actions.append(action)
        if len(actions) > self._per:
            del actions[0]
        self.recorded += 1

    def actions(self, reservation_id: str) -> list[Action]:
        return list(self._actions.get(reservation_id, ()))

    def report(self, *, reservation_api: bool) -> dict[str, Any]:
        """The whole record as JSON-ready data, oldest reservation first."""
        return {
            "reservation_api": reservation_api,
            "recorded": self.recorded,
            "evicted": self.evicted,
            "dropped_before": self.dropped_before,
            "max_entries": self._max,
            "reservations": [
                {"reservation_id": rid, "actions": [a.to_dict() for a in actions]}
                for rid, actions in self._actions.items()
            ],
        }
