"""The reservation worker's consumer: payment outcomes from SQS to the reservation service.

Theory of operation
-------------------

``ReservationWorker.run`` first waits until the queue answers
(``SqsQueue.wait_reachable``, retried with backoff), then runs three kinds of
tasks in its own nurseries and reports ``task_status.started(self)``:

* **pollers** (``settings.pollers``): each reserves handling slots for a batch
  (up to 10, never more than ``settings.concurrency`` in all), long-polls
  ReceiveMessage (``WaitTimeSeconds=settings.wait_time_s``) in a worker thread,
  and starts one handler task per message. A message is received only when a
  slot is free for it, so nothing waits invisible in memory for long.
* **handlers**, one per message: parse the EventBridge envelope
  (``paysim.domain.event_parsing``), de-duplicate by the envelope ``id``
  (``EventDedup``), and tell the reservation service (``Reservations``):
  CONFIRMED for COMPLETED, CANCELLED for FAILED, CANCELLED and EXPIRED. A
  handled message goes to the delete queue.
* **deleters**: one task groups handled messages into batches (10, or what
  came within ``DELETE_LINGER_S``, 20 ms); ``max(2, pollers)`` tasks remove
  each batch with one DeleteMessageBatch (``SqsQueue.delete``). A boto3 call
  costs about a millisecond of CPU: one call per ten messages rather than per
  message matters.

Policy decisions
----------------

* **Delete only what was handled.** Handled means: the reservation service
  answered 2xx, or there was nothing to tell it (a status other than
  COMPLETED/FAILED/CANCELLED/EXPIRED, e.g. PENDING or REFUNDED: acknowledged
  with a log line), or the event is a duplicate, or no RESERVATION_API_URL is
  set (the decision is logged instead). Each carried-out decision is
  recorded (``record``: bounded, see ``paysim.worker.record``) for
  ``GET /reconciliation``; a failed call is not (it has not happened yet).
* **A failure is left alone.** Any non-2xx answer (4xx included), a connection
  error or a timeout (``reservation_timeout_s`` for the whole call) leaves the
  message invisible until its visibility timeout ends; SQS then redelivers it,
  and after the queue's maxReceiveCount moves it to the DLQ. No visibility
  games: the queue's redrive policy is the one retry policy.
* **Malformed messages are not deleted** either: they are counted by reason,
  logged (never their body) and left for the DLQ. Forward compatibility: an
  unknown ``PAYMENT_STATUS_*`` name is acknowledged like PENDING, extra fields
  are ignored; a field of the wrong type, a wrong detail-type or source is
  malformed.
* **Visibility**: ``settings.visibility_timeout_s`` is sent with each
  ReceiveMessage; 0 means "the queue's own VisibilityTimeout".
* **Graceful stop** (``stop(grace_s)``): stop receiving at once, let in-flight
  messages finish within ``grace_s``, then cancel what is left and release it
  (ChangeMessageVisibility 0) so another worker gets it at once; deletes
  already queued are still sent. A long poll that is still running when the
  worker stops is abandoned; if it returns messages, its thread releases them.

Resource handling: the worker owns neither client: the caller creates and
closes the boto3 client and the HTTP client. It records on its
``WorkerMetrics`` (one worker per ``WorkerMetrics``). ``run`` may be called
once per worker.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
import trio

from paysim.backoff import Backoff
from paysim.config import AwsSettings, WorkerSettings
from paysim.domain.event_parsing import Malformed, PaymentEvent, parse_event
from paysim.worker.dedup import EventDedup
from paysim.worker.metrics import WorkerMetrics
from paysim.worker.record import Action, ReservationRecord
from paysim.worker.reservations import ReservationHttp, Reservations
from paysim.worker.sqs_queue import (
    MAX_BATCH,
    SQS_CALL_TIMEOUT_S,
    SQS_RETRY,
    SqsError,
    SqsMessage,
    SqsQueue,
)

log = structlog.get_logger("paysim.worker")

DELETE_LINGER_S = 0.02  # how long a partial delete batch waits for more messages


@dataclass(frozen=True)
class ConsumerOptions:
    """What a worker is tuned with besides its settings (tests and benchmarks change them)."""

    event_source: str = AwsSettings.event_source  # the only accepted envelope ``source``
    sqs_timeout_s: float = SQS_CALL_TIMEOUT_S  # every SQS call; the long poll gets wait_time_s more
    dedup_size: int = 100_000  # handled event ids remembered
    record_size: int = 20_000  # reservations whose actions are kept for /reconciliation


@dataclass(slots=True)
class _Ticket:
    """One ReceiveMessage call, shared by the poller and its thread (under the handover lock)."""

    abandoned: bool = False  # the poller no longer waits for this call
    messages: list[SqsMessage] | None = None  # what the thread handed over


class ReservationWorker:
    """Consumes payment events from ``settings.queue_url``; see the module docstring."""

    def __init__(
        self,
        settings: WorkerSettings,
        sqs: Any,
        http: ReservationHttp,
        *,
        metrics: WorkerMetrics | None = None,
        options: ConsumerOptions | None = None,
    ) -> None:
        options = options if options is not None else ConsumerOptions()
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._queue = SqsQueue(sqs, settings, self.metrics, options.sqs_timeout_s)
        self._settings = settings
        self._source = options.event_source
        self._reservations = Reservations(http, settings)
        self._dedup = EventDedup(options.dedup_size)
        self.record = ReservationRecord(options.record_size)
        self._batch = min(MAX_BATCH, settings.concurrency)
        self._deleters = max(2, settings.pollers)
        self._slots = trio.Semaphore(settings.concurrency)
        self._reserve_lock = trio.Lock()  # one poller reserves a batch of slots at a time
        self._delete_tx, self._delete_rx = trio.open_memory_channel[SqsMessage](
            settings.concurrency
        )
        self._batch_tx, self._batch_rx = trio.open_memory_channel[list[SqsMessage]](0)
        # Received and not settled, by receipt handle. Pollers' threads add to it
        # under _handover_lock (also guarding _stopping); trio code removes.
        self._unfinished: dict[str, SqsMessage] = {}
        self._handover_lock = threading.Lock()
        self._stopping = False
        self._drained = trio.Event()  # set once stopping and nothing is unfinished
        self._pollers_scope = trio.CancelScope()
        self._handlers_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        self.metrics.track_in_flight(lambda: len(self._unfinished))

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled."""
        return len(self._unfinished)

    @property
    def handled_event_ids(self) -> list[str]:
        """The de-duplication memory, least recently seen first."""
        return self._dedup.handled_ids

    # -- lifetime ------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[ReservationWorker] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Consume until cancelled; ``task_status.started(self)`` once the queue answers."""
        await self._queue.wait_reachable()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._batch_loop)
            for _ in range(self._deleters):
                nursery.start_soon(self._delete_loop)
            with self._handlers_scope:
                async with trio.open_nursery() as handlers:
                    self._handlers = handlers
                    with self._pollers_scope:
                        async with trio.open_nursery() as pollers:
                            for _ in range(self._settings.pollers):
                                pollers.start_soon(self._poll_loop)
                            task_status.started(self)
            # Stopped: only the deleters remain, until the caller cancels us.
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def stop(self, grace_s: float = math.inf) -> None:
        """Stop receiving; finish in-flight messages within ``grace_s``, release the rest.

        Returns once every received message is deleted, left or released (the
        release and the last deletes get ``sqs_timeout_s`` more). Call once;
        ``run`` keeps running (idle) until its caller cancels it.
        """
        with self._handover_lock:
            self._stopping = True
        self._pollers_scope.cancel()
        self._check_drained()
        log.info("worker stopping", in_flight=len(self._unfinished), grace_s=grace_s)
        with trio.move_on_after(grace_s):
            await self._drained.wait()
        self._handlers_scope.cancel()
        leftovers = [m for m in self._unfinished.values() if not m.deleting]
        for m in leftovers:
            del self._unfinished[m.receipt_handle]
        self._check_drained()
        if leftovers:
            log.warning("grace period over; releasing in-flight messages", count=len(leftovers))
            await self._queue.release(leftovers)
        with trio.move_on_after(self._queue.timeout_s):
            await self._drained.wait()
        log.info("worker drained", unfinished=len(self._unfinished))

    def _settle(self, message: SqsMessage) -> None:
        self._unfinished.pop(message.receipt_handle, None)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._unfinished:
            self._drained.set()

    # -- receiving -----------------------------------------------------------------

    async def _poll_loop(self) -> NoReturn:
        assert self._handlers is not None
        receive_timeout_s = self._settings.wait_time_s + self._queue.timeout_s
        backoff = Backoff(SQS_RETRY)
        while True:
            reserved = 0
            try:
                async with self._reserve_lock:
                    while reserved < self._batch:
                        await self._slots.acquire()
                        reserved += 1
                messages = await self._receive(reserved, receive_timeout_s)
                if messages is None:
                    delay = backoff.failed()
                    self._release_slots(reserved)
                    reserved = 0
                    await trio.sleep(delay)
                    continue
                backoff.reset()
                if messages:
                    self.metrics.received.inc(len(messages))
                for message in messages:
                    self._handlers.start_soon(self._handle, message)
                    reserved -= 1
            finally:
                self._release_slots(reserved)

    async def _receive(self, count: int, timeout_s: float) -> list[SqsMessage] | None:
        """One long poll; None when it failed (logged). Messages are in ``_unfinished``."""
        ticket = _Ticket()
        hand_over = functools.partial(self._hand_over, ticket)
        call = functools.partial(self._queue.receive_blocking, count, hand_over)
        try:
            return await self._queue.call("receive", call, timeout_s)
        except SqsError as exc:
            with self._handover_lock:
                ticket.abandoned = True
                delivered = ticket.messages  # the thread handed over just as we gave up
            if delivered:
                return delivered
            log.warning("receive failed; retrying", error=str(exc))
            return None
        except BaseException:
            # Cancelled: the thread releases what it gets; what it already handed
            # over stays in _unfinished, which stop() releases.
            with self._handover_lock:
                ticket.abandoned = True
            raise

    def _hand_over(self, ticket: _Ticket, messages: list[SqsMessage]) -> bool:
        """In the receiving thread: take the messages unless the poller gave up on them."""
        with self._handover_lock:
            if self._stopping or ticket.abandoned:
                return False
            ticket.messages = messages
            for m in messages:
                self._unfinished[m.receipt_handle] = m
            return True

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    # -- handling ------------------------------------------------------------------

    async def _handle(self, message: SqsMessage) -> None:
        """Decide one message's fate; owns one slot, which it gives back."""
        started = time.perf_counter()
        try:
            try:
                delete = await self._process(message)
            except Exception:
                log.exception("handling failed", message_id=message.message_id)
                self.metrics.failures["internal"].inc()
                delete = False
            self.metrics.handling.observe(time.perf_counter() - started)
            if delete:
                message.deleting = True  # before the hand-over: stop() must not release it
                try:
                    await self._delete_tx.send(message)
                except BaseException:  # cancelled: not handed over after all
                    message.deleting = False
                    raise
            else:
                self._settle(message)
        finally:
            self._slots.release()

    async def _process(self, message: SqsMessage) -> bool:
        """Handle one message; True if it may be deleted."""
        try:
            event = parse_event(message.body, self._source)
        except Malformed as exc:
            self.metrics.malformed[exc.reason].inc()
            log.warning(
                "malformed message; left for the DLQ",
                message_id=message.message_id,
                receive_count=message.receive_count,
                reason=exc.reason,
                problem=exc.problem,
            )
            return False
        act = functools.partial(self._act, event, message)
        handled = await self._dedup.handle_once(event.event_id, act)
        if handled is None:
            self.metrics.handled["duplicate"].inc()
            log.debug("duplicate event; deleting", event_id=event.event_id)
            return True
        return handled

    async def _act(self, event: PaymentEvent, message: SqsMessage) -> bool:
        decision = event.decision
        fields = {
            "event_id": event.event_id,
            "payment_id": event.payment_id,
            "reservation_id": event.reservation_id,
            "status": event.status,
        }
        if decision is None:
            self.metrics.handled["ignored"].inc()
            log.info("no reservation change for this status; acknowledged", **fields)
            return True
        outcome = decision.lower()
        if not self._reservations.configured:
            self.metrics.handled[outcome].inc()
            self._done(event, decision)
            log.info("reservation decision (no RESERVATION_API_URL)", decision=decision, **fields)
            return True
        failure = await self._reservations.tell(event, decision)
        if failure is None:
            self.metrics.handled[outcome].inc()
            self._done(event, decision)
            log.debug("reservation updated", decision=decision, **fields)
            return True
        reason, problem = failure
        self.metrics.failures[reason].inc()
        log.warning(
            "reservation call failed; message left for redelivery",
            decision=decision,
            reason=reason,
            problem=problem,
            receive_count=message.receive_count,
            **fields,
        )
        return False

    @property
    def reservation_api(self) -> bool:
        """Whether decisions are sent to a reservation service (else only logged)."""
        return self._reservations.configured

    def _done(self, event: PaymentEvent, decision: str) -> None:
        action = Action(decision, event.payment_id, event.status, time.time())
        self.record.add(event.reservation_id, action)

    # -- deleting ------------------------------------------------------------------

    async def _batch_loop(self) -> NoReturn:
        """Group handled messages into batches: 10, or what came within DELETE_LINGER_S."""
        while True:
            batch = [await self._delete_rx.receive()]
            with trio.move_on_after(DELETE_LINGER_S):
                while len(batch) < MAX_BATCH:
                    batch.append(await self._delete_rx.receive())
            await self._batch_tx.send(batch)

    async def _delete_loop(self) -> NoReturn:
        while True:
            await self._delete(await self._batch_rx.receive())

    async def _delete(self, batch: list[SqsMessage]) -> None:
        for message, code in await self._queue.delete(batch):
            self.metrics.delete_failures.inc()
            log.warning(
                "could not delete a handled message; it will be redelivered",
                message_id=message.message_id,
                code=code,
            )
        for message in batch:
            self._settle(message)
