"""The dispatcher's chaos settings: duplicates and out-of-order deliveries, on request.

Like test_webhook_dispatcher.py: virtual time (``autojump_clock``) and httpx's
``MockTransport``, so hold times are asserted exactly. The settings' parsing
and their refusal in production are at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
import pytest
import trio

from paysim.config import ConfigError, Settings
from paysim.domain.models import PaymentStatus, StatusChange
from tests.unit.delivery.test_webhook_dispatcher import Harness, Receiver, change, make, nursery

__all__ = ["make", "nursery"]  # fixtures, used by name


class Chaos(Harness):
    def sent(self) -> list[tuple[str, str, str]]:
        """(X-Webhook-Id, status, X-Webhook-Attempt) of every request, in arrival order."""
        return [
            (
                r.headers["x-webhook-id"],
                httpx.Response(200, content=r.content).json()["status"],
                r.headers["x-webhook-attempt"],
            )
            for r in self.receiver.requests
        ]


@pytest.fixture
def chaos(make: Callable[..., Harness]) -> Callable[..., Chaos]:
    """``test_webhook_dispatcher``'s ``make``, with ``sent()`` on the harness."""

    def factory(*args: object, **changes: object) -> Chaos:
        h = make(*args, **changes)
        return Chaos(h.dispatcher, h.receiver, h.metrics)

    return factory


def refunded(event_id: str, pid: str = "pay_1") -> StatusChange:
    base = change(pid, PaymentStatus.REFUNDED, event_id=event_id)
    return dataclasses.replace(base, payment=dataclasses.replace(base.payment, refunded=100_000))


COMPLETED, REFUNDED = "PAYMENT_STATUS_COMPLETED", "PAYMENT_STATUS_REFUNDED"


async def test_chaos_is_off_by_default(chaos, autojump_clock):
    c = chaos()
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.notify(refunded("evt_b"))
    await c.dispatcher.wait_idle()
    assert c.sent() == [("evt_a", COMPLETED, "1"), ("evt_b", REFUNDED, "1")]
    for kind in ("duplicate", "hold", "reorder"):
        assert c.metric("paysim_webhook_chaos_total", kind=kind) == 0


async def test_a_duplicate_is_the_same_id_and_body_sent_again_at_once(chaos, autojump_clock):
    c = chaos(chaos_duplicate_rate=1.0)
    start = trio.current_time()
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.wait_idle()
    first, second = c.receiver.requests
    assert second.content == first.content
    assert c.sent() == [("evt_a", COMPLETED, "1"), ("evt_a", COMPLETED, "2")]
    assert c.receiver.times == [start, start]
    assert c.metric("paysim_webhook_chaos_total", kind="duplicate") == 1
    # The copy is chaos, not a delivery of its own.
    assert c.metric("paysim_webhook_deliveries_total", outcome="delivered") == 1
    assert c.metric("paysim_webhook_attempts_total", result="2xx") == 2
    assert c.metric("paysim_webhook_queue_depth") == 0


async def test_a_duplicate_keeps_the_payments_order(chaos, autojump_clock):
    c = chaos(chaos_duplicate_rate=1.0)
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.notify(refunded("evt_b"))
    await c.dispatcher.wait_idle()
    assert [i for i, _, _ in c.sent()] == ["evt_a", "evt_a", "evt_b", "evt_b"]


async def test_a_failed_copy_is_retried_but_never_reported_undelivered(chaos, autojump_clock):
    # First attempt 200; the copy fails twice, then succeeds.
    c = chaos(Receiver(script=[200, 500, 500]), chaos_duplicate_rate=1.0)
    await c.dispatcher.notify(change(event_id="evt_a"))
    await trio.testing.wait_all_tasks_blocked()
    assert c.dispatcher.pending_payment_ids() == []  # only the copy is left
    await c.dispatcher.wait_idle()
    assert [a for _, _, a in c.sent()] == ["1", "2", "3", "4"]
    assert c.metric("paysim_webhook_deliveries_total", outcome="delivered") == 1


async def test_copies_hold_no_queue_slot(chaos, autojump_clock):
    c = chaos(chaos_duplicate_rate=1.0, queue_size=1)
    for n in range(3):
        with trio.fail_after(5):  # a leaked slot would block the next notify forever
            await c.dispatcher.notify(change(f"pay_{n}", event_id=f"evt_{n}"))
        await c.dispatcher.wait_idle()
    assert len(c.receiver.requests) == 6
    assert c.metric("paysim_webhook_enqueue_waits_total") == 0


async def test_reorder_lets_a_queued_later_change_overtake(chaos, autojump_clock):
    c = chaos(chaos_reorder_rate=1.0)
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.notify(refunded("evt_b"))
    await c.dispatcher.wait_idle()
    assert c.sent() == [("evt_b", REFUNDED, "1"), ("evt_a", COMPLETED, "1")]
    assert c.metric("paysim_webhook_chaos_total", kind="reorder") == 1
    assert c.metric("paysim_webhook_chaos_total", kind="hold") == 0
    assert c.metric("paysim_webhook_deliveries_total", outcome="delivered") == 2


