"""paysim.testing in a trio test: the real app in the test's loop, in virtual time."""

from __future__ import annotations

import pytest
import trio

from paysim.testing import NotReceived, run_paysim
from paysim.testing.settings import build_settings


async def test_approved_payment_sends_a_verified_webhook_and_an_event(autojump_clock):
    async with run_paysim() as sim:
        intent = await sim.create_intent(70_000)
        start = trio.current_time()
        hook = await sim.webhooks.next(intent.payment_intent_id, status="completed")
        assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)  # DEFAULT_DELAY_MS
        assert hook.styles == ("legacy",)
        assert hook.payload["amount"] == 70_000
        assert hook.payload["reservation_id"].startswith(sim.prefix)
        event = await sim.events.next(intent.payment_intent_id, status="completed")
        assert event.detail["user_id"] == sim.user_id
        assert event.detail_type == "Payment Status Updated"


async def test_a_15_minute_expiry_a_delay_and_the_default_retry_schedule_take_no_real_time(
    autojump_clock,
):
    # Its wall time is a figure, not an assertion: `pytest --durations=0` on this file
    # (issue 16's target: under 2 s).
    async with run_paysim(webhook_signature_style="standard") as sim:
        expiring = await sim.create_intent(scenario="timeout")
        delayed = await sim.create_intent(scenario="delay")
        t0 = trio.current_time()
        await sim.wait_status(delayed.payment_intent_id, "completed")
        assert trio.current_time() - t0 == pytest.approx(10.0, abs=0.01)  # DELAY_SCENARIO_MS
        await sim.wait_status(expiring.payment_intent_id, "expired", timeout_s=901)
        assert trio.current_time() - t0 == pytest.approx(900.0, abs=0.01)  # INTENT_TTL_MS

        sim.webhooks.fail(503)  # every attempt fails: the whole default schedule runs
        retried = await sim.create_intent()
        with pytest.raises(NotReceived):
            await sim.webhooks.next(retried.payment_intent_id, timeout_s=6 * 3600)
        attempts = sim.webhooks.for_payment(retried.payment_intent_id)
        assert len(attempts) == sim.settings.webhook.max_attempts
        assert all(a.answered == 503 and a.styles == ("legacy", "standard") for a in attempts)
    async with run_paysim(webhook_retry_schedule="toss") as sim:  # 1, 4, 16, 64... minutes
        sim.webhooks.fail(500, times=7)  # the eighth and last attempt gets through
        intent = await sim.create_intent()
        hook = await sim.webhooks.next(intent.payment_intent_id, timeout_s=7 * 24 * 3600)
        assert hook.headers["x-webhook-attempt"] == "8"
        assert hook.received_at - 2.0 > 3600  # hours of virtual time


async def test_the_receiver_recovers_after_going_away(autojump_clock):
    async with run_paysim() as sim:
        sim.webhooks.go_away(for_s=5.0)
        intent = await sim.create_intent()
        hook = await sim.webhooks.next(intent.payment_intent_id, "completed")
        dropped = [d for d in sim.webhooks.for_payment(intent.payment_intent_id) if d.answered == 0]
        assert dropped, "the first attempts found the host gone"
        assert hook.received_at - dropped[0].received_at >= 3.0


async def test_a_slow_receiver_makes_the_sender_time_out_in_virtual_time(autojump_clock):
    async with run_paysim(webhook_timeout_ms=1000) as sim:
        sim.webhooks.slow(5.0, for_s=3.0)
        intent = await sim.create_intent()
        hook = await sim.webhooks.next(intent.payment_intent_id, "completed")
        await sim.advance(10)  # the slow answers to the attempts that timed out
        attempts = sim.webhooks.for_payment(intent.payment_intent_id)
        assert len(attempts) >= 2
        assert min(a.received_at for a in attempts) == pytest.approx(2.0, abs=0.01)
        assert hook.received_at > 3.0  # after the first attempt's 1 s timeout


async def test_forcing_an_outcome_and_seeding(autojump_clock):
    async with run_paysim(default_delay_ms=60_000) as sim:
        declined = await sim.create_intent(outcome="insufficient_funds")
        forced = await sim.create_intent()
        t0 = trio.current_time()
        await sim.force(forced.payment_intent_id, "failed")
        hook = await sim.webhooks.next(forced.payment_intent_id, "failed")
        assert hook.received_at - t0 < 0.01  # now, not after the 60 s delay
        payment = await sim.wait_status(declined.payment_intent_id, "failed", timeout_s=61)
        assert payment.result.failure_reason == "insufficient_funds"

        def statuses() -> list[int]:
            return [p.status for p in payments]

        sim.seed(42)
        first = [await sim.create_intent(scenario="random") for _ in range(20)]
        sim.seed(42)
        second = [await sim.create_intent(scenario="random") for _ in range(20)]
        await sim.advance(61)
        payments = [await sim.payment(i.payment_intent_id) for i in first]
        a = statuses()
        payments = [await sim.payment(i.payment_intent_id) for i in second]
        assert statuses() == a
        assert len(set(a)) == 2  # both outcomes drawn: the seed decides, not a constant


async def test_scopes_of_one_simulator_see_only_their_own(autojump_clock):
    async with run_paysim() as root:
        a, b = root.scoped(), root.scoped(default_scenario="fail")
        ia, ib = await a.create_intent(), await b.create_intent()
        await a.webhooks.next(ia.payment_intent_id, "completed")
        await b.webhooks.next(ib.payment_intent_id, "failed")
        await root.advance(1)
        assert {d.payment_id for d in a.webhooks.received} == {ia.payment_intent_id}
        assert {d.payment_id for d in b.webhooks.received} == {ib.payment_intent_id}
        assert {e.payment_id for e in a.events.published} == {ia.payment_intent_id}
        assert {e.payment_id for e in root.events.published} == {
            ia.payment_intent_id,
            ib.payment_intent_id,
        }


async def test_a_webhook_signed_with_another_secret_is_refused_and_reported(autojump_clock):
    async with run_paysim() as sim:
        sim._core.receiver._secrets = ("not-the-secret",)
        intent = await sim.create_intent()
        with pytest.raises(AssertionError, match="does not match"):
            await sim.webhooks.next(intent.payment_intent_id, timeout_s=10)


def test_settings_are_named_like_the_environment():
    s = build_settings(default_scenario="fail", webhook_max_attempts=3, events_enabled=False)
    assert (s.simulation.default_scenario, s.webhook.max_attempts) == ("fail", 3)
    assert not s.events.enabled
    assert (s.grpc.host, s.grpc.port) == ("127.0.0.1", 0)
    with pytest.raises(TypeError, match="default_scenarioo"):
        build_settings(default_scenarioo="fail")
