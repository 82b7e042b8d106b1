"""The reconciliation ledger: what really happened to each payment, against what callers heard.

Fed from two sides, both in this process:

* every status change, as one more outbox channel (``notify``; it announces
  nothing, so the store keeps nothing for it, and reports itself done at once);
* the fault policy's record of answers it dropped (``lost``) and of later
  answers about the same payment (``answered``).

From them it keeps, incrementally (so a report or a scrape costs little):

* **double charges**: reservations with more than one payment captured
  (COMPLETED) and not fully refunded;
* **lost answers**: calls whose work was done and whose answer the caller never
  got, and whether a later call about the same payment (the same idempotency
  key answering the same intent, a ProcessPayment retry) recovered it;
* **abandoned intents**: payments that expired in PENDING or PROCESSING;
* **unacknowledged webhooks**: changes whose webhook delivery ended without a
  2xx (given up, 410 gone, blocked by the SSRF guard, unsendable), told by the
  webhook dispatcher's journal (``webhook_ended``).

With ``completions`` (the worker cross-check is on) it also keeps when each
payment first became COMPLETED, and for which reservation: the server's side
of ``paysim.faults.worker_check`` (``completed``).

Bounded: at most ``max_entries`` completions (oldest dropped, counted in
``completions_evicted``), at most ``max_entries`` reservations with captures and lost answers
are kept (oldest dropped first, and counted in ``evicted``); reports list at
most ``sample`` ids of each kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paysim.domain.models import PaymentStatus, StatusChange

_OPEN = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)


@dataclass
class LostAnswer:
    rpc: str
    payment_intent_id: str
    # "unavailable", "reset", "deadline" (after-latency cut by the caller's deadline)
    # or "slow_drip" (a dripping answer that did not reach its end)
    how: str
    recovered: bool = False


class Ledger:
    """A ``Notifier`` (one more outbox channel) and the fault policy's record."""

    def __init__(
        self,
        on_done: Callable[[str], None] | None = None,
        *,
        max_entries: int = 200_000,
        sample: int = 100,
        completions: bool = False,
    ) -> None:
        self._on_done = on_done
        self._max = max_entries
        self._sample = sample
        self._charged: dict[str, set[str]] = {}  # reservation id -> intents captured
        self._doubles: set[str] = set()
        self._lost: dict[str, LostAnswer] = {}  # payment intent id -> its lost answer
        self._recovered = 0
        self._abandoned: list[str] = []
        self.abandoned = 0
        self.evicted = 0
        self.unacknowledged = 0
        self._unacknowledged_by: dict[str, int] = {}
        self._unacknowledged: list[dict[str, str]] = []
        # payment intent id -> (reservation id, when it first completed), if tracked
        self._completed: dict[str, tuple[str, float]] | None = {} if completions else None
        self.completions_evicted = 0
        self.completions_dropped_before = 0.0  # the newest completion time dropped

    # -- the Notifier port -------------------------------------------------------
    def announces(self, change: StatusChange) -> bool:
        return False

    async def notify(self, change: StatusChange) -> None:
        self.record(change)
        if self._on_done is not None:
            self._on_done(change.event_id)

    def record(self, change: StatusChange) -> None:
        p = change.payment
        if p.status in _OPEN:  # never captured yet (no way back from COMPLETED): nothing to
            return  # count; half of all changes, so the zero-rate cost stays small
        if p.status is PaymentStatus.EXPIRED and change.previous in _OPEN:
            self.abandoned += 1
            if len(self._abandoned) < self._sample:
                self._abandoned.append(p.payment_intent_id)
        if p.status is PaymentStatus.COMPLETED and change.previous is not PaymentStatus.COMPLETED:
            self._completion(p.payment_intent_id, p.reservation_id, change.at)
        charged = p.status is PaymentStatus.COMPLETED and p.refunded < p.amount.amount
        rid = p.reservation_id
        intents = self._charged.get(rid)
        if charged:
            if intents is None:
                if len(self._charged) >= self._max:
                    self._evict()
                intents = self._charged[rid] = set()
            intents.add(p.payment_intent_id)
        elif intents is not None:
            intents.discard(p.payment_intent_id)
        if intents is not None:
            if len(intents) > 1:
                self._doubles.add(rid)
            else:
                self._doubles.discard(rid)

    def _completion(self, payment_intent_id: str, reservation_id: str, at: float) -> None:
        completed = self._completed
        if completed is None or payment_intent_id in completed:
            return
        if len(completed) >= self._max:
            _, (_, gone_at) = _pop_oldest(completed)
            self.completions_evicted += 1
            self.completions_dropped_before = max(self.completions_dropped_before, gone_at)
        completed[payment_intent_id] = (reservation_id, at)

    @property
    def completed(self) -> dict[str, tuple[str, float]]:
        """Payments that completed here: id -> (reservation id, when); empty if not tracked."""
        return self._completed if self._completed is not None else {}

    def _evict(self) -> None:
        oldest = next(iter(self._charged))
        del self._charged[oldest]
        self._doubles.discard(oldest)
        self.evicted += 1

    # -- what the webhook dispatcher reports -------------------------------------------
    def webhook_ended(self, payment_intent_id: str, event_id: str, outcome: str) -> None:
        """A webhook delivery ended with ``outcome``; anything but "delivered" is counted."""
        if outcome == "delivered":
            return
        self.unacknowledged += 1
        self._unacknowledged_by[outcome] = self._unacknowledged_by.get(outcome, 0) + 1
        if len(self._unacknowledged) < self._sample:
            self._unacknowledged.append(
                {"payment_intent_id": payment_intent_id, "event_id": event_id, "outcome": outcome}
            )

    # -- what the fault policy reports ---------------------------------------------
    def lost(self, rpc: str, payment_intent_id: str, how: str) -> None:
        if not payment_intent_id:
            return
        if len(self._lost) >= self._max:
            gone = self._lost.pop(next(iter(self._lost)))
            self._recovered -= gone.recovered
            self.evicted += 1
        self._lost[payment_intent_id] = LostAnswer(rpc, payment_intent_id, how)

    def answered(self, payment_intent_id: str) -> None:
        """A call about ``payment_intent_id`` got its answer: a lost one is recovered."""
        lost = self._lost.get(payment_intent_id)
        if lost is not None and not lost.recovered:
            lost.recovered = True
            self._recovered += 1

    @property
    def watching(self) -> bool:
        """Whether any lost answer waits for a recovery (``answered`` is worth calling)."""
        return len(self._lost) > self._recovered

    # -- the report ------------------------------------------------------------------
    @property
    def double_charges(self) -> int:
        return len(self._doubles)

    @property
    def extra_captures(self) -> int:
        return sum(len(self._charged[r]) - 1 for r in self._doubles)

    @property
    def lost_answers(self) -> int:
        return len(self._lost)

    @property
    def recovered(self) -> int:
        return self._recovered

    def report(self) -> dict[str, Any]:
        doubles = sorted(self._doubles)[: self._sample]
        lost = list(self._lost.values())
        by_rpc: dict[str, dict[str, int]] = {}
        for item in lost:
            counts = by_rpc.setdefault(item.rpc, {"lost": 0, "recovered": 0})
            counts["lost"] += 1
            counts["recovered"] += item.recovered
        unrecovered = [x.payment_intent_id for x in lost if not x.recovered]
        return {
            "double_charges": {
                "reservations": len(self._doubles),
                "extra_captures": self.extra_captures,
                "sample": [
                    {"reservation_id": r, "payment_intent_ids": sorted(self._charged[r])}
                    for r in doubles
                ],
            },
            "lost_answers": {
                "count": len(lost),
                "recovered": self._recovered,
                "unrecovered": len(lost) - self._recovered,
                "by_rpc": by_rpc,
                "unrecovered_sample": unrecovered[: self._sample],
            },
            "abandoned_intents": {"expired": self.abandoned, "sample": list(self._abandoned)},
            "unacknowledged_webhooks": {
                "count": self.unacknowledged,
                "by_outcome": dict(sorted(self._unacknowledged_by.items())),
                "sample": list(self._unacknowledged),
            },
            "evicted": self.evicted,
        }


def _pop_oldest(d: dict[str, tuple[str, float]]) -> tuple[str, tuple[str, float]]:
    oldest = next(iter(d))
    return oldest, d.pop(oldest)


def register_ledger_gauges(metrics: Any, ledger: Ledger) -> None:
    """The report's counts as gauges read at scrape time (``metrics`` is a FaultMetrics)."""
    metrics.gauge(
        "paysim_reconciliation_double_charges",
        "Reservations with more than one captured payment not refunded.",
        lambda: ledger.double_charges,
    )
    metrics.gauge(
        "paysim_reconciliation_lost_answers",
        "Calls whose work was done and whose answer was dropped by a fault.",
        lambda: ledger.lost_answers,
    )
    metrics.gauge(
        "paysim_reconciliation_lost_answers_recovered",
        "Lost answers a later call about the same payment recovered.",
        lambda: ledger.recovered,
    )
    metrics.gauge(
        "paysim_reconciliation_abandoned_intents",
        "Payments that expired in PENDING or PROCESSING.",
        lambda: ledger.abandoned,
    )
    metrics.gauge(
        "paysim_reconciliation_unacknowledged_webhooks",
        "Status changes whose webhook delivery ended without a 2xx.",
        lambda: ledger.unacknowledged,
    )
