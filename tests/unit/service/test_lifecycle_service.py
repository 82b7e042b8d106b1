"""The lifecycle rules that need time or internals: scheduled simulations, retention,
listing order and cursors, the store's indexes, webhook fields of refunds.

On ``autojump_clock`` with the ``open_service`` harness of ``test_service``:
a scheduled simulation an hour away and a day of retention take no real time.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from paysim.adapters.memory_store import MemoryStore
from paysim.domain import listing
from paysim.domain.events import webhook_body
from paysim.domain.models import CancelCommand, Money, PaymentStatus, Scenario
from paysim.errors import InvalidArgument
from tests.unit.service.test_service import EPOCH, Harness, create, intent, open_service

S = PaymentStatus


def cancel_cmd(
    pid: str, amount: int | None = None, key: str = "", reason: str = ""
) -> CancelCommand:
    refund = Money(amount, "KRW") if amount is not None else None
    return CancelCommand(pid, reason, refund, key)


async def completed(h: Harness) -> str:
    payment = await create(h, intent(Scenario.APPROVE))
    await h.service.process_payment(payment.payment_intent_id)
    return payment.payment_intent_id


# -- scheduled simulations --------------------------------------------------------


async def test_a_scheduled_simulation_fires_at_its_time_with_its_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        payment = await create(h, intent(Scenario.APPROVE, tags={"delay_ms": "600000"}))
        pid = payment.payment_intent_id
        done = await h.service.simulate_webhook(pid, S.FAILED, 60.0, force=False)
        assert not done.webhook_sent
        assert done.scheduled_at == EPOCH + 60.0
        await trio.sleep(59.9)
        assert (await h.store.get(pid)).status is S.PENDING  # type: ignore[union-attr]
        await trio.sleep(0.2)
        stored = await h.store.get(pid)
        assert stored is not None
        assert stored.status is S.FAILED
        [change] = h.notifier.for_payment(pid)
        assert change.event_id == done.webhook_id
        assert not h.simulator.is_scheduled(pid)  # the PG's own timer is gone


async def test_a_scheduled_simulation_that_became_illegal_is_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        payment = await create(h, intent(Scenario.APPROVE))
        pid = payment.payment_intent_id
        await h.service.simulate_webhook(pid, S.FAILED, 60.0, force=False)
        await trio.sleep(61)  # completed at 2 s; FAILED is no longer reachable
        stored = await h.store.get(pid)
        assert stored is not None
        assert stored.status is S.COMPLETED
        assert [c.payment.status for c in h.notifier.for_payment(pid)] == [S.COMPLETED]


async def test_a_scheduled_resend_of_the_current_status_resends_the_state_of_then(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        payment = await create(h, intent(Scenario.APPROVE))  # completes at 2 s
        pid = payment.payment_intent_id
        done = await h.service.simulate_webhook(pid, S.PENDING, 60.0, force=False)
        await trio.sleep(61)
        resent = h.notifier.for_payment(pid)[-1]
        assert (resent.event_id, resent.resend) == (done.webhook_id, True)
        assert resent.payment.status is S.COMPLETED


async def test_a_scheduled_resend_is_cancelled_with_its_payment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        payment = await create(h, intent(Scenario.APPROVE, tags={"delay_ms": "600000"}))
        pid = payment.payment_intent_id
        await h.service.simulate_webhook(pid, S.UNSPECIFIED, 30.0, force=False)
        await h.service.cancel_payment(cancel_cmd(pid))
        await trio.sleep(3600)
        assert [c.payment.status for c in h.notifier.for_payment(pid)] == [S.CANCELLED]


async def test_scheduled_simulations_per_payment_are_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        payment = await create(h, intent(Scenario.APPROVE))
        pid = payment.payment_intent_id
        for _ in range(16):
            await h.service.simulate_webhook(pid, S.UNSPECIFIED, 300.0, force=False)
        with pytest.raises(Exception, match="scheduled simulations"):
            await h.service.simulate_webhook(pid, S.UNSPECIFIED, 300.0, force=False)


# -- time compression ---------------------------------------------------------------


async def test_time_scale_compresses_delays_expiry_and_scheduled_simulations(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(time_scale=0.01) as h:
        approve = await create(h, intent(Scenario.APPROVE))
        timeout = await create(h, intent(Scenario.TIMEOUT))
        assert timeout.expires_at == EPOCH + 9.0  # 900 s x 0.01
        done = await h.service.simulate_webhook(
            approve.payment_intent_id, S.UNSPECIFIED, 100.0, force=False
        )
        assert done.scheduled_at == EPOCH + 1.0
        await trio.sleep(0.021)  # 2 s x 0.01, and a little
        stored = await h.store.get(approve.payment_intent_id)
        assert stored is not None
        assert stored.status is S.COMPLETED
        await trio.sleep(9.0)
        expired = await h.store.get(timeout.payment_intent_id)
        assert expired is not None
        assert (expired.status, expired.updated_at) == (S.EXPIRED, EPOCH + 9.0)
        resent = [c for c in h.notifier.changes if c.resend]
        assert [c.at for c in resent] == [EPOCH + 1.0]


# -- retention --------------------------------------------------------------------


async def test_settled_payments_are_dropped_after_retention_and_pending_ones_stay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(retention_s=60.0) as h:
        done = await completed(h)
        waiting = (await create(h, intent(Scenario.TIMEOUT))).payment_intent_id
        await trio.sleep(59)
        assert await h.service.sweep() == 0
        await trio.sleep(2)
        assert await h.service.sweep() == 1
        assert await h.store.get(done) is None
        assert await h.store.get(waiting) is not None
        page = await h.service.list_payments(listing.ListQuery("user_1"))
        assert [p.payment_intent_id for p in page.payments] == [waiting]
        assert h.sample("paysim_payments_dropped_total") == 1


async def test_a_refund_restarts_the_retention_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(retention_s=60.0) as h:
        pid = await completed(h)
        await trio.sleep(50)
        await h.service.cancel_payment(cancel_cmd(pid, 1_000))  # partial: still COMPLETED
        await trio.sleep(20)
        assert await h.service.sweep() == 0  # 70 s after completion, 20 s after the refund
        await trio.sleep(41)
        assert await h.service.sweep() == 1


async def test_idempotency_keys_expire_at_their_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(idempotency_ttl_s=86_400.0) as h:
        await create(h, intent(Scenario.APPROVE, idempotency_key="k"))
        assert h.store.idempotency_keys == 1
        await trio.sleep(86_400 + 1)  # a mock clock: a day takes no time
        await h.service.sweep()
        assert h.store.idempotency_keys == 0


async def test_the_sweeper_drops_scheduled_work_of_dropped_payments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(retention_s=60.0) as h:
        pid = await completed(h)
        await h.service.simulate_webhook(pid, S.UNSPECIFIED, 300.0, force=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.service.run_sweeper, 1.0)
            await trio.sleep(62)
            nursery.cancel_scope.cancel()
        assert h.simulator.scheduled_extras(pid) == 0
        await trio.sleep(300)
        assert len(h.notifier.for_payment(pid)) == 1  # the completion only


async def test_the_sweep_visits_only_what_is_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """O(expired): entries not yet due are never looked at, each due one once."""
    async with open_service() as h:
        template = await create(h, intent(Scenario.APPROVE))
    store = MemoryStore(retention_s=60.0)
    for i in range(1_000):  # COMPLETED, settled at EPOCH + i seconds
        at = EPOCH + i
        await store.insert(
            dataclasses.replace(
                template,
                payment_intent_id=f"pay_{i:05d}",
                status=S.COMPLETED,
                created_at=at,
                updated_at=at,
            )
        )
    assert len(store._retention) == 1_000
    dropped = await store.sweep(EPOCH + 60.0 + 9.5)
    assert dropped == [f"pay_{i:05d}" for i in range(10)]
    assert len(store._retention) == 990  # the rest untouched
    assert len(store) == 990


# -- listing --------------------------------------------------------------------------


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    cursor = listing.Cursor("n", (1_700_000_000_123_456_789, "pay_abc"))
    assert listing.decode_cursor(listing.encode_cursor(cursor)) == cursor
    for bad in ("", "x", "djF8cXwxfHA", "djF8bnx4fHBheQ", "djJ8bnwxfHBheQ"):
        with pytest.raises(InvalidArgument, match=r"pagination\.cursor"):
            listing.decode_cursor(bad)


async def test_same_time_payments_are_ordered_by_id(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service() as h:
        made = [await create(h, intent(Scenario.APPROVE)) for _ in range(5)]  # one instant
        page = await h.service.list_payments(listing.ListQuery("user_1", page_size=2))
        want = sorted((p.payment_intent_id for p in made), reverse=True)
        got: list[str] = []
        while True:
            got += [p.payment_intent_id for p in page.payments]
            if not page.has_next_page:
                break
            cursor = listing.decode_cursor(page.next_cursor)
            page = await h.service.list_payments(
                listing.ListQuery("user_1", page_size=2, cursor=cursor)
            )
        assert got == want


# -- what a refund announces -------------------------------------------------------------


async def test_refund_webhooks_add_fields_after_the_contract_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        pid = await completed(h)
        await h.service.cancel_payment(cancel_cmd(pid, 20_000, reason="one seat"))
        change = h.notifier.for_payment(pid)[-1]
        body = webhook_body(change).decode()
        assert body.startswith(f'{{"payment_id":"{pid}","reservation_id":"res_1",')
        assert '"status":"PAYMENT_STATUS_COMPLETED"' in body
        assert body.endswith(
            f'"event_type":"payment.status_updated","refund_id":"{change.refund.refund_id}",'  # type: ignore[union-attr]
            '"refund_amount":20000,"refunded_amount":20000,"reason":"one seat"}'
        )
        completion = webhook_body(h.notifier.for_payment(pid)[0]).decode()
        assert completion.endswith('"event_type":"payment.status_updated"}')  # the contract's
