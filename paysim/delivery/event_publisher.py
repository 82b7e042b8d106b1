"""EventBridge publisher: every status change becomes one PutEvents entry, batched and retried.

``EventPublisher`` is a notifier (``await publisher.notify(change)``) backed by
a bounded in-memory buffer, and a long-running part (``await publisher.run()``,
started in the app's root nursery) that empties the buffer into PutEvents
calls. The caller builds the boto3 ``events`` client (``paysim.adapters.aws.
make_client("events", aws)``), owns it, and owns the task running ``run``.
With EVENTS_ENABLED=false the caller simply creates no publisher: nothing here
looks at ``settings.enabled``.

Theory of operation:

* ``notify`` never blocks and never raises: it builds the contract's entry
  (``paysim.domain.events.event_entry``), appends it to the buffer and returns.
  The buffer holds every entry not yet published (waiting, in a call, or
  waiting to be retried); ``backlog`` and the ``paysim_events_backlog`` gauge
  show its size.
* ``run`` waits until the oldest waiting entry is ``flush_interval_s`` old, or
  a full batch is waiting, then takes a batch: at most 10 entries and at most
  256 KiB as AWS counts it (Source, DetailType, Detail, plus EventBusName to be
  safe). Up to ``concurrency`` batches are in flight; each PutEvents runs in a
  worker thread (``trio.to_thread.run_sync`` behind a dedicated
  ``CapacityLimiter(concurrency)``) under ``trio.fail_after(call_timeout_s)``.
* A batch stays with its sender until every entry in it is published. Entries
  reported in ``FailedEntries`` are retried, and only those; an exception
  (throttling, connection, timeout, server error, anything else) retries the
  whole batch. Between attempts the sender sleeps by ``PUBLISH_RETRY`` (a
  ``paysim.backoff.Schedule``, full jitter): ``uniform(0, min(30 s, 0.1 s * 2 ** (attempt - 1)))``.
* ``flush`` sends what is buffered without waiting for the interval and
  returns when the backlog is empty (at shutdown, under the caller's deadline).
  A batch sleeping before a retry when the flush starts tries again at once,
  its backoff started over (from 0.1 s): after an outage its sleep may be
  longer than the grace left.

Policy decisions:

* **Overflow drops the oldest waiting entry.** When the buffer is full (AWS
  unreachable for long), the newest changes carry the current state of their
  payments (a COMPLETED supersedes the PENDING before it), while the oldest are
  the most likely to be stale for the consumer (reservation holds time out).
  Each drop is counted (``paysim_events_dropped_total{reason="overflow"}``) and
  logged with its payment id. Entries already in a call are never dropped.
* **Nothing is treated as undeliverable.** Errors AWS calls non-retryable
  (validation, access denied, missing credentials, an unknown bus) are logged
  at error level and retried with the same capped backoff, since losing events
  is worse than retrying: these are configuration faults that an operator
  fixes in place (an IAM policy, a bus), after which the backlog drains. An
  entry larger than PutEvents accepts can never be sent; it is refused at
  ``notify`` (counted as dropped, ``reason="too_large"``, logged).
* **Counting is exact.** ``paysim_events_published_total`` counts entries AWS
  answered with an ``EventId``; ``paysim_events_failed_attempts_total{reason}``
  counts entry attempts that failed (an entry failing 3 times counts 3).
* **Cancellation reports what is left.** When ``run`` (or a ``flush`` with no
  ``run`` active) is cancelled, batches in a call go back to the buffer, and
  the buffer is logged (payment ids, in lines of at most 100) and counted in
  ``paysim_events_unsent_total``, then discarded. An entry whose call was
  abandoned mid-flight may in fact have been delivered: delivery is at least
  once, and the report errs on the side of "maybe not sent".
* **The thread runner is injectable** (``PublisherSeams.run_blocking``): tests under trio's
  MockClock pass one that calls the client inline, because the mock clock
  jumps forward while a worker thread runs. The jitter RNG is injectable too.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import structlog
import trio
from trio_util import AsyncValue

from paysim.backoff import Schedule
from paysim.config import AwsSettings, EventSettings
from paysim.delivery.event_batches import (
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTRIES,
    TRANSIENT,
    Batch,
    Entry,
    classify,
    entry_size,
)
from paysim.domain.events import DETAIL_TYPE, event_entry
from paysim.domain.models import StatusChange
from paysim.observability.metrics import Metrics

log = structlog.get_logger("paysim.events")

# Between attempts of one batch: full jitter, doubling from 0.1 s, capped at 30 s.
PUBLISH_RETRY = Schedule(base_s=0.1, factor=2.0, cap_s=30.0)
_UNSENT_IDS_PER_LINE = 100

RunBlocking = Callable[[Callable[[], Any]], Awaitable[Any]]


@dataclass(frozen=True)
class PublisherSeams:
    """What tests replace: the jitter's randomness, and ``run_blocking(fn)``, which
    runs a blocking call and returns its result (default: in a worker thread
    behind the publisher's ``CapacityLimiter``; tests under a MockClock call inline).
    """

    rng: random.Random = field(default_factory=random.Random)
    run_blocking: RunBlocking | None = None


class EventPublisher:
    """Publishes status changes to EventBridge; see the module docstring.

    ``client`` is a boto3 ``events`` client (or anything with its
    ``put_events``); the caller owns it. ``seams`` replace, for tests, the
    backoff's randomness and the thread runner.
    """

    def __init__(
        self,
        settings: EventSettings,
        aws: AwsSettings,
        metrics: Metrics,
        client: Any,
        *,
        on_done: Callable[[str], None] = lambda event_id: None,
        seams: PublisherSeams | None = None,
    ) -> None:
        # Called once per change when this publisher is finished with it:
        # published, or dropped (counted and logged). Not for entries still
        # buffered when it stops: those were not given up.
        self._on_done = on_done
        self._settings = settings
        self._source = aws.event_source
        self._bus_name = aws.event_bus_name
        self._fixed_size = entry_size(
            {"Source": self._source, "DetailType": DETAIL_TYPE, "EventBusName": self._bus_name}
        )
        self._client = client
        self._m = metrics.events
        seams = seams if seams is not None else PublisherSeams()
        self._rng = seams.rng
        self._limiter = trio.CapacityLimiter(settings.concurrency)
        self._run_blocking: RunBlocking = seams.run_blocking or self._in_thread
        self._slots = trio.Semaphore(settings.concurrency)
        self._queue: deque[Entry] = deque()
        self._in_flight = 0
        self._batches: set[Batch] = set()
        # Bumped when the queue gets its first entry or a full batch, and when
        # entries are handed back; ``run`` waits for its next change.
        self._arrivals = AsyncValue(0)
        self._running = False
        self._flushing = 0
        # Set (and replaced) by ``flush``: wakes the batches sleeping before a retry.
        self._hurry = trio.Event()

    @property
    def backlog(self) -> int:
        """Entries not yet published: waiting, in a call, or waiting for a retry."""
        return len(self._queue) + self._in_flight

    def pending_payment_ids(self) -> list[str]:
        """One payment id per entry not yet published: ``backlog``, by payment."""
        ids = [e.payment_id for e in self._queue]
        for batch in self._batches:
            ids += [e.payment_id for e in batch.unpublished]
        return ids

    # -- the notifier port ----------------------------------------------------

    def announces(self, change: StatusChange) -> bool:
        return True  # every change is an event

    async def notify(self, change: StatusChange) -> None:
        """Buffer one entry for ``change``. Never blocks, never raises."""
        try:
            self._enqueue(change)
        except Exception:
            self._m.dropped_error.inc()
            log.exception("event dropped", payment_id=change.payment.payment_intent_id)
            self._on_done(change.event_id)

    def _enqueue(self, change: StatusChange) -> None:
        payment_id = change.payment.payment_intent_id
        entry = event_entry(change, source=self._source, bus_name=self._bus_name)
        # entry_size(entry), with the parts every entry shares counted once (issue 18).
        size = self._fixed_size + len(entry["Detail"].encode())
        if size > MAX_BATCH_BYTES:
            self._m.dropped_too_large.inc()
            log.error("event dropped: too large for PutEvents", payment_id=payment_id, size=size)
            self._on_done(change.event_id)
            return
        if self.backlog >= self._settings.buffer_size:
            if not self._queue:  # everything is in a call: the new one has to go
                self._m.dropped_overflow.inc()
                log.warning("event dropped: buffer full", payment_id=payment_id)
                self._on_done(change.event_id)
                return
            oldest = self._queue.popleft()
            self._on_done(oldest.event_id)
            self._m.dropped_overflow.inc()
            self._m.backlog.dec()
            log.warning(
                "event dropped: buffer full, oldest entry discarded",
                payment_id=oldest.payment_id,
                buffer_size=self._settings.buffer_size,
            )
        self._queue.append(Entry(payment_id, change.event_id, entry, size, trio.current_time()))
        self._m.backlog.inc()
        # ``run`` waits for the first entry (to start the flush interval) and then
        # for a full batch or the interval's end: waking it for every entry in
        # between only made it find out that it had to wait on (issue 18).
        if len(self._queue) == 1 or self._batch_full():
            self._arrivals.value += 1

    # -- the long-running part ------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Publish buffered entries until cancelled; see the module docstring."""
        if self._running:
            raise RuntimeError("EventPublisher.run is already running")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    await self._wait_for_batch()
                    await self._slots.acquire()
                    batch = self._take_batch()
                    if batch is None:  # a flush took them meanwhile
                        self._slots.release()
                        continue
                    nursery.start_soon(self._send, batch)
        finally:
            self._running = False
            if not self._flushing:
                self._report_unsent("publisher stopped")
        raise AssertionError("unreachable")

    async def flush(self) -> None:
        """Send everything buffered now; return when the backlog is empty.

        Works with or without ``run`` active. Entries that keep arriving keep it
        going: the caller bounds it with a deadline. Cancelled while ``run`` is
        not active, it reports what is left as unsent (see the module docstring).
        """
        self._flushing += 1
        finished = False
        # A batch sleeping before its next retry (after an outage the sleep grows
        # to seconds, up to 30) tries again now, its backoff started over: the
        # caller's deadline (the shutdown grace) may be shorter than the sleep.
        self._hurry.set()
        self._hurry = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    if self._queue:
                        await self._slots.acquire()
                        batch = self._take_batch()
                        if batch is None:
                            self._slots.release()
                        else:
                            nursery.start_soon(self._send, batch)
                    elif self._batches:
                        await next(iter(self._batches)).done.wait()
                    else:
                        break
            finished = True
        finally:
            self._flushing -= 1
            if not finished and not self._running and not self._flushing:
                self._report_unsent("flush interrupted")

    async def _wait_for_batch(self) -> None:
        """Return once a full batch waits, or the oldest entry waited flush_interval_s."""
        while True:
            if not self._queue:
                await self._wait_changed()
                continue
            deadline = self._queue[0].enqueued_at + self._settings.flush_interval_s
            if self._batch_full() or trio.current_time() >= deadline:
                return
            with trio.move_on_at(deadline):
                await self._wait_changed()

    async def _wait_changed(self) -> None:
        await self._arrivals.wait_transition()

    def _batch_full(self) -> bool:
        if len(self._queue) >= min(MAX_BATCH_ENTRIES, self._settings.buffer_size):
            return True
        total = 0
        for entry in itertools.islice(self._queue, MAX_BATCH_ENTRIES):
            total += entry.size
            if total > MAX_BATCH_BYTES:
                return True
        return False

    def _take_batch(self) -> Batch | None:
        """Move the oldest entries that fit one PutEvents call into a new batch."""
        taken: list[Entry] = []
        total = 0
        while self._queue and len(taken) < MAX_BATCH_ENTRIES:
            size = self._queue[0].size
            if taken and total + size > MAX_BATCH_BYTES:
                break
            taken.append(self._queue.popleft())
            total += size
        if not taken:
            return None
        self._in_flight += len(taken)
        batch = Batch(taken, unpublished=taken)
        self._batches.add(batch)
        return batch

    # -- sending ------------------------------------------------------------------

    async def _send(self, batch: Batch) -> None:
        """Publish every entry of ``batch``, retrying with backoff; holds one slot."""
        pending = batch.entries
        attempt = 0
        try:
            while True:
                attempt += 1
                pending, reason, error = await self._put(pending)
                batch.unpublished = pending
                if not pending:
                    if attempt > 1:
                        log.info(
                            "events published after retries",
                            attempts=attempt,
                            entries=len(batch.entries),
                        )
                    return
                delay = PUBLISH_RETRY.delay(attempt, self._rng)
                report = (
                    log.warning if reason in TRANSIENT or reason == "failed_entry" else log.error
                )
                report(
                    "PutEvents failed, retrying",
                    reason=reason,
                    error=error,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    payment_ids=[e.payment_id for e in pending],
                )
                hurry = self._hurry
                with trio.move_on_after(delay):
                    await hurry.wait()
                if hurry.is_set():
                    attempt = 0  # a flush woke it: try now, then back off from the start
        finally:
            if pending:  # cancelled: hand the entries back to whoever still sends
                self._in_flight -= len(pending)
                self._queue.extendleft(reversed(pending))
                self._arrivals.value += 1
            self._batches.discard(batch)
            batch.done.set()
            self._slots.release()

    async def _put(self, pending: list[Entry]) -> tuple[list[Entry], str, str]:
        """One PutEvents call; returns (entries still unpublished, reason, error text)."""
        call = partial(self._client.put_events, Entries=[e.entry for e in pending])
        try:
            with trio.fail_after(self._settings.call_timeout_s):
                response = await self._run_blocking(call)
        except trio.TooSlowError:
            return self._failed(pending, "timeout"), "timeout", "no answer in time"
        except Exception as exc:
            reason = classify(exc)
            return self._failed(pending, reason), reason, f"{type(exc).__name__}: {exc}"
        results = response.get("Entries") or []
        failed: list[Entry] = []
        codes: Tally[str] = Tally()
        for i, entry in enumerate(pending):
            result = results[i] if i < len(results) else {}
            if result.get("EventId") and not result.get("ErrorCode"):
                self._on_done(entry.event_id)
                continue
            failed.append(entry)
            codes[str(result.get("ErrorCode") or "NoEventId")] += 1
        published = len(pending) - len(failed)
        if published:
            self._in_flight -= published
            self._m.published.inc(published)
            self._m.backlog.dec(published)
        if not failed:
            return [], "", ""
        detail = ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))
        return self._failed(failed, "failed_entry"), "failed_entry", detail

    def _failed(self, entries: list[Entry], reason: str) -> list[Entry]:
        self._m.failed_by_reason[reason].inc(len(entries))
        return entries

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        # abandon_on_cancel: the deadline can end the wait (the thread ends at
        # botocore's read timeout and keeps its limiter token until then).
        return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=True)

    def _report_unsent(self, why: str) -> None:
        """Log, count and discard whatever is still buffered (never silently)."""
        if not self._queue:
            return
        lost = list(self._queue)
        self._queue.clear()
        self._m.unsent.inc(len(lost))
        self._m.backlog.dec(len(lost))
        for start in range(0, len(lost), _UNSENT_IDS_PER_LINE):
            chunk = lost[start : start + _UNSENT_IDS_PER_LINE]
            log.error(
                "events not published",
                reason=why,
                count=len(chunk),
                total=len(lost),
                payment_ids=[e.payment_id for e in chunk],
            )


NO_CREDENTIALS_HINT = (
    "set EVENTS_ENABLED=false to run without events, or give AWS credentials "
    "(AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, IRSA) and, for an emulator, "
    "AWS_ENDPOINT_URL"
)


def has_aws_credentials(aws: AwsSettings) -> bool:
    """Whether boto3's default chain (with ``aws.profile``) finds any credentials.

    Blocking (it may ask the instance metadata service): run it in a thread,
    once, at start. Without credentials every PutEvents fails before it is sent.
    """
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session(profile_name=aws.profile, region_name=aws.region)
        return session.get_credentials() is not None
    except botocore.exceptions.BotoCoreError:
        return False
