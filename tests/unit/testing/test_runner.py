"""paysim.testing.running(): the simulator on a background thread, for sync and asyncio tests."""

from __future__ import annotations

import asyncio

from paysim._proto.proto.common.v1.types_pb2 import Money
from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.testing import aio_stub, running


def test_sync_expiry_delay_and_retry_schedule_with_a_jumping_clock():
    with running(webhook_max_attempts=4) as sim:
        stub = sim.stub()
        delayed = stub.CreatePaymentIntent(
            payment_pb2.CreatePaymentIntentRequest(
                reservation_id=sim.reservation_id(),
                user_id=sim.user_id,
                amount=Money(amount=9_000, currency="KRW"),
                scenario=payment_pb2.PAYMENT_SCENARIO_DELAY,
                webhook_url=sim.webhooks.url,
            ),
            timeout=10,
        )
        sim.advance(10)  # DELAY_SCENARIO_MS, at once
        hook = sim.webhooks.next(delayed.payment_intent_id, "completed", timeout_s=5)
        assert hook.styles == ("legacy",)

        expiring = sim.create_intent(scenario="timeout")
        sim.advance(900)
        assert sim.wait_status(expiring.payment_intent_id, "expired", timeout_s=5).status == 7

        sim.webhooks.fail(503)
        failing = sim.create_intent()
        for _ in range(20):  # each attempt's backoff starts after the previous jump
            sim.advance(30)
        attempts = [d for d in sim.webhooks.received if d.payment_id == failing.payment_intent_id]
        assert [a.answered for a in attempts] == [503] * 4


def test_asyncio_code_reaches_the_runner_with_grpc_aio():
    with running(default_scenario="fail") as sim:

        async def flow() -> str:
            stub, channel = aio_stub(sim.grpc_target)
            try:
                created = await stub.CreatePaymentIntent(
                    payment_pb2.CreatePaymentIntentRequest(
                        reservation_id=sim.reservation_id(),
                        user_id=sim.user_id,
                        amount=Money(amount=1_000, currency="KRW"),
                        webhook_url=sim.webhooks.url,
                    ),
                    timeout=10,
                )
            finally:
                await channel.close()
            return str(created.payment_intent_id)

        payment_id = asyncio.run(flow())
        sim.advance(2)
        assert sim.webhooks.next(payment_id, timeout_s=5).status == "PAYMENT_STATUS_FAILED"
        assert sim.events.next(payment_id, "failed", timeout_s=5).detail["user_id"] == sim.user_id


def test_scopes_of_a_runner_are_isolated():
    with running() as root:
        a, b = root.scoped(), root.scoped()
        ia = a.create_intent()
        ib = b.create_intent()
        root.advance(2)
        a.webhooks.next(ia.payment_intent_id, timeout_s=5)
        b.webhooks.next(ib.payment_intent_id, timeout_s=5)
        assert {d.payment_id for d in a.webhooks.received} == {ia.payment_intent_id}
        assert {e.payment_id for e in b.events.published} == {ib.payment_intent_id}
