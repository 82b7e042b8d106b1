"""The reservation worker: payment outcomes from SQS to the reservation service.

Theory of operation
-------------------

``ReservationWorker.run`` first checks that the queue is reachable
(GetQueueAttributes, retried with backoff until it answers), then runs three
kinds of tasks in its own nurseries and reports ``task_status.started(self)``:

* **pollers** (``settings.pollers``): each reserves handling slots for a batch
  (up to 10, never more than ``settings.concurrency`` in all), long-polls
  ReceiveMessage (``WaitTimeSeconds=settings.wait_time_s``) in a worker thread,
  and starts one handler task per message. A message is received only when a
  slot is free for it, so nothing waits invisible in memory for long.
* **handlers**, one per message: parse the EventBridge envelope, validate the
  detail, de-duplicate by the envelope ``id``, and tell the reservation
  service: ``PATCH {RESERVATION_API_URL}/internal/reservations/{reservation_id}``
  with ``{"status":"CONFIRMED"}`` (COMPLETED) or ``{"status":"CANCELLED"}``
  (FAILED, CANCELLED, EXPIRED). A handled message goes to the delete queue.
* **deleters**: one task groups handled messages into batches (10, or what
  came within ``DELETE_LINGER_S``, 20 ms); ``max(2, pollers)`` tasks remove
  each batch with one DeleteMessageBatch, checking its ``Failed`` list (a
  failed call is retried twice). A boto3 call costs about a millisecond of
  CPU: one call per ten messages rather than per message matters.

Every boto3 call runs in a thread through ``trio.to_thread.run_sync`` behind
the worker's own ``CapacityLimiter`` and under ``trio.fail_after``; botocore
and trio errors become ``SqsError`` at that one place (``_call``).

Policy decisions
----------------

* **Delete only what was handled.** Handled means: the reservation service
  answered 2xx, or there was nothing to tell it (a status other than
  COMPLETED/FAILED/CANCELLED/EXPIRED, e.g. PENDING or REFUNDED: acknowledged
  with a log line), or the event is a duplicate, or no RESERVATION_API_URL is
  set (the decision is logged instead).
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
* **De-duplication** by the envelope ``id`` (EventBridge's event id, the same
  in every copy of one event): a bounded LRU of handled ids (``dedup_size``).
  A duplicate is deleted without calling the reservation service; a copy that
  arrives while the first is still being handled waits for its outcome. The
  PATCH is idempotent anyway: this saves calls, it does not carry correctness.
* **Visibility**: ``settings.visibility_timeout_s`` is sent with each
  ReceiveMessage; 0 means "the queue's own VisibilityTimeout".
* **Graceful stop** (``stop(grace_s)``): stop receiving at once, let in-flight
  messages finish within ``grace_s``, then cancel what is left and release it
  (ChangeMessageVisibility 0) so another worker gets it at once; deletes
  already queued are still sent. A long poll that is still running when the
  worker stops is abandoned; if it returns messages, its thread releases them.

The reservation service is reached through ``ReservationHttp``, the one
method of ``paysim.adapters.http1_client.Http1Client`` the worker needs (a
fake in the unit tests): ``Http1Error`` is a connection or protocol failure,
any status comes back as an answer, and the worker bounds each call with
``trio.fail_after``. The PATCH is marked idempotent (it sets the status to a
fixed value), so the client may resend it once on a fresh connection when a
kept-alive one turns out closed.

Resource handling: the worker owns neither client: the caller creates and
closes the boto3 client and the HTTP client. The worker registers
its ``paysim_worker_*`` metrics on ``metrics.registry`` (one worker per
``Metrics``). ``run`` may be called once per worker.
"""

from __future__ import annotations

import functools
import json
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import quote

import structlog
import trio
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter, Gauge, Histogram

from paysim.adapters.http1_client import Http1Error
from paysim.config import AwsSettings, WorkerSettings
from paysim.domain.event_parsing import (
    DECISIONS,
    MALFORMED_REASONS,
    Malformed,
    PaymentEvent,
    parse_event,
)
from paysim.observability.metrics import HANDLING_BUCKETS, Metrics

log = structlog.get_logger("paysim.worker")

T = TypeVar("T")

MAX_BATCH = 10  # SQS's limit for ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch
DELETE_LINGER_S = 0.02  # how long a partial delete batch waits for more messages
SQS_CALL_TIMEOUT_S = 10.0  # every SQS call but the long poll (which gets wait_time_s more)
_BACKOFF_BASE_S = 0.2
_BACKOFF_CAP_S = 10.0
_DELETE_ATTEMPTS = 3
_BODIES = {d: json.dumps({"status": d}, separators=(",", ":")).encode() for d in DECISIONS.values()}
_CONTENT_TYPE = ("Content-Type", "application/json")

