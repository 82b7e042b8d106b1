"""The worker's SQS adapter: one queue, reached through a boto3 client in threads.

Every boto3 call runs in a thread through ``trio.to_thread.run_sync`` behind
the queue's own ``CapacityLimiter`` (``sqs_threads`` of them) and under
``trio.fail_after``; botocore and trio errors become ``SqsError`` at that one
place (``SqsQueue.call``), counted by operation. Retries back off on
``SQS_RETRY`` (``paysim.backoff``): full jitter, doubling from 0.2 s, capped
at 10 s.

The ``*_blocking`` methods are what the threads run: they touch no trio
object, only the boto3 client and the metrics (prometheus_client is
thread-safe).

Resource handling: ``SqsQueue`` does not own the boto3 client (the caller
creates it; it needs no closing); it owns its limiter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
import trio
from botocore.exceptions import BotoCoreError, ClientError

from paysim.backoff import Backoff, Schedule
from paysim.config import WorkerSettings
from paysim.worker.metrics import WorkerMetrics

log = structlog.get_logger("paysim.worker")

T = TypeVar("T")

MAX_BATCH = 10  # SQS's limit for ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch
SQS_CALL_TIMEOUT_S = 10.0  # every SQS call but the long poll (which gets wait_time_s more)
SQS_RETRY = Schedule(base_s=0.2, factor=2.0, cap_s=10.0)
DELETE_ATTEMPTS = 3


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
class SqsMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    deleting: bool = False  # handed to the deleters


def _message(raw: dict[str, Any]) -> SqsMessage:
    count = raw.get("Attributes", {}).get("ApproximateReceiveCount", "0")
    return SqsMessage(
        message_id=str(raw.get("MessageId", "")),
        receipt_handle=str(raw.get("ReceiptHandle", "")),
        body=str(raw.get("Body", "")),
        receive_count=int(count) if str(count).isdigit() else 0,
    )


def sqs_threads(settings: WorkerSettings) -> int:
    """How many SQS calls a worker makes at once (size the client's connection pool to it).

    One long poll per poller, ``max(2, pollers)`` deleters, two spare for releases.
    """
    return settings.pollers + max(2, settings.pollers) + 2


class SqsQueue:
    """``settings.queue_url`` through the boto3 client ``sqs``; see the module docstring."""

    def __init__(
        self, sqs: Any, settings: WorkerSettings, metrics: WorkerMetrics, timeout_s: float
    ) -> None:
        if settings.queue_url is None:
            raise ValueError("the worker needs a queue URL (PAYMENT_WEBHOOK_QUEUE_URL)")
        self.url: str = settings.queue_url
        self.timeout_s = timeout_s
        self._sqs = sqs
        self._settings = settings
        self._metrics = metrics
        self._limiter = trio.CapacityLimiter(sqs_threads(settings))

    async def call(self, operation: str, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        """Run one blocking call in a thread, under a deadline; errors become SqsError."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            with trio.fail_after(timeout_s):
                return await trio.to_thread.run_sync(
                    fn, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            self._metrics.sqs_errors[operation].inc()
            raise SqsError(operation, f"no answer within {timeout_s:g} s") from None
        except (BotoCoreError, ClientError) as exc:
            self._metrics.sqs_errors[operation].inc()
            raise SqsError(operation, _describe(exc)) from exc

    async def wait_reachable(self) -> None:
        """Wait until the queue answers GetQueueAttributes (with backoff); log its settings."""
        call = functools.partial(
            self._sqs.get_queue_attributes,
            QueueUrl=self.url,
            AttributeNames=["VisibilityTimeout", "RedrivePolicy"],
        )
        backoff = Backoff(SQS_RETRY)
        while True:
            try:
                answer = await self.call("check", call)
                break
            except SqsError as exc:
                delay = backoff.failed()
                log.warning("queue not reachable; retrying", error=str(exc), retry_in_s=delay)
                await trio.sleep(delay)
        attributes = answer.get("Attributes", {})
        redrive = attributes.get("RedrivePolicy")
        log.info(
            "worker queue",
            queue_url=self.url,
            visibility_timeout_s=attributes.get("VisibilityTimeout"),
            redrive_policy=redrive,
        )
        if not redrive:
            log.warning("the queue has no redrive policy: failing messages will never reach a DLQ")

    def receive_blocking(
        self, count: int, hand_over: Callable[[list[SqsMessage]], bool]
    ) -> list[SqsMessage]:
        """ReceiveMessage (a long poll of ``wait_time_s``), in a thread; then ``hand_over``.

        ``hand_over(messages)`` (called in the thread) says whether someone took
        them; if nobody did (the caller gave up on this call), they are
        released at once and the result is empty.
        """
        params: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": self._settings.wait_time_s,
            "AttributeNames": ["ApproximateReceiveCount"],
        }
        if self._settings.visibility_timeout_s > 0:
            params["VisibilityTimeout"] = self._settings.visibility_timeout_s
        raw = self._sqs.receive_message(**params).get("Messages", [])
        messages = [_message(m) for m in raw]
        if hand_over(messages):
            return messages
        if messages:
            try:
                self.release_blocking(messages)
            except (BotoCoreError, ClientError):
                log.warning("could not release abandoned messages", count=len(messages))
        return []

    def release_blocking(self, messages: list[SqsMessage]) -> None:
        """Make ``messages`` visible again at once (visibility 0); in a thread."""
        for i in range(0, len(messages), MAX_BATCH):
            entries = [
                {"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                for n, m in enumerate(messages[i : i + MAX_BATCH])
            ]
            answer = self._sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            released = len(entries) - len(answer.get("Failed", []))
            self._metrics.released.inc(released)

    async def release(self, messages: list[SqsMessage]) -> None:
        """``release_blocking`` in a thread; a failure is logged (they come back anyway)."""
        call = functools.partial(self.release_blocking, messages)
        try:
            await self.call("release", call)
        except SqsError as exc:
            log.warning("could not release messages", count=len(messages), error=str(exc))

    async def delete(self, batch: list[SqsMessage]) -> list[tuple[SqsMessage, str | None]]:
        """DeleteMessageBatch (tried DELETE_ATTEMPTS times); the messages it did not delete.

        Each failure comes with SQS's error code, or the last call's error.
        """
        entries = [{"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(batch)]
        call = functools.partial(self._sqs.delete_message_batch, QueueUrl=self.url, Entries=entries)
        failed: list[dict[str, Any]] = []
        backoff = Backoff(SQS_RETRY)
        for attempt in range(DELETE_ATTEMPTS):
            try:
                answer = await self.call("delete", call)
                failed = answer.get("Failed", [])
                break
            except SqsError as exc:
                if attempt + 1 == DELETE_ATTEMPTS:
                    failed = [{"Id": e["Id"], "Code": str(exc)} for e in entries]
                else:
                    await trio.sleep(backoff.failed())
        return [(batch[int(entry["Id"])], entry.get("Code")) for entry in failed]
