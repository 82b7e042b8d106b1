"""The EventBridge publisher and the AWS resources it publishes into.

* Integration (moto's server as AWS, real worker threads, real clock):
  ``ensure_resources`` builds CONTRACT §4, and changes published through
  ``EventPublisher`` arrive in the SQS queue through the rule, as EventBridge
  envelopes, batched 10 per PutEvents.
* Unit (a fake ``put_events``, ``autojump_clock``): retries of FailedEntries
  only, outages with exact backoff times, overflow, flush, cancellation,
  batch limits. The fake is called inline (``run_blocking=inline``): the mock
  clock would jump forward while a real worker thread runs.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import pytest
import structlog
import trio
import trio.testing
from botocore.exceptions import ClientError, EndpointConnectionError

from paysim.adapters import aws as aws_adapter
from paysim.adapters import aws_http
from paysim.adapters.aws import ResourceNames, Resources, ensure_resources, make_client
from paysim.config import AwsSettings, EventSettings
from paysim.delivery.event_batches import MAX_BATCH_BYTES, entry_size
from paysim.delivery.event_publisher import (
    PUBLISH_RETRY,
    EventPublisher,
    PublisherSeams,
)
from paysim.domain.events import DETAIL_TYPE, event_detail
from paysim.domain.models import (
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
    StatusChange,
)
from paysim.observability.metrics import Metrics

if TYPE_CHECKING:  # imported at run time only as a plugin, so pytest rewrites its asserts
    from tests.moto_fixtures import AwsNames

pytest_plugins = ["tests.moto_fixtures"]

T0 = 1_700_000_000.0
ENVELOPE_KEYS = {
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
}
# moto 5.2 formats the SQS message with a template that leaves out "account",
# which real EventBridge includes; nothing else of the envelope is missing.
MOTO_OMITS = {"account"}
DETAIL_KEYS = {
    "payment_id",
    "reservation_id",
    "user_id",
    "status",
    "amount",
    "currency",
    "timestamp",
    "event_type",
}


# -- test values ----------------------------------------------------------------


def make_change(
    i: int,
    *,
    status: PaymentStatus = PaymentStatus.COMPLETED,
    reservation_id: str | None = None,
) -> StatusChange:
    at = T0 + i
    payment = Payment(
        payment_intent_id=f"pi_{i:04d}",
        reservation_id=reservation_id if reservation_id is not None else f"rsv_{i:04d}",
        user_id=f"user_{i % 7}",
        amount=Money(100_000 + i, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.APPROVE,
        webhook_url="",
        metadata=Metadata(),
        client_secret="cs_test",
        outcome=Outcome(PaymentStatus.COMPLETED, 2.0),
        status=status,
        created_at=at - 2.0,
        updated_at=at,
        expires_at=at + 900.0,
    )
    return StatusChange(
        event_id=f"evt_{i:04d}", payment=payment, previous=PaymentStatus.PENDING, at=at
    )


def ids_of(entries: list[dict[str, Any]]) -> list[str]:
    return [json.loads(e["Detail"])["payment_id"] for e in entries]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def accepted(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"FailedEntryCount": 0, "Entries": [{"EventId": uuid.uuid4().hex} for _ in entries]}


Answer = Callable[[int, list[dict[str, Any]]], dict[str, Any]]


class FakeEvents:
    """``put_events`` stand-in: records (mock time, entries) per call; ``answer``
    (call number from 1, entries) gives the response or raises."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.calls: list[tuple[float, list[dict[str, Any]]]] = []
        self._answer = answer

    def put_events(self, *, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append((trio.current_time(), list(Entries)))
        if self._answer is None:
            return accepted(Entries)
        return self._answer(len(self.calls), Entries)

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.calls]


