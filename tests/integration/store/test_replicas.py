"""Replicas sharing a Redis store: real ``paysim serve`` processes, real Redis.

Real time cannot be avoided here (separate processes, Redis's own clock for
leases), so the settings keep it to seconds and every wait is on a condition
with a deadline.

* a payment created on one replica is read, listed, processed, refunded and
  cancelled through another, and an idempotency key holds across them;
* a replica killed with SIGKILL mid-run: the survivor completes its pending
  payments within the takeover time, each outcome applied once (one event id
  per change), every webhook delivered, and the chaos checker's invariants
  hold.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import pytest
import trio

from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim.chaos.driver import Intent
from paysim.chaos.invariants import Evidence, check_all
from paysim.chaos.receiver import FaultPlan, WebhookReceiver
from paysim.chaos.stack import paysim_server
from tests.grpc_helpers import call, create_request, krw, payment_stub
from tests.redis_fixtures import RedisProcess, redis_server  # noqa: F401 - fixture

SECRET = "replica-test-secret"
LEASE_MS = 1_000
INTERVAL_MS = 200
DELAY_MS = 1_500


def replica_env(redis: RedisProcess, prefix: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "STORE_URL": redis.url,
        "STORE_KEY_PREFIX": prefix,
        "STORE_LEASE_MS": str(LEASE_MS),
        "STORE_TAKEOVER_INTERVAL_MS": str(INTERVAL_MS),
        "GRPC_PORT": "0",
        "HTTP_PORT": "0",
        "GRPC_HOST": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "ENVIRONMENT": "development",
        "EVENTS_ENABLED": "false",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_RETRY_SCHEDULE": "fast",
        "DRAIN_DELAY_MS": "0",
        "SHUTDOWN_GRACE_MS": "3000",
        **extra,
    }


async def test_a_payment_made_on_one_replica_is_served_by_another(
    redis_server: RedisProcess,  # noqa: F811
) -> None:
    env = replica_env(redis_server, f"t{uuid.uuid4().hex[:10]}", DEFAULT_DELAY_MS="60000")
    async with paysim_server(env) as a, paysim_server(env) as b:
        with payment_stub(a.grpc_port) as on_a, payment_stub(b.grpc_port) as on_b:
            first = await call(on_a.CreatePaymentIntent, create_request(idempotency_key="k-1"))
            pid = first.payment_intent_id
            # Read through the other replica, and the idempotency key holds there too.
            got = await call(
                on_b.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=pid)
            )
            assert got.payment.status == pb.PAYMENT_STATUS_PENDING
            again = await call(on_b.CreatePaymentIntent, create_request(idempotency_key="k-1"))
            assert again.payment_intent_id == pid
            # Processed through B (A created it and holds its timer).
            processed = await call(
                on_b.ProcessPayment, pb.ProcessPaymentRequest(payment_intent_id=pid)
            )
            assert processed.status == pb.PAYMENT_STATUS_COMPLETED
            seen_on_a = await call(
                on_a.GetPaymentStatus, pb.GetPaymentStatusRequest(payment_intent_id=pid)
            )
            assert seen_on_a.payment.status == pb.PAYMENT_STATUS_COMPLETED
            # A partial refund through A, the rest through B.
            await call(
                on_a.CancelPayment,
                pb.CancelPaymentRequest(
                    payment_intent_id=pid, reason="r1", refund_amount=krw(20_000)
                ),
            )
            rest = await call(
                on_b.CancelPayment, pb.CancelPaymentRequest(payment_intent_id=pid, reason="r2")
            )
            assert rest.status == pb.PAYMENT_STATUS_REFUNDED
            assert rest.refunded_amount.amount == 50_000
            # Another payment, created on A and cancelled through B.
            second = await call(on_a.CreatePaymentIntent, create_request(reservation_id="rsv_2"))
            cancelled = await call(
                on_b.CancelPayment,
                pb.CancelPaymentRequest(payment_intent_id=second.payment_intent_id, reason="x"),
            )
            assert cancelled.status == pb.PAYMENT_STATUS_CANCELLED
            listed = await call(on_b.ListPayments, pb.ListPaymentsRequest(user_id="user_1"))
            assert [p.payment_intent_id for p in listed.payments] == [
                second.payment_intent_id,
                pid,
            ]
            assert [p.status for p in listed.payments] == [
                pb.PAYMENT_STATUS_CANCELLED,
                pb.PAYMENT_STATUS_REFUNDED,
            ]


@pytest.mark.parametrize("how", ["sigkill", "sigterm", "sigkill-while-retrying"])
async def test_a_vanished_replicas_payments_are_completed_by_the_survivor(
    redis_server: RedisProcess,  # noqa: F811
    nursery: trio.Nursery,
    how: str,
) -> None:
    """SIGKILL: taken over when the lease ends. SIGTERM: handed over as it drains.

    While retrying: the payments resolved on the doomed replica, whose
    webhooks the receiver keeps failing (5xx), are announced by the survivor
    from the outbox, under the same event id.
    """
    retrying = how == "sigkill-while-retrying"
    receiver = WebhookReceiver((SECRET,), FaultPlan(p_5xx=0.6 if retrying else 0.0), slow_s=1.0)
    port = await nursery.start(receiver.serve, "127.0.0.1")
    hook = f"http://127.0.0.1:{port}/hook"
    env = replica_env(
        redis_server,
        f"t{uuid.uuid4().hex[:10]}",
        DEFAULT_DELAY_MS="100" if retrying else str(DELAY_MS),
        WEBHOOK_MAX_ATTEMPTS="40",
    )
    intents: list[Intent] = []
    async with paysim_server(env) as doomed, paysim_server(env) as survivor:
        with (
            payment_stub(doomed.grpc_port) as on_doomed,
            payment_stub(survivor.grpc_port) as on_survivor,
        ):

            async def create(i: int, on: Any) -> None:
                scenario = "approve" if i % 3 else "fail"
                intent = Intent(i, scenario, f"rsv_{i}", f"user_{i % 5}")
                request = create_request(
                    reservation_id=intent.reservation_id,
                    user_id=intent.user_id,
                    webhook_url=hook,
                    scenario=pb.PAYMENT_SCENARIO_APPROVE if i % 3 else pb.PAYMENT_SCENARIO_FAIL,
                )
                created = await call(on.CreatePaymentIntent, request)
                intent.payment_id = created.payment_intent_id
                intent.created_at = trio.current_time()
                intents.append(intent)

            async with trio.open_nursery() as creating:
                for i in range(120):
                    creating.start_soon(create, i, on_survivor if i % 4 == 0 else on_doomed)
            if retrying:  # every payment resolved and tried at least once
                with trio.fail_after(10):
                    await receiver.wait_for_payments(len(intents), answer=None)
            stopped_at = trio.current_time()
            doomed.process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
            with trio.fail_after(10):
                await doomed.process.wait()
            # Every payment settles within its delay plus the takeover time.
            bound = DELAY_MS / 1000 + (LEASE_MS + INTERVAL_MS) / 1000 + 2.0
            with trio.fail_after(bound + 20):
                await receiver.wait_for_payments(len(intents))
            settled_after = trio.current_time() - stopped_at
            if not retrying:  # (with retries, the receiver's failures set the pace)
                assert settled_after <= bound, f"took {settled_after:.2f}s, bound {bound:.2f}s"
            snapshot: dict[str, str] = {}
            for intent in intents:
                got = await call(
                    on_survivor.GetPaymentStatus,
                    pb.GetPaymentStatusRequest(payment_intent_id=intent.payment_id),
                )
                snapshot[intent.payment_id] = pb.PaymentStatus.Name(
                    got.payment.status
                ).removeprefix("PAYMENT_STATUS_")
    checks = check_all(
        Evidence(intents, receiver.receipts, None, snapshot, random_approve_rate=0.7)
    )
    failed = [c for c in checks if c.status == "fail"]
    assert not failed, [(c.key, c.examples) for c in failed]
    assert {c.key for c in checks if c.status == "pass"} >= {"terminal", "webhooks", "outcomes"}
    # Applied once: one event id per payment (retries and duplicates reuse it).
    ids: dict[str, set[str]] = {}
    for r in receiver.receipts:
        ids.setdefault(r.payment_id, set()).add(r.webhook_id)
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    assert len(ids) == len(intents) == 120
