"""The webhook dispatcher's policy, with virtual time and an in-process transport.

Retries, backoff, ordering and the bounded queue are about time, so these run
under ``autojump_clock`` with httpx's ``MockTransport`` standing in for the
network (end-to-end tests with a real receiver are in test_delivery_e2e.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import trio

from paysim.config import WebhookSettings
from paysim.delivery.webhook_dispatcher import SCHEDULES, DispatcherSeams, WebhookDispatcher
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

SECRET = "test-secret"
URL = "http://127.0.0.1:9/hooks/payments"


def change(
    pid: str = "pay_1",
    status: PaymentStatus = PaymentStatus.COMPLETED,
    *,
    event_id: str = "evt_1",
    url: str = URL,
    at: float = 1_700_000_000.0,
) -> StatusChange:
    payment = Payment(
        payment_intent_id=pid,
        reservation_id="rsv_1",
        user_id="user_1",
        amount=Money(100_000, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.APPROVE,
        webhook_url=url,
        metadata=Metadata(),
        client_secret="cs",
        outcome=Outcome(PaymentStatus.COMPLETED, 2.0),
        status=status,
        created_at=at,
        updated_at=at,
        expires_at=at + 900,
    )
    return StatusChange(event_id=event_id, payment=payment, previous=PaymentStatus.PENDING, at=at)


@dataclass
class Receiver:
    """Answers from a script of statuses (then 200), recording every request."""

    script: list[int | str] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    headers_for: Callable[[int], dict[str, str]] = lambda status: {}
    bodies: dict[int, bytes] = field(default_factory=dict)  # what each status answers with
    arrived: trio.Event = field(default_factory=trio.Event)
    block: trio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        self.arrived.set()
        self.arrived = trio.Event()
        if self.block is not None:
            await self.block.wait()
        step = self.script.pop(0) if self.script else 200
        if step == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if step == "refused":
            raise httpx.ConnectError("refused", request=request)
        assert isinstance(step, int)
        return httpx.Response(
            step, headers=self.headers_for(step), content=self.bodies.get(step, b"")
        )


@dataclass
class Harness:
    dispatcher: WebhookDispatcher
    receiver: Receiver
    metrics: Metrics

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def settings(**changes: object) -> WebhookSettings:
    base = WebhookSettings(
        secrets=(SECRET,), retry_schedule="default", max_attempts=5, concurrency=4
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def make(nursery) -> AsyncIterator[Callable[..., Harness]]:
    clients: list[httpx.AsyncClient] = []

    def factory(
        receiver: Receiver | None = None, time_scale: float = 1.0, **changes: object
    ) -> Harness:
        receiver = receiver or Receiver()
        client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
        clients.append(client)
        metrics = Metrics()
        dispatcher = WebhookDispatcher(
            settings(**changes),
            client,
            metrics,
            seams=DispatcherSeams(rng=random.Random(7), wall_clock=trio.current_time),
            time_scale=time_scale,
        )
        nursery.start_soon(dispatcher.run)
        return Harness(dispatcher, receiver, metrics)

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def test_delivers_the_contract_bytes_and_headers(make, autojump_clock):
    h = make()
    c = change()
    await h.dispatcher.notify(c)
    await h.dispatcher.wait_idle()
    (req,) = h.receiver.requests
    body = req.content
    assert json.loads(body) == {
        "payment_id": "pay_1",
        "reservation_id": "rsv_1",
        "status": "PAYMENT_STATUS_COMPLETED",
        "amount": 100000,
        "currency": "KRW",
        "timestamp": 1700000000,
        "event_type": "payment.status_updated",
    }
    assert list(json.loads(body)) == [
        "payment_id",
        "reservation_id",
        "status",
        "amount",
        "currency",
        "timestamp",
        "event_type",
    ]
    assert b" " not in body
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert req.headers["x-webhook-signature"] == expected
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == "PaymentSim/1.0"
    assert req.headers["x-webhook-id"] == "evt_1"
    assert req.headers["x-webhook-attempt"] == "1"
    assert req.headers["host"] == "127.0.0.1:9"
    assert h.metric("paysim_webhook_deliveries_total", outcome="delivered") == 1


async def test_change_without_webhook_url_sends_nothing(make, autojump_clock):
    h = make()
    assert not h.dispatcher.announces(change(url=""))
    assert h.dispatcher.announces(change())
    await h.dispatcher.notify(change(url=""))
    await h.dispatcher.wait_idle()
    assert h.receiver.requests == []


async def test_failures_are_retried_with_the_same_id_and_backoff(make, autojump_clock):
    h = make(Receiver(script=[500, "timeout", "refused", 502]))
    start = trio.current_time()
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    reqs = h.receiver.requests
    assert len(reqs) == 5
    assert {r.headers["x-webhook-id"] for r in reqs} == {"evt_1"}
    assert [r.headers["x-webhook-attempt"] for r in reqs] == ["1", "2", "3", "4", "5"]
    # Full jitter from the default schedule (1 s base, doubling), seeded RNG.
    rng = random.Random(7)
    expected = [start]
    for attempt in range(1, 5):
        expected.append(expected[-1] + SCHEDULES["default"].delay(attempt, rng))
    assert h.receiver.times == pytest.approx(expected)
    assert h.metric("paysim_webhook_deliveries_total", outcome="delivered") == 1
    assert h.metric("paysim_webhook_attempts_total", result="5xx") == 2
    assert h.metric("paysim_webhook_attempts_total", result="timeout") == 1
    assert h.metric("paysim_webhook_attempts_total", result="error") == 1


async def test_time_compression_scales_the_retry_schedule(make, autojump_clock):
    """SIMULATION_TIME_SCALE=0.001: Toss's 1, 4, 16 minute retries take 60, 240, 960 ms."""
    h = make(Receiver(script=[500, 500, 500]), retry_schedule="toss", time_scale=0.001)
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    rng = random.Random(7)
    gaps = [b - a for a, b in itertools.pairwise(h.receiver.times)]
    want = [SCHEDULES["toss"].delay(attempt, rng) * 0.001 for attempt in (1, 2, 3)]
    assert gaps == pytest.approx(want)
    assert sum(gaps) < 1.3