OUTCOMES = ("confirmed", "cancelled", "ignored", "duplicate")
FAILURE_REASONS = ("http_status", "connection", "timeout", "internal")
SQS_OPERATIONS = ("check", "receive", "delete", "release")


# -- the reservation service's port ------------------------------------------------


class HttpAnswer(Protocol):
    @property
    def status(self) -> int: ...


class ReservationHttp(Protocol):
    """The HTTP client the worker calls the reservation service with (``Http1Client``)."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Sequence[tuple[str, str]] = (),
        idempotent: bool | None = None,
    ) -> HttpAnswer:
        """The whole answer, whatever its status; ``Http1Error`` if there is none."""
        ...


# -- metrics -----------------------------------------------------------------------


class WorkerMetrics:
    """The worker's ``paysim_worker_*`` series, registered on ``metrics.registry``."""

    def __init__(self, metrics: Metrics, in_flight: Callable[[], int]) -> None:
        self.registry = reg = metrics.registry
        self.received = Counter(
            "paysim_worker_messages_received", "SQS messages received.", registry=reg
        )
        handled = Counter(
            "paysim_worker_messages_handled",
            "Messages handled (and deleted), by outcome.",
            ("outcome",),
            registry=reg,
        )
        self.handled = {o: handled.labels(o) for o in OUTCOMES}
        failures = Counter(
            "paysim_worker_failures",
            "Messages left for redelivery because the reservation call failed, by reason.",
            ("reason",),
            registry=reg,
        )
        self.failures = {r: failures.labels(r) for r in FAILURE_REASONS}
        malformed = Counter(
            "paysim_worker_malformed",
            "Malformed messages (left for the DLQ), by reason.",
            ("reason",),
            registry=reg,
        )
        self.malformed = {r: malformed.labels(r) for r in MALFORMED_REASONS}
        self.delete_failures = Counter(
            "paysim_worker_delete_failures",
            "Handled messages whose deletion failed (they will be redelivered).",
            registry=reg,
        )
        self.released = Counter(
            "paysim_worker_messages_released",
            "In-flight messages made visible again at shutdown.",
            registry=reg,
        )
        sqs_errors = Counter(
            "paysim_worker_sqs_errors",
            "Failed SQS calls, by operation.",
            ("operation",),
            registry=reg,
        )
        self.sqs_errors = {op: sqs_errors.labels(op) for op in SQS_OPERATIONS}
        self.handling = Histogram(
            "paysim_worker_handling_seconds",
            "Time from the start of handling a message to its outcome.",
            buckets=HANDLING_BUCKETS,
            registry=reg,
        )
        gauge = Gauge(
            "paysim_worker_messages_in_flight",
            "Messages received and not yet deleted, left or released.",
            registry=reg,
        )
        gauge.set_function(lambda: float(in_flight()))


# -- the worker --------------------------------------------------------------------


class SqsError(Exception):
    """An SQS call failed or timed out: the one error type of the SQS edge."""

    def __init__(self, operation: str, problem: str) -> None:
        super().__init__(f"{operation}: {problem}")
        self.operation = operation


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


@dataclass(slots=True)
class _Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    deleting: bool = False  # handed to the deleters


def _message(raw: dict[str, Any]) -> _Message:
    count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "0")
    return _Message(
        message_id=str(raw.get("MessageId", "")),
        receipt_handle=str(raw.get("ReceiptHandle", "")),
        body=str(raw.get("Body", "")),
        receive_count=int(count) if str(count).isdigit() else 0,
    )


@dataclass(slots=True)
class _Ticket:
    """One ReceiveMessage call, shared by the poller and its thread (under the handover lock)."""

    abandoned: bool = False  # the poller no longer waits for this call
    messages: list[_Message] | None = None  # what the thread handed over


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))


def sqs_threads(settings: WorkerSettings) -> int:
    """How many SQS calls a worker makes at once (size the client's connection pool to it).

    One long poll per poller, ``max(2, pollers)`` deleters, two spare for releases.
    """
    return settings.pollers + max(2, settings.pollers) + 2


