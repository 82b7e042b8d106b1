"""Webhook delivery: at least once, signed, in order per payment, bounded.

Theory of operation
-------------------
``notify(change)`` (the notifier port) queues a delivery for every change of a
payment that has a ``webhook_url`` (``webhook_queue``: one FIFO per payment,
one delivery per payment in flight, WEBHOOK_QUEUE_SIZE in all; when it is
full ``notify`` waits). WEBHOOK_CONCURRENCY workers take payments from the
queue's ready channel and make one attempt for the head of that payment's FIFO
(``webhook_sender``: sign, pin to an SSRF-approved address, POST).

A failed attempt never holds a worker: the payment goes back on the ready
channel after its backoff delay, from a small timer task. Policy:

* 2xx: delivered. 410 Gone: stop for good. A destination the SSRF guard
  refuses: stop for good. A URL that can never be sent (``target.Target.parse``
  refuses it: a stored change from an older version that did not check) is
  dead-lettered at once, outcome ``unsendable``, with no retry: parsing is
  deterministic, so every later attempt would fail the same way while holding
  the payment's FIFO and a queue slot. Anything else (non-2xx, 3xx: redirects
  are not followed, timeouts, connection errors, an unexpected exception in the
  attempt): retry, with exponential backoff and full jitter from the configured
  ``Schedule`` (``SCHEDULES``), times SIMULATION_TIME_SCALE; ``Retry-After`` on
  429/503 is honoured (capped by the schedule's maximum); after
  WEBHOOK_MAX_ATTEMPTS the delivery is given up, logged and counted.
* Every delivery that finishes, whatever the outcome, is reported through
  ``on_done`` so the outbox (and the shared store) forget it.
* Every attempt of one event carries the same ``X-Webhook-Id`` (the event id)
  and its own ``X-Webhook-Timestamp`` and ``X-Webhook-Attempt``; each is
  recorded in the ``journal`` and counted (``metrics.webhooks``).
* Chaos (duplicates, reordering; development only) is decided by
  ``webhook_chaos`` and acted on here.
* Lag (API chaos, ``lag_with``): a hook, filled by the fault policy, says for
  each delivery that becomes due (``notify``) how long it waits before its
  first attempt (0: none). The delivery is queued at once, in its payment's
  FIFO, holding its queue slot, and the head of that FIFO waits on a timer
  task like a retry: order per payment is kept (a later change waits behind a
  lagged one), and held deliveries are bounded by WEBHOOK_QUEUE_SIZE. Lag is
  in trio seconds, not scaled by SIMULATION_TIME_SCALE.

The httpx client is owned by the caller (the app root) and closed by it; the
worker tasks live in ``run``'s nursery and end when it is cancelled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import httpx
import structlog
import trio

from paysim.backoff import SCHEDULES as SCHEDULES
from paysim.config import WebhookSettings
from paysim.delivery.journal import Attempt, DeliveryJournal
from paysim.delivery.ssrf import SsrfPolicy
from paysim.delivery.webhook_chaos import DeliveryChaos
from paysim.delivery.webhook_queue import Delivery, DeliveryQueue
from paysim.delivery.webhook_sender import Sent, WebhookSender
from paysim.domain.clock import SimClock
from paysim.domain.events import status_name
from paysim.domain.models import StatusChange
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.webhooks")

# How long a delivery that becomes due now waits before its first attempt, in seconds.
DeliveryLag = Callable[[], float]


@dataclass(frozen=True)
class DispatcherSeams:
    """What the wiring or tests supply instead of the defaults: the jitter's
    randomness, the wall clock (headers, lag) and the SSRF policy (the wiring
    passes the one it built for the gRPC edge, so both check alike)."""

    rng: random.Random = field(default_factory=random.Random)
    wall_clock: Callable[[], float] = time.time
    policy: SsrfPolicy | None = None


class WebhookDispatcher:
    def __init__(
        self,
        settings: WebhookSettings,
        client: httpx.AsyncClient,
        metrics: Metrics,
        *,
        time_scale: float = 1.0,
        on_done: Callable[[str], None] = lambda event_id: None,
        seams: DispatcherSeams | None = None,
    ) -> None:
        """``time_scale`` (SIMULATION_TIME_SCALE) compresses retry delays, through a ``SimClock``.

        ``on_done(event_id)`` is called once per change when this dispatcher is
        finished with it: delivered, given up, gone, refused, or nothing to send
        (no webhook URL). Not for what is still queued when it stops.
        """
        seams = seams if seams is not None else DispatcherSeams()
        self._on_done = on_done
        self._settings = settings
        self._clock = SimClock(time_scale)
        self._schedule = SCHEDULES[settings.retry_schedule]
        self._rng = seams.rng
        self._now = seams.wall_clock
        self.journal = DeliveryJournal()
        self._m = metrics.webhooks
        self._queue = DeliveryQueue(settings.queue_size, self._m)
        self._sender = WebhookSender(settings, client, seams.wall_clock, seams.policy)
        self._chaos = DeliveryChaos(settings, self._m, time_scale)
        self._nursery: trio.Nursery | None = None
        self._lag: DeliveryLag | None = None

    def lag_with(self, lag: DeliveryLag) -> None:
        """Ask ``lag`` for every delivery that becomes due from now on (module docstring)."""
        self._lag = lag

    # -- the notifier port ---------------------------------------------------
    def announces(self, change: StatusChange) -> bool:
        return bool(change.payment.webhook_url)

    async def notify(self, change: StatusChange) -> None:
        if not change.payment.webhook_url:
            self._on_done(change.event_id)
            return
        due = 0.0
        if self._lag is not None:
            lag = self._lag()
            if lag > 0:
                due = trio.current_time() + lag
        await self._queue.put(change, due)

    async def wait_idle(self) -> None:
        """Block until every queued delivery has finished (delivered or given up)."""
        await self._queue.wait_idle()

    def pending_payment_ids(self) -> list[str]:
        """One payment id per delivery not finished yet: queued, in flight or waiting to retry.

        For the shutdown report (what the grace could not deliver). Changes
        still waiting in ``notify`` for room in a full queue are not here: their
        payments are still being resolved, and the simulator reports those.
        """
        return self._queue.pending_payment_ids()

    # -- workers ---------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self._settings.concurrency):
                nursery.start_soon(self._worker)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _worker(self) -> None:
        async for payment_id in self._queue.ready:
            fifo = self._queue.fifo(payment_id)
            lagged = fifo[0].not_before
            if lagged and not fifo[0].attempt and lagged > trio.current_time():
                self._later(payment_id, lagged - trio.current_time())
                continue
            hold_s = self._chaos.hold_back(fifo)
            if hold_s is not None:
                self._later(payment_id, hold_s)
                continue
            delivery = fifo[0]
            delivery.attempt += 1
            retry_in = await self._attempt(payment_id, delivery)
            if retry_in is not None:
                self._later(payment_id, retry_in)
                continue
            self._queue.finish_head(payment_id, then=self._chaos.duplicate(delivery))
            if not delivery.copy:
                self._on_done(delivery.change.event_id)

    def _later(self, payment_id: str, delay: float) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._requeue_after, payment_id, delay)

    async def _requeue_after(self, payment_id: str, delay: float) -> None:
        await trio.sleep(delay)
        self._queue.ready_again(payment_id)

    # -- one attempt and the retry policy ------------------------------------------
    async def _attempt(self, payment_id: str, d: Delivery) -> float | None:
        """Make one attempt; return the delay before the next one, or None when done."""
        change = d.change
        sent = await self._sender.send(change, d.body, d.attempt)
        self._m.attempted(sent.result, sent.seconds)
        outcome, retry_in = self._decide(d, sent)
        attempt = Attempt(
            event_id=change.event_id,
            status=status_name(change.payment.status),
            attempt=d.attempt,
            at=self._now(),
            url=sent.url,
            outcome=outcome,
            http_status=sent.http_status,
            error=sent.error,
            latency_ms=round(sent.seconds * 1000, 3),
            next_retry_s=None if retry_in is None else round(retry_in, 3),
            excerpt=sent.excerpt,
        )
        self.journal.record(payment_id, attempt)
        if retry_in is None and not d.copy:
            self.journal.finished(payment_id, attempt)
            self._m.delivered(outcome)
            if outcome != "delivered":
                log.warning(
                    "webhook not delivered",
                    payment_id=payment_id,
                    event_id=change.event_id,
                    outcome=outcome,
                    attempts=d.attempt,
                    http_status=sent.http_status,
                    error=sent.error,
                )
        return retry_in

    def _decide(self, d: Delivery, sent: Sent) -> tuple[str, float | None]:
        """The attempt's outcome and the delay before the next one (None: finished)."""
        if sent.ok:
            d.delivered = True
            if not d.copy:
                self._m.lag.observe(max(0.0, self._now() - d.change.at))
            return "delivered", None
        if sent.http_status == 410:
            return "gone", None
        if sent.result in ("blocked", "unsendable"):
            return sent.result, None
        if d.attempt >= self._settings.max_attempts:
            return "gave_up", None
        retry_in = self._schedule.delay(d.attempt, self._rng)
        if sent.retry_after is not None:
            retry_in = min(max(retry_in, sent.retry_after), self._schedule.cap_s)
        return "retry", self._clock.real(retry_in)