class MaxJitter(random.Random):
    """Full jitter at its ceiling: every backoff sleeps exactly PUBLISH_RETRY.ceiling(n)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def inline(fn: Callable[[], Any]) -> Any:
    await trio.lowlevel.checkpoint()
    return fn()


def make_publisher(
    client: Any,
    *,
    rng: random.Random | None = None,
    run_blocking: Any = inline,
    **settings: Any,
) -> tuple[EventPublisher, Metrics]:
    metrics = Metrics()
    options: dict[str, Any] = {
        "flush_interval_s": 0.1,
        "buffer_size": 1000,
        "call_timeout_s": 5.0,
        "concurrency": 4,
    }
    options.update(settings)
    publisher = EventPublisher(
        EventSettings(**options),
        AwsSettings(),
        metrics,
        client,
        seams=PublisherSeams(
            rng=rng if rng is not None else MaxJitter(), run_blocking=run_blocking
        ),
    )
    return publisher, metrics


def connection_error() -> Exception:
    return EndpointConnectionError(endpoint_url="https://events.ap-northeast-2.amazonaws.com/")


def down_for(calls: int) -> Answer:
    """An endpoint that refuses its first ``calls`` calls, then accepts every entry."""

    def answer(n: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
        if n <= calls:
            raise connection_error()
        return accepted(entries)

    return answer


def client_error(code: str, status: int = 400) -> Exception:
    return ClientError(
        cast(
            Any,
            {
                "Error": {"Code": code, "Message": code},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
        ),
        "PutEvents",
    )


# -- integration: moto's server as AWS ------------------------------------------


async def _call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(partial(fn, **kwargs))


async def test_ensure_resources_creates_the_contract_resources(
    events_client: Any,
    sqs_client: Any,
    aws_settings: AwsSettings,
    aws_names: AwsNames,
    aws_resources: Resources,
) -> None:
    r = aws_resources
    assert (r.bus_name, r.rule_name) == (aws_names.bus, aws_names.rule)
    assert r.queue_url.endswith("/" + aws_names.queue)
    assert r.dlq_url.endswith("/" + aws_names.dlq)

    attrs = (
        await _call(sqs_client.get_queue_attributes, QueueUrl=r.queue_url, AttributeNames=["All"])
    )["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["MessageRetentionPeriod"] == "1209600"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 3
    assert redrive["deadLetterTargetArn"] == r.dlq_arn
    statement = json.loads(attrs["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": r.rule_arn}}

    dlq = (
        await _call(sqs_client.get_queue_attributes, QueueUrl=r.dlq_url, AttributeNames=["All"])
    )["Attributes"]
    assert dlq["MessageRetentionPeriod"] == "1209600"
    assert dlq["QueueArn"] == r.dlq_arn

    rule = await _call(events_client.describe_rule, Name=r.rule_name, EventBusName=r.bus_name)
    assert rule["State"] == "ENABLED"
    assert json.loads(rule["EventPattern"]) == {
        "source": [aws_settings.event_source],
        "detail-type": [DETAIL_TYPE],
    }
    targets = await _call(
        events_client.list_targets_by_rule, Rule=r.rule_name, EventBusName=r.bus_name
    )
    assert [t["Arn"] for t in targets["Targets"]] == [r.queue_arn]

    # Idempotent: a second run finds everything and changes nothing.
    again = await ensure_resources(
        events_client,
        sqs_client,
        aws_settings,
        names=ResourceNames(queue=aws_names.queue, dlq=aws_names.dlq, rule=aws_names.rule),
    )
    assert again == r
    targets = await _call(
        events_client.list_targets_by_rule, Rule=r.rule_name, EventBusName=r.bus_name
    )
    assert len(targets["Targets"]) == 1


def test_default_names_and_client_configuration(aws_env: str, aws_settings: AwsSettings) -> None:
    assert aws_adapter.QUEUE_NAME == "traffic-tacos-payment-webhooks"
    assert aws_adapter.DLQ_NAME == "traffic-tacos-payment-webhooks-dlq"
    # No endpoint given: boto3 reads AWS_ENDPOINT_URL itself (moto here).
    client: Any = make_client("events", aws_settings)
    assert client.meta.endpoint_url == aws_env
    assert client.meta.region_name == aws_settings.region == "us-east-1"
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    sqs: Any = make_client("sqs", aws_settings)
    assert sqs.meta.config.read_timeout > 20  # outlasts a 20 s long poll


class CountingClient:
    """Wraps the real events client; records the entry count of each PutEvents."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batch_sizes: list[int] = []

    def put_events(self, **kwargs: Any) -> Any:
        self.batch_sizes.append(len(kwargs["Entries"]))
        return self.inner.put_events(**kwargs)