class ReservationWorker:
    """Consumes payment events from ``settings.queue_url``; see the module docstring."""

    def __init__(
        self,
        settings: WorkerSettings,
        sqs: Any,
        http: ReservationHttp,
        metrics: Metrics,
        dedup_size: int = 100_000,
        *,
        event_source: str = AwsSettings.event_source,
        sqs_timeout_s: float = SQS_CALL_TIMEOUT_S,
    ) -> None:
        if settings.queue_url is None:
            raise ValueError("the worker needs a queue URL (PAYMENT_WEBHOOK_QUEUE_URL)")
        self._settings = settings
        self._queue_url: str = settings.queue_url
        self._sqs = sqs
        self._http = http
        self._source = event_source
        self._sqs_timeout_s = sqs_timeout_s
        self._dedup_size = dedup_size
        base = settings.reservation_api_url
        self._reservations = base.rstrip("/") + "/internal/reservations/" if base else None
        self._batch = min(MAX_BATCH, settings.concurrency)
        self._deleters = max(2, settings.pollers)
        self._limiter = trio.CapacityLimiter(sqs_threads(settings))
        self._slots = trio.Semaphore(settings.concurrency)
        self._reserve_lock = trio.Lock()  # one poller reserves a batch of slots at a time
        self._delete_tx, self._delete_rx = trio.open_memory_channel[_Message](settings.concurrency)
        self._batch_tx, self._batch_rx = trio.open_memory_channel[list[_Message]](0)
        # Received and not settled, by receipt handle. Pollers' threads add to it
        # under _handover_lock (also guarding _stopping); trio code removes.
        self._unfinished: dict[str, _Message] = {}
        self._handover_lock = threading.Lock()
        self._stopping = False
        self._drained = trio.Event()  # set once stopping and nothing is unfinished
        self._handled: OrderedDict[str, None] = OrderedDict()  # LRU of handled event ids
        self._in_progress: dict[str, trio.Event] = {}
        self._pollers_scope = trio.CancelScope()
        self._handlers_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        self.metrics = WorkerMetrics(metrics, lambda: len(self._unfinished))

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled."""
        return len(self._unfinished)

    # -- lifetime ------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[ReservationWorker] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Consume until cancelled; ``task_status.started(self)`` once the queue answers."""
        await self._check_queue()
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
            await self._release(leftovers)
        with trio.move_on_after(self._sqs_timeout_s):
            await self._drained.wait()
        log.info("worker drained", unfinished=len(self._unfinished))

    def _settle(self, message: _Message) -> None:
        self._unfinished.pop(message.receipt_handle, None)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._stopping and not self._unfinished:
            self._drained.set()

    # -- SQS edge ------------------------------------------------------------------

    async def _call(self, operation: str, fn: Callable[[], T], timeout_s: float) -> T:
        """Run one blocking boto3 call in a thread, under a deadline; errors become SqsError."""
        try:
            with trio.fail_after(timeout_s):
                return await trio.to_thread.run_sync(
                    fn, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            self.metrics.sqs_errors[operation].inc()
            raise SqsError(operation, f"no answer within {timeout_s:g} s") from None
        except (BotoCoreError, ClientError) as exc:
            self.metrics.sqs_errors[operation].inc()
            raise SqsError(operation, _describe(exc)) from exc

    async def _check_queue(self) -> None:
        """Wait until the queue answers GetQueueAttributes; log its settings."""
        call = functools.partial(
            self._sqs.get_queue_attributes,
            QueueUrl=self._queue_url,
            AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
        )
        attempt = 0
        while True:
            try:
                answer = await self._call("check", call, self._sqs_timeout_s)
                break
            except SqsError as exc:
                delay = _backoff(attempt)
                log.warning("queue not reachable; retrying", error=str(exc), retry_in_s=delay)
                attempt += 1
                await trio.sleep(delay)
        attributes = answer.get("Attributes", {})
        redrive = attributes.get("RedrivePolicy")
        log.info(
            "worker queue",
            queue_url=self._queue_url,
            visibility_timeout_s=attributes.get("VisibilityTimeout"),
            redrive_policy=redrive,
        )
        if not redrive:
            log.warning("the queue has no redrive policy: failing messages will never reach a DLQ")

    def _receive_blocking(self, count: int, ticket: _Ticket) -> list[_Message]:
        """ReceiveMessage, then hand the messages over, or release them if nobody waits."""
        params: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": self._settings.wait_time_s,
            "AttributeNames": ["ApproximateReceiveCount"],
        }
        if self._settings.visibility_timeout_s > 0:
            params["VisibilityTimeout"] = self._settings.visibility_timeout_s
        raw = self._sqs.receive_message(**params).get("Messages", [])
        messages = [_message(m) for m in raw]
        with self._handover_lock:
            if not (self._stopping or ticket.abandoned):
                ticket.messages = messages
                for m in messages:
                    self._unfinished[m.receipt_handle] = m
                return messages
        # The poller gave up on this call (stop, or its deadline): nobody will handle these.
        if messages:
            try:
                self._release_blocking(messages)
            except (BotoCoreError, ClientError):
                log.warning("could not release abandoned messages", count=len(messages))
        return []

    def _release_blocking(self, messages: list[_Message]) -> None:
        for i in range(0, len(messages), MAX_BATCH):
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                for n, m in enumerate(messages[i : i + MAX_BATCH])
            ]
            answer = self._sqs.change_message_visibility_batch(
                QueueUrl=self._queue_url, Entries=entries
            )
            released = len(entries) - len(answer.get("Failed", []))
            self.metrics.released.inc(released)

    async def _release(self, messages: list[_Message]) -> None:
        call = functools.partial(self._release_blocking, messages)
        try:
            await self._call("release", call, self._sqs_timeout_s)
        except SqsError as exc:
            log.warning("could not release messages", count=len(messages), error=str(exc))

    # -- receiving -----------------------------------------------------------------

    async def _poll_loop(self) -> NoReturn:
        assert self._handlers is not None
        receive_timeout_s = self._settings.wait_time_s + self._sqs_timeout_s
        errors = 0
        while True:
            reserved = 0
            try:
                async with self._reserve_lock:
                    while reserved < self._batch:
                        await self._slots.acquire()
                        reserved += 1
                messages = await self._receive(reserved, receive_timeout_s)
                if messages is None:
                    delay = _backoff(errors)
                    errors += 1
                    self._release_slots(reserved)
                    reserved = 0
                    await trio.sleep(delay)
                    continue
                errors = 0
                if messages:
                    self.metrics.received.inc(len(messages))
                for message in messages:
                    self._handlers.start_soon(self._handle, message)
                    reserved -= 1
            finally:
                self._release_slots(reserved)

    async def _receive(self, count: int, timeout_s: float) -> list[_Message] | None:
        """One long poll; None when it failed (logged). Messages are in ``_unfinished``."""
        ticket = _Ticket()
        call = functools.partial(self._receive_blocking, count, ticket)
        try:
            return await self._call("receive", call, timeout_s)
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

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    # -- handling ------------------------------------------------------------------

    async def _handle(self, message: _Message) -> None:
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

    async def _process(self, message: _Message) -> bool:
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
        event_id = event.event_id
        while (pending := self._in_progress.get(event_id)) is not None:
            await pending.wait()  # another copy is being handled: learn its outcome
        if event_id in self._handled:
            self._handled.move_to_end(event_id)
            self.metrics.handled["duplicate"].inc()
            log.debug("duplicate event; deleting", event_id=event_id)
            return True
        done = self._in_progress[event_id] = trio.Event()
        try:
            handled = await self._act(event, message)
        finally:
            del self._in_progress[event_id]
            done.set()
        if handled:
            self._handled[event_id] = None
            if len(self._handled) > self._dedup_size:
                self._handled.popitem(last=False)
        return handled

    async def _act(self, event: PaymentEvent, message: _Message) -> bool:
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
        if self._reservations is None:
            self.metrics.handled[outcome].inc()
            log.info("reservation decision (no RESERVATION_API_URL)", decision=decision, **fields)
            return True
        failure = await self._tell_reservations(event, decision)
        if failure is None:
            self.metrics.handled[outcome].inc()
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

    async def _tell_reservations(
        self, event: PaymentEvent, decision: str
    ) -> tuple[str, str] | None:
        """PATCH the reservation; None on 2xx, else ``(reason, problem)``."""
        assert self._reservations is not None
        url = self._reservations + quote(event.reservation_id, safe="")
        timeout_s = self._settings.reservation_timeout_s
        try:
            with trio.fail_after(timeout_s):  # the whole call: waiting for a connection included
                response = await self._http.request(
                    "PATCH",
                    url,
                    body=_BODIES[decision],
                    headers=(_CONTENT_TYPE, ("X-Event-Id", event.event_id)),
                    idempotent=True,  # it sets a fixed status: sending it twice changes nothing
                )
        except trio.TooSlowError:
            return "timeout", f"no answer within {timeout_s:g} s"
        except Http1Error as exc:
            return "connection", str(exc)
        if 200 <= response.status < 300:
            return None
        return "http_status", f"HTTP {response.status}"

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

    async def _delete(self, batch: list[_Message]) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(batch)]
        call = functools.partial(
            self._sqs.delete_message_batch, QueueUrl=self._queue_url, Entries=entries
        )
        failed: list[dict[str, Any]] = []
        for attempt in range(_DELETE_ATTEMPTS):
            try:
                answer = await self._call("delete", call, self._sqs_timeout_s)
                failed = answer.get("Failed", [])
                break
            except SqsError as exc:
                if attempt + 1 == _DELETE_ATTEMPTS:
                    failed = [{"Id": e["Id"], "Code": str(exc)} for e in entries]
                else:
                    await trio.sleep(_backoff(attempt))
        for entry in failed:
            message = batch[int(entry["Id"])]
            self.metrics.delete_failures.inc()
            log.warning(
                "could not delete a handled message; it will be redelivered",
                message_id=message.message_id,
                code=entry.get("Code"),
            )
        for message in batch:
            self._settle(message)