async def test_gives_up_after_max_attempts(make, autojump_clock):
    h = make(Receiver(script=[500] * 10), max_attempts=3)
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    assert len(h.receiver.requests) == 3
    assert h.metric("paysim_webhook_deliveries_total", outcome="gave_up") == 1
    outcomes = [a.outcome for a in h.dispatcher.journal.attempts("pay_1")]
    assert outcomes == ["retry", "retry", "gave_up"]


async def test_410_gone_stops_for_good(make, autojump_clock):
    h = make(Receiver(script=[410]))
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    assert len(h.receiver.requests) == 1
    assert h.metric("paysim_webhook_deliveries_total", outcome="gone") == 1


async def test_redirect_is_not_followed(make, autojump_clock):
    receiver = Receiver(script=[302], headers_for=lambda s: {"location": "http://127.0.0.1:9/x"})
    h = make(receiver, max_attempts=2)
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    assert [str(r.url) for r in receiver.requests] == [URL, URL]


async def test_retry_after_is_honoured(make, autojump_clock):
    receiver = Receiver(script=[429], headers_for=lambda s: {"retry-after": "120"})
    h = make(receiver)
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    first, second = receiver.times
    assert second - first == pytest.approx(120.0)


async def test_retry_after_is_capped_by_the_schedule(make, autojump_clock):
    receiver = Receiver(script=[503], headers_for=lambda s: {"retry-after": "99999"})
    h = make(receiver, retry_schedule="fast")
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    first, second = receiver.times
    assert second - first == pytest.approx(SCHEDULES["fast"].cap_s)


async def test_changes_of_one_payment_are_delivered_in_order(make, autojump_clock):
    h = make(Receiver(script=[500, 500]))
    await h.dispatcher.notify(change(status=PaymentStatus.COMPLETED, event_id="evt_a"))
    await h.dispatcher.notify(change(status=PaymentStatus.REFUNDED, event_id="evt_b"))
    await h.dispatcher.wait_idle()
    ids = [r.headers["x-webhook-id"] for r in h.receiver.requests]
    assert ids == ["evt_a", "evt_a", "evt_a", "evt_b"]


async def test_a_failing_payment_does_not_hold_the_others(make, autojump_clock):
    receiver = Receiver(script=[500] * 3)
    h = make(receiver, concurrency=1)
    await h.dispatcher.notify(change("pay_slow", event_id="evt_slow"))
    await h.dispatcher.notify(change("pay_fast", event_id="evt_fast"))
    await h.dispatcher.wait_idle()
    ids = [r.headers["x-webhook-id"] for r in receiver.requests]
    # The fast payment went out while the slow one waited for its retry.
    assert ids.index("evt_fast") < len(ids) - 1