@pytest.mark.parametrize("lean_http", [False, True], ids=["urllib3", "aws_http"])
async def test_published_changes_reach_the_queue_through_the_rule(
    nursery: trio.Nursery,
    events_client: Any,
    sqs_client: Any,
    aws_settings: AwsSettings,
    aws_resources: Resources,
    lean_http: bool,
) -> None:
    # aws_http: botocore's request goes out through the lean sender, as the app's does.
    sender = aws_http.install(events_client) if lean_http else None
    client = CountingClient(events_client)
    metrics = Metrics()
    publisher = EventPublisher(
        EventSettings(flush_interval_s=0.05, call_timeout_s=5.0), aws_settings, metrics, client
    )
    await nursery.start(publisher.run)
    statuses = [PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.CANCELLED]
    changes = [make_change(i, status=statuses[i % 3]) for i in range(25)]
    for change in changes:
        await publisher.notify(change)

    with trio.fail_after(10):
        await publisher.flush()
    assert publisher.backlog == 0
    assert value(metrics, "paysim_events_published_total") == 25
    assert sorted(client.batch_sizes, reverse=True) == [10, 10, 5]
    if sender is not None:
        assert sender.sent == 3  # every PutEvents went through it

    bodies: dict[str, dict[str, Any]] = {}
    with trio.fail_after(10):
        while len(bodies) < 25:
            got = await _call(
                sqs_client.receive_message,
                QueueUrl=aws_resources.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
            )
            for message in got.get("Messages", []):
                body = json.loads(message["Body"])
                bodies[body["detail"]["payment_id"]] = body
    expected = {c.payment.payment_intent_id: c for c in changes}
    assert bodies.keys() == expected.keys()
    for payment_id, body in bodies.items():
        assert ENVELOPE_KEYS - set(body) <= MOTO_OMITS
        assert body["detail-type"] == DETAIL_TYPE
        assert body["source"] == aws_settings.event_source
        assert body["region"] == aws_settings.region
        assert set(body["detail"]) == DETAIL_KEYS
        assert body["detail"] == event_detail(expected[payment_id])
    assert bodies["pi_0001"]["detail"]["status"] == "PAYMENT_STATUS_FAILED"
    assert bodies["pi_0001"]["detail"]["user_id"] == "user_1"


# -- unit: a fake put_events and trio's mock clock -------------------------------