async def test_a_held_change_is_overtaken_by_one_arriving_during_the_hold(chaos, autojump_clock):
    # Hold 2 s, compressed 10x: 0.2 s.
    c = chaos(chaos_reorder_rate=1.0, chaos_reorder_hold_s=2.0, time_scale=0.1)
    start = trio.current_time()
    await c.dispatcher.notify(change(event_id="evt_a"))
    await trio.sleep(0.05)
    await c.dispatcher.notify(refunded("evt_b"))
    await c.dispatcher.wait_idle()
    assert [i for i, _, _ in c.sent()] == ["evt_b", "evt_a"]
    assert c.receiver.times == pytest.approx([start + 0.2, start + 0.2])
    assert c.metric("paysim_webhook_chaos_total", kind="hold") == 1
    assert c.metric("paysim_webhook_chaos_total", kind="reorder") == 1


async def test_a_held_change_with_nothing_behind_it_goes_out_late_in_order(chaos, autojump_clock):
    c = chaos(chaos_reorder_rate=1.0, chaos_reorder_hold_s=1.5)
    start = trio.current_time()
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.wait_idle()
    assert c.sent() == [("evt_a", COMPLETED, "1")]
    assert c.receiver.times == [pytest.approx(start + 1.5)]
    assert c.metric("paysim_webhook_chaos_total", kind="hold") == 1
    assert c.metric("paysim_webhook_chaos_total", kind="reorder") == 0


async def test_retries_are_never_held(chaos, autojump_clock):
    """Reorder is decided once, before the first attempt: a retry keeps its backoff."""
    c = chaos(Receiver(script=[500]), chaos_reorder_rate=1.0, chaos_reorder_hold_s=100.0)
    start = trio.current_time()
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.wait_idle()
    first, second = c.receiver.times
    assert first == pytest.approx(start + 100.0)
    assert second - first < 1.0  # the default schedule's first retry, not another hold
    assert c.metric("paysim_webhook_chaos_total", kind="hold") == 1


async def test_both_kinds_together_still_deliver_everything(chaos, autojump_clock):
    c = chaos(chaos_duplicate_rate=1.0, chaos_reorder_rate=1.0, chaos_reorder_hold_s=0.5)
    await c.dispatcher.notify(change(event_id="evt_a"))
    await c.dispatcher.notify(refunded("evt_b"))
    await c.dispatcher.wait_idle()
    assert [i for i, _, _ in c.sent()] == ["evt_b", "evt_b", "evt_a", "evt_a"]
    assert c.dispatcher.pending_payment_ids() == []


async def test_decisions_depend_on_the_seed_and_the_change_not_on_order(chaos, autojump_clock):
    def duplicated(c: Chaos) -> set[str]:
        ids = [i for i, _, _ in c.sent()]
        return {i for i in ids if ids.count(i) > 1}

    pids = [f"pay_{n}" for n in range(40)]

    async def run(order: list[str], seed: int) -> set[str]:
        c = chaos(chaos_duplicate_rate=0.5, chaos_seed=seed)
        for pid in order:
            base = change(pid, event_id=f"evt_{pid}")
            payment = dataclasses.replace(base.payment, reservation_id=f"rsv_{pid}")
            await c.dispatcher.notify(dataclasses.replace(base, payment=payment))
        await c.dispatcher.wait_idle()
        return duplicated(c)

    forward = await run(pids, seed=11)
    backward = await run(list(reversed(pids)), seed=11)
    other = await run(pids, seed=12)
    assert forward == backward
    assert 5 < len(forward) < 35  # about half
    assert other != forward


# -- settings ---------------------------------------------------------------------------


def test_chaos_settings_are_read_and_default_to_off():
    off = Settings.from_env({}).webhook
    assert (off.chaos_duplicate_rate, off.chaos_reorder_rate) == (0.0, 0.0)
    assert not off.chaos_enabled
    on = Settings.from_env(
        {
            "CHAOS_WEBHOOK_DUPLICATE_RATE": "0.25",
            "CHAOS_WEBHOOK_REORDER_RATE": "0.5",
            "CHAOS_WEBHOOK_REORDER_HOLD_MS": "250",
            "SIMULATION_SEED": "9",
        }
    ).webhook
    assert (on.chaos_duplicate_rate, on.chaos_reorder_rate) == (0.25, 0.5)
    assert on.chaos_reorder_hold_s == 0.25
    assert on.chaos_seed == 9  # SIMULATION_SEED unless CHAOS_SEED is set
    assert Settings.from_env({"CHAOS_SEED": "3", "SIMULATION_SEED": "9"}).webhook.chaos_seed == 3


@pytest.mark.parametrize("name", ["CHAOS_WEBHOOK_DUPLICATE_RATE", "CHAOS_WEBHOOK_REORDER_RATE"])
def test_chaos_is_refused_in_production(name):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ENVIRONMENT": "production", name: "0.01"})
    assert refused.value.variable == name
    assert "production" in str(refused.value)
    # Zero is allowed everywhere; staging may inject.
    Settings.from_env({"ENVIRONMENT": "production", name: "0"})
    Settings.from_env({"ENVIRONMENT": "staging", name: "0.01"})


@pytest.mark.parametrize("value", ["1.5", "-0.1", "often"])
def test_a_bad_chaos_rate_names_the_variable(value):
    with pytest.raises(ConfigError) as bad:
        Settings.from_env({"CHAOS_WEBHOOK_REORDER_RATE": value})
    assert bad.value.variable == "CHAOS_WEBHOOK_REORDER_RATE"