async def test_full_queue_makes_the_newest_change_wait(make, autojump_clock):
    receiver = Receiver(block=trio.Event())
    h = make(receiver, queue_size=2, concurrency=1)
    await h.dispatcher.notify(change("pay_1", event_id="e1"))
    await h.dispatcher.notify(change("pay_2", event_id="e2"))
    third_done = trio.Event()

    async def third() -> None:
        await h.dispatcher.notify(change("pay_3", event_id="e3"))
        third_done.set()

    async with trio.open_nursery() as n:
        n.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not third_done.is_set()
        assert h.metric("paysim_webhook_enqueue_waits_total") == 1
        assert h.metric("paysim_webhook_queue_depth") == 2
        assert receiver.block is not None
        receiver.block.set()
    await h.dispatcher.wait_idle()
    assert third_done.is_set()
    assert len(receiver.requests) == 3
    assert h.metric("paysim_webhook_queue_depth") == 0


async def test_a_change_is_queued_without_a_checkpoint_while_there_is_room(make, autojump_clock):
    """A status change's task does not yield to the scheduler to queue its webhook
    (issue 18): in a cancelled scope, ``notify`` still queues and returns."""
    h = make(queue_size=1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await h.dispatcher.notify(change("pay_1", event_id="e1"))  # no Cancelled: no checkpoint
    assert not scope.cancelled_caught
    assert h.metric("paysim_webhook_queue_depth") == 1
    with trio.CancelScope() as scope:  # full: it waits, so the cancellation lands
        scope.cancel()
        await h.dispatcher.notify(change("pay_2", event_id="e2"))
    assert scope.cancelled_caught
    assert h.metric("paysim_webhook_enqueue_waits_total") == 1
    await h.dispatcher.wait_idle()
    assert [r.headers["x-webhook-id"] for r in h.receiver.requests] == ["e1"]


async def test_cloud_metadata_is_refused_without_a_request(make, autojump_clock):
    h = make()
    await h.dispatcher.notify(change(url="http://169.254.169.254/latest/meta-data/"))
    await h.dispatcher.wait_idle()
    assert h.receiver.requests == []
    assert h.metric("paysim_webhook_deliveries_total", outcome="blocked") == 1
    (attempt,) = h.dispatcher.journal.attempts("pay_1")
    assert attempt.outcome == "blocked"


async def test_loopback_is_refused_in_production(make, autojump_clock):
    h = make(allow_loopback=False, allow_private=False)
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    assert h.receiver.requests == []


async def test_standard_webhooks_headers_with_rotated_secrets(make, autojump_clock):
    h = make(secrets=("new-secret", "old-secret"), signature_style="standard")
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    (req,) = h.receiver.requests
    assert req.headers["webhook-id"] == "evt_1"
    signed = f"evt_1.{req.headers['webhook-timestamp']}.".encode() + req.content
    expected = {
        "v1,"
        + __import__("base64").b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in (b"new-secret", b"old-secret")
    }
    assert set(req.headers["webhook-signature"].split(" ")) == expected
    legacy = hmac.new(b"new-secret", req.content, hashlib.sha256).hexdigest()
    assert req.headers["x-webhook-signature"] == "sha256=" + legacy


async def test_journal_records_attempts_without_secrets_or_query(make, autojump_clock):
    h = make(Receiver(script=[500]))
    await h.dispatcher.notify(change(url="http://user:pw@127.0.0.1:9/hook?token=abc"))
    await h.dispatcher.wait_idle()
    attempts = h.dispatcher.journal.attempts("pay_1")
    assert [(a.attempt, a.outcome, a.http_status) for a in attempts] == [
        (1, "retry", 500),
        (2, "delivered", 200),
    ]
    for a in attempts:
        assert "pw" not in a.url
        assert "token" not in a.url


async def test_journal_keeps_the_answers_start_and_when_the_next_attempt_is_due(
    make, autojump_clock
):
    h = make(Receiver(script=[503], bodies={503: b"upstream\x00down\n" + b"x" * 500, 200: b"ok"}))
    await h.dispatcher.notify(change())
    await h.dispatcher.wait_idle()
    first, second = h.dispatcher.journal.attempts("pay_1")
    assert first.outcome == "retry"
    assert first.excerpt.startswith("upstream down ")  # control characters made printable
    assert len(first.excerpt) == 120
    assert first.next_retry_s is not None
    assert first.next_retry_s >= 0
    assert (second.outcome, second.excerpt, second.next_retry_s) == ("delivered", "ok", None)