async def test_a_partial_batch_waits_the_flush_interval_a_full_one_does_not(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    publisher, _ = make_publisher(client)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(3):
        await publisher.notify(make_change(i))
    await trio.sleep(1)
    assert client.times == [t0 + 0.1]
    assert ids_of(client.calls[0][1]) == ["pi_0000", "pi_0001", "pi_0002"]

    t1 = trio.current_time()
    for i in range(3, 13):
        await publisher.notify(make_change(i))
    await trio.sleep(1)
    assert client.times[1:] == [t1]
    assert len(client.calls[1][1]) == 10


async def test_entries_joining_a_waiting_batch_go_with_it_at_the_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    publisher, _ = make_publisher(client)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(3):
        await publisher.notify(make_change(i))
    await trio.sleep(0.05)
    for i in range(3, 8):
        await publisher.notify(make_change(i))
    await trio.sleep(1)
    assert client.times == [t0 + 0.1]
    assert len(client.calls[0][1]) == 8


async def test_a_batch_filled_one_entry_at_a_time_goes_when_full(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # As in the server: each change comes from its own task, and ``run`` gets
    # to look at the queue in between (it is woken for the first and the full).
    client = FakeEvents()
    publisher, _ = make_publisher(client)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(12):
        await publisher.notify(make_change(i))
        await trio.sleep(0.001)
    await trio.sleep(1)
    assert client.times == pytest.approx([t0 + 0.009, t0 + 0.010 + 0.1])
    assert [len(entries) for _, entries in client.calls] == [10, 2]


async def test_a_batch_full_by_size_goes_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    publisher, _ = make_publisher(client)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(2):  # 2 x 150 KB: over 256 KiB together, so the first is a batch alone
        await publisher.notify(make_change(i, reservation_id="r" * 150_000))
        await trio.sleep(0.001)
    await trio.sleep(1)
    assert client.times == pytest.approx([t0 + 0.001, t0 + 0.001 + 0.1])
    assert [ids_of(entries) for _, entries in client.calls] == [["pi_0000"], ["pi_0001"]]


async def test_only_failed_entries_are_resent_and_counted_once_published(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    def answer(n: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
        if n > 1:
            return accepted(entries)
        results: list[dict[str, Any]] = [{"EventId": f"e{i}"} for i in range(len(entries))]
        results[3] = {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"}
        results[7] = {"ErrorCode": "InternalFailure", "ErrorMessage": "internal"}
        return {"FailedEntryCount": 2, "Entries": results}

    client = FakeEvents(answer)
    publisher, metrics = make_publisher(client)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(10):
        await publisher.notify(make_change(i))

    await trio.sleep(0.05)  # after the first answer, before the retry
    assert value(metrics, "paysim_events_published_total") == 8
    assert publisher.backlog == 2
    assert value(metrics, "paysim_events_backlog") == 2

    await trio.sleep(1)
    assert client.times == [t0, t0 + 0.1]  # a full batch goes at once; retry after 0.1 s
    assert ids_of(client.calls[1][1]) == ["pi_0003", "pi_0007"]
    assert value(metrics, "paysim_events_published_total") == 10
    assert value(metrics, "paysim_events_failed_attempts_total", reason="failed_entry") == 2
    assert publisher.backlog == 0
    assert value(metrics, "paysim_events_backlog") == 0


async def test_an_endpoint_down_for_a_while_loses_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents(down_for(5))
    publisher, metrics = make_publisher(client, rng=random.Random(7))
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(3):
        await publisher.notify(make_change(i))
    await trio.sleep(60)

    # Full jitter drawn from the same seeded RNG: uniform(0, min(30, 0.1 * 2**(n-1))).
    rng = random.Random(7)
    expected = [t0 + 0.1]
    for attempt in range(1, 6):
        expected.append(expected[-1] + rng.uniform(0.0, PUBLISH_RETRY.ceiling(attempt)))
    assert client.times == pytest.approx(expected, abs=1e-9)
    assert [ids_of(entries) for _, entries in client.calls] == [
        ["pi_0000", "pi_0001", "pi_0002"]
    ] * 6
    assert value(metrics, "paysim_events_failed_attempts_total", reason="connection") == 15
    assert value(metrics, "paysim_events_published_total") == 3
    assert publisher.backlog == 0


def test_backoff_ceiling_doubles_from_0_1_s_up_to_30_s() -> None:
    assert [PUBLISH_RETRY.ceiling(n) for n in range(1, 6)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6]
    )
    assert PUBLISH_RETRY.ceiling(9) == pytest.approx(25.6)
    assert PUBLISH_RETRY.ceiling(10) == 30.0
    assert PUBLISH_RETRY.ceiling(10_000) == 30.0


@pytest.mark.parametrize(
    ("error", "reason", "level"),
    [
        (partial(client_error, "ThrottlingException"), "throttled", "warning"),
        (partial(client_error, "InternalException", 500), "server", "warning"),
        (partial(client_error, "AccessDeniedException"), "rejected", "error"),
        (partial(client_error, "ValidationException"), "rejected", "error"),
        (lambda: RuntimeError("surprise"), "error", "error"),
    ],
    ids=["throttled", "server", "access-denied", "validation", "unexpected"],
)
async def test_a_failed_call_retries_the_whole_batch(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    error: Callable[[], Exception],
    reason: str,
    level: str,
) -> None:
    def answer(n: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
        if n <= 2:
            raise error()
        return accepted(entries)

    client = FakeEvents(answer)
    publisher, metrics = make_publisher(client)
    with structlog.testing.capture_logs() as logs:
        await nursery.start(publisher.run)
        t0 = trio.current_time()
        for i in range(4):
            await publisher.notify(make_change(i))
        await trio.sleep(10)
    assert client.times == pytest.approx([t0 + 0.1, t0 + 0.2, t0 + 0.4])
    assert all(len(entries) == 4 for _, entries in client.calls)
    assert value(metrics, "paysim_events_failed_attempts_total", reason=reason) == 8
    assert value(metrics, "paysim_events_published_total") == 4
    failures = [e for e in logs if e["event"] == "PutEvents failed, retrying"]
    assert [(e["log_level"], e["reason"], e["attempt"]) for e in failures] == [
        (level, reason, 1),
        (level, reason, 2),
    ]
    assert failures[0]["payment_ids"] == ["pi_0000", "pi_0001", "pi_0002", "pi_0003"]


async def test_a_call_past_its_deadline_is_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    calls = 0

    async def hangs_once(fn: Callable[[], Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await trio.sleep_forever()
        return fn()

    publisher, metrics = make_publisher(client, run_blocking=hangs_once, call_timeout_s=5.0)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    await publisher.notify(make_change(1))
    await trio.sleep(30)
    # Sent at 0.1, abandoned at 5.1, retried after 0.1 s of backoff.
    assert client.times == pytest.approx([t0 + 5.2])
    assert value(metrics, "paysim_events_failed_attempts_total", reason="timeout") == 1
    assert value(metrics, "paysim_events_published_total") == 1


async def test_at_most_concurrency_batches_are_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    in_flight = peak = 0

    async def slow(fn: Callable[[], Any]) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await trio.sleep(1)
            return fn()
        finally:
            in_flight -= 1

    client = FakeEvents()
    publisher, metrics = make_publisher(client, run_blocking=slow, concurrency=4)
    await nursery.start(publisher.run)
    t0 = trio.current_time()
    for i in range(100):
        await publisher.notify(make_change(i))
    await trio.sleep(10)
    assert peak == 4
    assert client.times == [t0 + 1] * 4 + [t0 + 2] * 4 + [t0 + 3] * 2
    assert value(metrics, "paysim_events_published_total") == 100


async def test_overflow_drops_the_oldest_counted_and_logged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeEvents()
    publisher, metrics = make_publisher(client, buffer_size=5)
    with structlog.testing.capture_logs() as logs:
        for i in range(8):
            await publisher.notify(make_change(i))
    assert publisher.backlog == 5
    assert value(metrics, "paysim_events_backlog") == 5
    assert value(metrics, "paysim_events_dropped_total", reason="overflow") == 3
    dropped = [e for e in logs if e["log_level"] == "warning"]
    assert [e["payment_id"] for e in dropped] == ["pi_0000", "pi_0001", "pi_0002"]
    assert all("buffer full" in e["event"] for e in dropped)

    await publisher.flush()
    assert [ids_of(entries) for _, entries in client.calls] == [
        ["pi_0003", "pi_0004", "pi_0005", "pi_0006", "pi_0007"]
    ]
    assert value(metrics, "paysim_events_published_total") == 5


async def test_flush_sends_everything_buffered_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client = FakeEvents()
    publisher, metrics = make_publisher(client, flush_interval_s=60.0)
    for i in range(25):
        await publisher.notify(make_change(i))
    assert publisher.backlog == 25
    t0 = trio.current_time()
    await publisher.flush()
    assert trio.current_time() == t0
    assert publisher.backlog == 0
    assert sorted(len(entries) for _, entries in client.calls) == [5, 10, 10]
    sent = sorted(pid for _, entries in client.calls for pid in ids_of(entries))
    assert sent == [f"pi_{i:04d}" for i in range(25)]
    assert value(metrics, "paysim_events_published_total") == 25
    assert value(metrics, "paysim_events_backlog") == 0


async def test_flush_with_run_active_does_not_wait_for_the_interval(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    publisher, metrics = make_publisher(client, flush_interval_s=60.0)
    await nursery.start(publisher.run)
    for i in range(3):
        await publisher.notify(make_change(i))
    t0 = trio.current_time()
    await publisher.flush()
    assert client.times == [t0]
    assert value(metrics, "paysim_events_published_total") == 3


def _always_down(n: int, entries: list[dict[str, Any]]) -> dict[str, Any]:
    raise connection_error()


async def test_cancelled_run_logs_and_counts_what_was_not_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    publisher, metrics = make_publisher(FakeEvents(_always_down))
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            for i in range(13):
                await publisher.notify(make_change(i))
            await trio.sleep(10)
            assert publisher.backlog == 13
            nursery.cancel_scope.cancel()
    unsent = [e for e in logs if e["event"] == "events not published"]
    assert all(e["log_level"] == "error" for e in unsent)
    reported = sorted(pid for e in unsent for pid in e["payment_ids"])
    assert reported == [f"pi_{i:04d}" for i in range(13)]
    assert value(metrics, "paysim_events_unsent_total") == 13
    assert value(metrics, "paysim_events_published_total") == 0
    assert value(metrics, "paysim_events_backlog") == 0
    assert publisher.backlog == 0


async def test_a_flush_cut_short_by_its_deadline_reports_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    publisher, metrics = make_publisher(FakeEvents(_always_down))
    for i in range(4):
        await publisher.notify(make_change(i))
    with structlog.testing.capture_logs() as logs, trio.move_on_after(5):
        await publisher.flush()
    unsent = [e for e in logs if e["event"] == "events not published"]
    assert [e["payment_ids"] for e in unsent] == [["pi_0000", "pi_0001", "pi_0002", "pi_0003"]]
    assert value(metrics, "paysim_events_unsent_total") == 4
    assert publisher.backlog == 0


async def test_a_batch_never_exceeds_10_entries_or_256_kib(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents()
    publisher, metrics = make_publisher(client)
    await nursery.start(publisher.run)
    sizes = random.Random(3).choices([10, 1_000, 30_000, 60_000, 120_000, 250_000], k=40)
    for i, size in enumerate(sizes):
        await publisher.notify(make_change(i, reservation_id="r" * size))
    await trio.sleep(10)

    assert value(metrics, "paysim_events_published_total") == 40
    sent = [pid for _, entries in client.calls for pid in ids_of(entries)]
    assert sorted(sent) == [f"pi_{i:04d}" for i in range(40)]
    for _, entries in client.calls:
        assert 1 <= len(entries) <= 10
        assert sum(entry_size(e) for e in entries) <= MAX_BATCH_BYTES
        # Independently of entry_size: AWS counts Source + DetailType + Detail.
        aws_size = sum(len((e["Source"] + e["DetailType"] + e["Detail"]).encode()) for e in entries)
        assert aws_size <= 256 * 1024
    assert any(len(entries) < 10 for _, entries in client.calls)


async def test_an_entry_too_large_for_put_events_is_refused_and_logged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    publisher, metrics = make_publisher(FakeEvents())
    with structlog.testing.capture_logs() as logs:
        await publisher.notify(make_change(1, reservation_id="r" * 300_000))
    assert publisher.backlog == 0
    assert value(metrics, "paysim_events_dropped_total", reason="too_large") == 1
    assert [(e["log_level"], e["payment_id"]) for e in logs] == [("error", "pi_0001")]


async def test_notify_never_raises(autojump_clock: trio.testing.MockClock) -> None:
    import dataclasses

    publisher, metrics = make_publisher(FakeEvents())
    change = make_change(1)
    broken = dataclasses.replace(
        change, payment=dataclasses.replace(change.payment, amount=cast(Any, None))
    )
    with structlog.testing.capture_logs() as logs:
        await publisher.notify(broken)
    assert value(metrics, "paysim_events_dropped_total", reason="error") == 1
    assert logs[0]["payment_id"] == "pi_0001"
    assert publisher.backlog == 0


async def test_run_refuses_to_run_twice(nursery: trio.Nursery) -> None:
    publisher, _ = make_publisher(FakeEvents())
    await nursery.start(publisher.run)
    with pytest.raises(RuntimeError, match="already running"):
        await publisher.run()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_ENDPOINT_URL_EVENTS": "http://events.local:4566"}, "http://events.local:4566"),
        (
            {
                "AWS_ENDPOINT_URL_EVENTS": "http://events.local:4566",
                "AWS_ENDPOINT_URL_EVENTBRIDGE": "http://bridge.local:4566",
            },
            "http://bridge.local:4566",
        ),
        ({}, "https://events.ap-northeast-2.amazonaws.com"),
    ],
)
def test_the_contract_events_endpoint_variable_is_honoured(monkeypatch, env, expected):
    """CONTRACT §4 names AWS_ENDPOINT_URL_EVENTS; botocore alone would ignore it."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EVENTS", "AWS_ENDPOINT_URL_EVENTBRIDGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    client = make_client("events", AwsSettings())
    assert client.meta.endpoint_url == expected


async def test_the_publisher_counts_an_entry_as_entry_size_does(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """It counts the parts every entry shares once; the sum must stay entry_size's."""
    publisher, _ = make_publisher(FakeEvents())
    for i, reservation_id in enumerate(["r", "예약" * 100, "x" * 5000]):
        await publisher.notify(make_change(i, reservation_id=reservation_id))
    pending = list(publisher._queue)  # the sizes it batches by
    assert [e.size for e in pending] == [entry_size(e.entry) for e in pending]


async def test_flush_retries_a_batch_sleeping_after_an_outage_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Down for the first 8 calls: with full jitter at its ceiling the batch then
    # sleeps 12.8 s before its 9th attempt, longer than a shutdown grace.
    client = FakeEvents(down_for(8))
    publisher, metrics = make_publisher(client)
    await nursery.start(publisher.run)
    for i in range(3):
        await publisher.notify(make_change(i))
    # Calls at 0.1 s (the flush interval), then after 0.1, 0.2, ... 6.4 s: the 8th
    # at 12.8 s; at 14 s the batch is 1.2 s into its 12.8 s sleep.
    await trio.sleep(14.0)
    assert len(client.calls) == 8
    t0 = trio.current_time()
    with trio.fail_after(1.0):  # mock time: the sleep had 11.6 s to go
        await publisher.flush()
    assert client.times[-1] == t0
    assert len(client.calls) == 9
    assert value(metrics, "paysim_events_published_total") == 3
    assert publisher.backlog == 0


async def test_after_a_flush_a_failing_batch_backs_off_from_the_start(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = FakeEvents(_always_down)
    publisher, _ = make_publisher(client)
    await nursery.start(publisher.run)
    await publisher.notify(make_change(0))
    await trio.sleep(14.0)  # 8 calls made, sleeping 12.8 s (as above)
    assert len(client.calls) == 8
    with trio.move_on_after(1.0):  # the endpoint stays down: the flush cannot finish
        await publisher.flush()
    woken = client.times[8:]  # from the flush on
    # Woken at once, then 0.1 s, 0.2 s, 0.4 s (the schedule from its start), not 12.8 s.
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(woken)]
    assert gaps[:3] == [0.1, 0.2, 0.4]
