"""Webhook chaos: duplicates and out-of-order deliveries (development and staging only).

Two things real PGs do now and then, which consumers must survive, and which no
real PG lets a tester ask for. Both default to off (``Settings`` refuses them
in production).

* **Duplicates** (CHAOS_WEBHOOK_DUPLICATE_RATE): after a delivery succeeded, it
  is sent once more, right away: the same body and ``X-Webhook-Id``, the next
  ``X-Webhook-Attempt`` (as when a PG lost the receiver's 200 and retried).
* **Out of order** (CHAOS_WEBHOOK_REORDER_RATE): a delivery that reaches the
  head of its payment's FIFO is held back. If a later change of the same
  payment is already queued, or arrives within CHAOS_WEBHOOK_REORDER_HOLD_MS
  (times SIMULATION_TIME_SCALE), the later one is delivered first and the held
  one right after it: an older state arrives after a newer one, as when a PG's
  retry of event 1 lands after event 2. If nothing overtakes it, it goes out in
  order, only late. A delivery is considered once, before its first attempt.

Each decision is a pure function of (CHAOS_SEED, default SIMULATION_SEED; the
kind; the change's reservation id, status and amount refunded so far), not a
draw from a shared stream: a rerun with the same seed and the same reservation
ids makes the same decisions whatever the delivery order and timing. Injected
copies hold no queue slot, are not counted as deliveries
(``paysim_webhook_deliveries_total``) nor reported as undelivered at shutdown;
every injection is counted in ``paysim_webhook_chaos_total{kind}`` (kind
``duplicate``, ``hold``: held back, ``reorder``: overtaken).

``DeliveryChaos`` decides; the dispatcher's workers act (hold timers, queueing
the copy).
"""

from __future__ import annotations

import collections
import hashlib
import secrets

import structlog

from paysim.config import WebhookSettings
from paysim.delivery.webhook_queue import Delivery
from paysim.domain.clock import SimClock
from paysim.domain.models import StatusChange
from paysim.observability.delivery_metrics import WebhookMetrics

log = structlog.get_logger("paysim.webhooks")


class ChaosDice:
    """Yes/no chaos decisions, reproducible per change (see the module docstring).

    A hash of (seed, kind, reservation id, status, amount refunded) mapped to
    [0, 1) and compared with the rate. Without a seed, a random salt per
    process: decisions then differ from run to run, as draws would.
    """

    def __init__(self, seed: int | None) -> None:
        self._salt = str(seed) if seed is not None else secrets.token_hex(8)

    def roll(self, kind: str, change: StatusChange, rate: float) -> bool:
        if rate <= 0.0:
            return False
        p = change.payment
        key = f"{self._salt}|{kind}|{p.reservation_id}|{p.status.name}|{p.refunded}"
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64 < rate


class DeliveryChaos:
    def __init__(self, settings: WebhookSettings, metrics: WebhookMetrics, time_scale: float):
        self._settings = settings
        self._m = metrics
        self._hold_s = SimClock(time_scale).real(settings.chaos_reorder_hold_s)
        self._dice = ChaosDice(settings.chaos_seed)
        if settings.chaos_enabled:
            log.warning(
                "webhook chaos is on: duplicates and out-of-order deliveries are injected",
                duplicate_rate=settings.chaos_duplicate_rate,
                reorder_rate=settings.chaos_reorder_rate,
                reorder_hold_s=settings.chaos_reorder_hold_s,
            )

    def hold_back(self, fifo: collections.deque[Delivery]) -> float | None:
        """Let a later change overtake the head; the seconds to hold it, when it is held now."""
        head = fifo[0]
        if head.reorder == "undecided":
            head.reorder = "done"
            rate = self._settings.chaos_reorder_rate
            if head.attempt or head.copy or not self._dice.roll("reorder", head.change, rate):
                return None
            if len(fifo) < 2:
                head.reorder = "held"
                self._m.chaos["hold"].inc()
                return self._hold_s
        elif head.reorder == "held":
            head.reorder = "done"
            if len(fifo) < 2:
                return None  # nothing overtook it: it goes out late, in order
        else:
            return None
        fifo.popleft()
        fifo.insert(1, head)
        fifo[0].reorder = "done"
        self._m.chaos["reorder"].inc()
        return None

    def duplicate(self, sent: Delivery) -> Delivery | None:
        """A copy of a delivered webhook to send once more, next, with the same id and body."""
        rate = self._settings.chaos_duplicate_rate
        if not sent.delivered or sent.copy or not self._dice.roll("duplicate", sent.change, rate):
            return None
        self._m.chaos["duplicate"].inc()
        return Delivery(sent.change, sent.body, attempt=sent.attempt, copy=True, reorder="done")
