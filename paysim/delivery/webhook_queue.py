"""The webhook queue: one FIFO per payment, one delivery per payment at a time, bounded in all.

Owned by one ``WebhookDispatcher``. ``put`` appends a delivery to its
payment's FIFO, waiting while WEBHOOK_QUEUE_SIZE deliveries are unfinished
(the newest work waits instead of memory growing; each wait is counted); with
room, it returns without a checkpoint. A
payment whose FIFO has work is on the ``ready`` channel once; a worker takes
it, attempts the head, and then either ``retry_later`` (the payment is not on
the channel until it calls ``ready_again``) or ``finish_head``, which puts the
payment back if its FIFO has more. So a REFUNDED never overtakes its COMPLETED.

Chaos copies (``Delivery.copy``) hold no slot. ``wait_idle`` (a
``trio_util.AsyncValue``) returns once no FIFO has work.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import trio
from trio_util import AsyncValue

from paysim.domain.events import webhook_body
from paysim.domain.models import StatusChange
from paysim.observability.delivery_metrics import WebhookMetrics


@dataclass
class Delivery:
    change: StatusChange
    body: bytes
    attempt: int = 0
    delivered: bool = False
    copy: bool = False  # a chaos duplicate: holds no queue slot, is not a delivery of its own
    reorder: str = "undecided"  # chaos: "undecided", "held" (waiting to be overtaken), "done"
    not_before: float = 0.0  # chaos (webhook lag): no first attempt before this trio time


class DeliveryQueue:
    def __init__(self, size: int, metrics: WebhookMetrics) -> None:
        self._m = metrics
        self._slots = trio.Semaphore(size)
        self._fifos: dict[str, collections.deque[Delivery]] = {}
        self._ready_send, self.ready = trio.open_memory_channel[str](float("inf"))
        self._idle = AsyncValue(True)

    async def put(self, change: StatusChange, not_before: float = 0.0) -> None:
        """Queue a delivery of ``change``; waits while the queue is full.

        ``not_before`` (webhook lag): its first attempt waits until then.
        """
        try:
            # No checkpoint while there is room: a status change's task would
            # yield to trio's scheduler here for nothing, a sixth of the CPU of
            # resolving a payment (issue 18). notify is awaited from that task only.
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            self._m.enqueue_waits.inc()
            await self._slots.acquire()
        self._m.queued.inc()
        self._idle.value = False
        payment_id = change.payment.payment_intent_id
        fifo = self._fifos.get(payment_id)
        delivery = Delivery(change, webhook_body(change), not_before=not_before)
        if fifo is None:
            self._fifos[payment_id] = collections.deque([delivery])
            self._ready_send.send_nowait(payment_id)
        else:
            fifo.append(delivery)  # behind the one in flight or waiting to retry

    def fifo(self, payment_id: str) -> collections.deque[Delivery]:
        """The payment's FIFO (head first); a worker may reorder it (chaos)."""
        return self._fifos[payment_id]

    def ready_again(self, payment_id: str) -> None:
        """Put a payment whose head waited (a retry delay, a chaos hold) back on ``ready``."""
        self._ready_send.send_nowait(payment_id)

    def finish_head(self, payment_id: str, then: Delivery | None = None) -> None:
        """The head is done; ``then`` (a chaos copy) goes first, before the rest."""
        fifo = self._fifos[payment_id]
        head = fifo.popleft()
        if not head.copy:
            self._slots.release()
        self._m.queued.dec()
        if then is not None:
            fifo.appendleft(then)
            self._m.queued.inc()
        if fifo:
            self._ready_send.send_nowait(payment_id)
        else:
            del self._fifos[payment_id]
            if not self._fifos:
                self._idle.value = True

    async def wait_idle(self) -> None:
        await self._idle.wait_value(True)

    def pending_payment_ids(self) -> list[str]:
        """One payment id per unfinished delivery (queued, in flight, waiting to retry)."""
        return [payment_id for payment_id, fifo in self._fifos.items() for d in fifo if not d.copy]
