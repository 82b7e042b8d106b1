"""The console's memory: recent payments, their timelines, counts per status.

Fed two ways, both cheap and never blocking:

* ``created`` by ``ObservedStore.insert`` (a new intent announces nothing, so
  the outbox never sees it), with the idempotency key the claim just before
  it named;
* ``notify`` as an outbox channel (``Channel("console", recorder)``): every
  status change, partial refund and resend. It announces nothing for the
  store to keep and reports itself done at once.

Bounded: the ``max_payments`` most recently created payments, each with its
last ``max_timeline`` entries; the oldest is forgotten first. Counts per
status are over what is remembered. With a shared store (STORE_URL) this is
what *this* replica saw; a payment from another is found by id through the
store (``paysim.console.api``), without its timeline.

A change's cause: a console action says it (``expect``) just before calling
the service; otherwise it is read from the change (a refund, a cancel, an
expiry, a resend), and an answer from the PG counts as the ``timer`` when it
came at the decided time, else as ``ProcessPayment``.
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paysim.console.hub import Hub
from paysim.console.views import summary
from paysim.domain.clock import SimClock
from paysim.domain.models import Payment, PaymentStatus, StatusChange

_TIMER_SLACK_S = 0.05  # an answer this close to its due time is the timer's


@dataclass
class Entry:
    payment: Payment
    idempotency_key: str = ""
    timeline: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))


class Recorder:
    def __init__(
        self,
        hub: Hub,
        clock: SimClock,
        on_done: Callable[[str], None] = lambda event_id: None,
        max_payments: int = 5_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._hub, self._clock, self._on_done = hub, clock, on_done
        self._max = max_payments
        self._now = now
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # oldest created first
        self._keys: dict[str, str] = {}  # payment id -> idempotency key, until created
        self._causes: dict[str, str] = {}  # payment id -> what a console action did
        self.counts: Counter[str] = Counter()
        self.created_total = 0
        self.settled_total = 0  # changes to COMPLETED or FAILED
        self.skipped: deque[tuple[str, float, str]] = deque(maxlen=1_000)  # (id, at, endpoint)

    # -- fed by the store ------------------------------------------------------------
    def claimed(self, payment_id: str, key: str) -> None:
        if len(self._keys) > 10_000:  # claims whose payment never came (released)
            self._keys.clear()
        self._keys[payment_id] = key

    def created(self, payment: Payment) -> None:
        pid = payment.payment_intent_id
        entry = Entry(payment, self._keys.pop(pid, ""))
        entry.timeline.append(
            {
                "at": payment.created_at,
                "kind": "status",
                "to": payment.status.name,
                "cause": "CreatePaymentIntent",
                "scenario": payment.scenario.name,
            }
        )
        self._entries[pid] = entry
        self.counts[payment.status.name] += 1
        self.created_total += 1
        if len(self._entries) > self._max:
            _, old = self._entries.popitem(last=False)
            self.counts[old.payment.status.name] -= 1
        self._publish(entry)

    # -- the outbox channel ------------------------------------------------------------
    def report_done(self, on_done: Callable[[str], None]) -> None:
        """Report each change done to ``on_done`` (the outbox that counts this channel)."""
        self._on_done = on_done

    def announces(self, change: StatusChange) -> bool:
        return False  # nothing for the store to keep: the console only watches

    async def notify(self, change: StatusChange) -> None:
        self.changed(change)
        self._on_done(change.event_id)

    def changed(self, change: StatusChange) -> None:
        payment = change.payment
        entry = self._entries.get(payment.payment_intent_id)
        if entry is None:  # created before the console saw it (another replica, a restart)
            return
        if payment.version < entry.payment.version:
            return  # an older change, delivered late
        old, new = entry.payment.status.name, payment.status.name
        self.counts[old] -= 1
        self.counts[new] += 1
        if new != old and payment.status in (PaymentStatus.COMPLETED, PaymentStatus.FAILED):
            self.settled_total += 1
        entry.payment = payment
        item: dict[str, Any] = {
            "at": change.at,
            "kind": "resend" if change.resend else "status",
            "from": change.previous.name,
            "to": new,
            "cause": self._cause(change),
            "event_id": change.event_id,
        }
        if change.refund is not None:
            item["refund"] = {"amount": change.refund.amount.amount, "reason": change.refund.reason}
        entry.timeline.append(item)
        self._publish(entry)

    def note(self, payment_id: str, item: dict[str, Any]) -> None:
        """Add ``item`` (a worker's decision, a skipped delivery) to a payment's timeline."""
        entry = self._entries.get(payment_id)
        if entry is not None:
            entry.timeline.append(item)
            self._publish(entry)

    def expect(self, payment_id: str, cause: str) -> None:
        """The next change of ``payment_id`` is a console action's: ``cause`` names it."""
        self._causes[payment_id] = cause

    def forget_expected(self, payment_id: str) -> None:
        self._causes.pop(payment_id, None)

    def _cause(self, change: StatusChange) -> str:
        said = self._causes.pop(change.payment.payment_intent_id, None)
        if said is not None:
            return said
        status = change.payment.status
        if change.resend:
            return "SimulateWebhook (resend)"
        if change.refund is not None or status is PaymentStatus.REFUNDED:
            return "CancelPayment (refund)"
        if status is PaymentStatus.CANCELLED:
            return "CancelPayment (cancel)"
        if status is PaymentStatus.EXPIRED:
            return "expiry"
        if status in (PaymentStatus.COMPLETED, PaymentStatus.FAILED):
            p = change.payment
            due = p.created_at + self._clock.real(p.outcome.delay_s)
            return "timer" if change.at >= due - _TIMER_SLACK_S else "ProcessPayment"
        return "ProcessPayment"

    # -- what the console reads ----------------------------------------------------------
    def entry(self, payment_id: str) -> Entry | None:
        return self._entries.get(payment_id)

    def newest_first(self) -> list[Entry]:
        return list(reversed(self._entries.values()))

    def _publish(self, entry: Entry) -> None:
        if self._hub.subscribers:
            data = json.dumps(summary(entry.payment, entry.idempotency_key))
            self._hub.publish(entry.payment.payment_intent_id, "payment", data)
