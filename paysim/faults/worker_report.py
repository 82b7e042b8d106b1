"""The worker's record read back, and its cross-check against this server's truth (pure).

The worker (``paysim.worker.record``) only states facts: per reservation, what
it did (CONFIRMED or CANCELLED), for which payment and status, when. This
server knows the truth of every payment, so the judgement is made here:

* **confirmed, not completed**: a reservation the worker confirmed for a
  payment whose status here is neither COMPLETED nor REFUNDED (a refund
  follows a completion). A payment this server does not know at all is
  counted apart (``confirmed_unknown``): another run's event, say.
* **completed, never confirmed**: a payment that became COMPLETED here more
  than ``grace_s`` ago (its event goes through EventBridge, SQS and a long
  poll: a young completion is not yet missing) whose reservation the worker
  never confirmed. Completions from before the worker's ``dropped_before``
  are skipped: the worker may have forgotten them. Younger ones are counted
  in ``within_grace``.

Both give a count (reservations, payments) and at most ``sample`` items.
``parse_worker_report`` refuses anything but the worker's shape with
``MalformedReport``, whose message says what was wrong (the worker is a peer: its
answer is checked before use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DECISIONS = frozenset({"CONFIRMED", "CANCELLED"})
_COMPLETED = frozenset({"COMPLETED", "REFUNDED"})  # the server's status names


class MalformedReport(Exception):
    """The worker's answer is not its record; the message says where."""


@dataclass(frozen=True, slots=True)
class WorkerAction:
    reservation_id: str
    decision: str
    payment_id: str
    status: str
    at: float


@dataclass(frozen=True)
class WorkerFacts:
    """What the worker said, checked."""

    actions: tuple[WorkerAction, ...]
    reservations: int
    reservation_api: bool
    evicted: int
    dropped_before: float

    def confirmed_payment_ids(self) -> list[str]:
        seen = dict.fromkeys(a.payment_id for a in self.actions if a.decision == "CONFIRMED")
        return list(seen)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise MalformedReport(f"{where} is not a non-negative number")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise MalformedReport(f"{where} is not a string of 1 to 256 characters")
    return value


def parse_worker_report(body: Any) -> WorkerFacts:
    """The facts in the worker's ``GET /reconciliation`` answer; MalformedReport if not."""
    if not isinstance(body, dict) or not isinstance(body.get("reservations"), list):
        raise MalformedReport("the answer has no list of reservations")
    actions: list[WorkerAction] = []
    for n, entry in enumerate(body["reservations"]):
        where = f"reservations[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("actions"), list):
            raise MalformedReport(f"{where} has no list of actions")
        rid = _text(entry.get("reservation_id"), f"{where}.reservation_id")
        for m, raw in enumerate(entry["actions"]):
            at = f"{where}.actions[{m}]"
            if not isinstance(raw, dict) or raw.get("decision") not in DECISIONS:
                raise MalformedReport(f"{at}.decision is not CONFIRMED or CANCELLED")
            actions.append(
                WorkerAction(
                    rid,
                    raw["decision"],
                    _text(raw.get("payment_id"), f"{at}.payment_id"),
                    _text(raw.get("status"), f"{at}.status"),
                    _number(raw.get("at"), f"{at}.at"),
                )
            )
    api = body.get("reservation_api", True)
    return WorkerFacts(
        tuple(actions),
        len(body["reservations"]),
        api if isinstance(api, bool) else True,
        int(_number(body.get("evicted", 0), "evicted")),
        _number(body.get("dropped_before", 0), "dropped_before"),
    )


@dataclass(frozen=True)
class Truth:
    """This server's side: completions it saw, and statuses it looked up."""

    completed: Mapping[str, tuple[str, float]]  # payment id -> (reservation id, completed at)
    statuses: Mapping[str, str | None]  # payment id -> status name, None: unknown here
    unchecked: int = 0  # confirmed payments not looked up (over the lookup bound)


def cross_check(
    facts: WorkerFacts, truth: Truth, *, now: float, grace_s: float, sample: int
) -> dict[str, Any]:
    """The worker section's findings (see the module docstring)."""
    bad: dict[str, list[dict[str, Any]]] = {}
    unknown: dict[str, list[dict[str, Any]]] = {}
    confirmed: set[str] = set()
    for a in facts.actions:
        if a.decision != "CONFIRMED":
            continue
        confirmed.add(a.reservation_id)
        if a.payment_id in truth.completed or a.payment_id not in truth.statuses:
            continue  # completed here, or not looked up (counted in ``unchecked``)
        status = truth.statuses[a.payment_id]
        if status in _COMPLETED:
            continue
        item = {
            "reservation_id": a.reservation_id,
            "payment_id": a.payment_id,
            "status": status,
            "confirmed_at": a.at,
        }
        (unknown if status is None else bad).setdefault(a.reservation_id, []).append(item)
    missing: list[dict[str, Any]] = []
    young = 0
    for pid, (rid, at) in truth.completed.items():
        if rid in confirmed or (facts.evicted and at <= facts.dropped_before):
            continue
        if now - at < grace_s:
            young += 1
            continue
        missing.append({"payment_id": pid, "reservation_id": rid, "completed_at": at})
    return {
        "confirmed_not_completed": _findings(bad, sample),
        "confirmed_unknown": _findings(unknown, sample),
        "completed_not_confirmed": {
            "count": len(missing),
            "within_grace": young,
            "sample": missing[:sample],
        },
        "unchecked": truth.unchecked,
    }


def _findings(by_reservation: dict[str, list[dict[str, Any]]], sample: int) -> dict[str, Any]:
    items = [item for items in by_reservation.values() for item in items]
    return {"count": len(by_reservation), "sample": items[:sample]}
