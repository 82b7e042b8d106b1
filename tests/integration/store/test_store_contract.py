"""The store contract: one suite, run unchanged against every PaymentStore.

``store`` is parametrised over the in-memory store and the Redis store (a real
``redis-server`` on a free port, see ``redis_fixtures``). Times are the
payments' own stamps and the ``now`` each call passes, so retention and key
expiry are driven without a clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from paysim.adapters.memory_store import MemoryStore
from paysim.adapters.redis_store import open_redis_store
from paysim.config import StoreSettings
from paysim.domain.listing import sort_key
from paysim.domain.models import (
    CancelResult,
    Money,
    Payment,
    PaymentStatus,
    Refund,
    StatusChange,
)
from paysim.ports import IdempotencyRecord, PaymentStore
from tests.redis_fixtures import redis_server, redis_settings  # noqa: F401 - fixtures
from tests.unit.domain.test_domain import make_payment

S = PaymentStatus
RETENTION = 60.0
T0 = 1_764_000_000.0


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> AsyncIterator[PaymentStore]:
    if request.param == "memory":
        yield MemoryStore(retention_s=RETENTION)
        return
    settings: StoreSettings = request.getfixturevalue("redis_settings")
    async with open_redis_store(settings, retention_s=RETENTION, time_scale=1.0) as redis:
        await nursery.start(redis.run)
        yield redis


def payment(n: int, user: str = "user_1", at: float = T0, **changes: Any) -> Payment:
    return make_payment(
        payment_intent_id=f"pay_{n:04d}",
        user_id=user,
        created_at=at,
        updated_at=at,
        expires_at=at + 900,
        **changes,
    )


def moved(p: Payment, status: PaymentStatus, at: float, **changes: Any) -> Payment:
    return dataclasses.replace(p, status=status, updated_at=at, version=p.version + 1, **changes)


async def test_insert_then_get_returns_an_equal_payment(store: PaymentStore) -> None:
    p = payment(1, refunds=(Refund("re_1", Money(10, "KRW"), "why", T0),), refunded=10)
    await store.insert(p)
    assert await store.get("pay_0001") == p
    assert await store.get("pay_9999") is None


async def test_compare_and_set_needs_the_stored_version(store: PaymentStore) -> None:
    p = payment(1)
    await store.insert(p)
    done = moved(p, S.COMPLETED, T0 + 2)
    assert not await store.compare_and_set(p.version + 1, done)
    assert await store.get(p.payment_intent_id) == p  # unchanged
    assert await store.compare_and_set(p.version, done)
    assert await store.get(p.payment_intent_id) == done
    assert not await store.compare_and_set(p.version, moved(p, S.FAILED, T0 + 3))
    assert await store.get(p.payment_intent_id) == done
    assert not await store.compare_and_set(1, payment(2))  # not stored at all


async def test_of_racing_writers_exactly_one_wins(store: PaymentStore) -> None:
    p = payment(1)
    await store.insert(p)
    wins: list[PaymentStatus] = []

    async def write(status: PaymentStatus) -> None:
        change = StatusChange(f"evt_{status.name}", moved(p, status, T0 + 1), S.PENDING, T0 + 1)
        if await store.compare_and_set(p.version, change.payment, change):
            wins.append(status)

    async with trio.open_nursery() as n:
        for status in (S.COMPLETED, S.FAILED, S.CANCELLED, S.PROCESSING) * 5:
            n.start_soon(write, status)
    assert len(wins) == 1
    stored = await store.get(p.payment_intent_id)
    assert stored is not None
    assert stored.status is wins[0]


async def test_user_payments_are_the_users_own_in_key_order(store: PaymentStore) -> None:
    # Inserted out of order, with a tie on created_at broken by the id.
    for n, at in ((3, T0 + 2), (1, T0), (4, T0 + 2), (2, T0 + 1)):
        await store.insert(payment(n, at=at))
    await store.insert(payment(5, user="user_2", at=T0 + 5))
    mine = await store.user_payments("user_1")
    assert [p.payment_intent_id for p in mine] == ["pay_0001", "pay_0002", "pay_0003", "pay_0004"]
    assert [sort_key(p) for p in mine] == sorted(sort_key(p) for p in mine)
    assert [p.payment_intent_id for p in await store.user_payments("user_2")] == ["pay_0005"]
    assert list(await store.user_payments("nobody")) == []


async def test_user_payments_show_the_latest_version(store: PaymentStore) -> None:
    p = payment(1)
    await store.insert(p)
    await store.compare_and_set(p.version, moved(p, S.PROCESSING, T0 + 1))
    [listed] = await store.user_payments("user_1")
    assert listed.status is S.PROCESSING
    assert listed.version == 2


async def test_an_idempotency_key_is_claimed_once_until_released(store: PaymentStore) -> None:
    first = IdempotencyRecord("fp1", "pay_0001")
    assert await store.claim_idempotency("u", "k", first, 3600, T0) is None
    again = await store.claim_idempotency("u", "k", IdempotencyRecord("fp2", "pay_2"), 3600, T0)
    assert again == first
    # Scoped by user: another user's same key is another key.
    assert await store.claim_idempotency("v", "k", IdempotencyRecord("x", "p"), 3600, T0) is None
    await store.release_idempotency("u", "k")
    assert await store.claim_idempotency("u", "k", IdempotencyRecord("fp3", "p3"), 3600, T0) is None


async def test_a_claim_stays_with_a_payment_created_after_all(store: PaymentStore) -> None:
    # An insert whose answer was lost may have run: its key is released only if
    # its payment does not exist, so a retry finds the payment, not a free key.
    await store.insert(payment(1))
    record = IdempotencyRecord("fp", "pay_0001")
    assert await store.claim_idempotency("u", "k", record, 3600, T0) is None
    await store.release_idempotency("u", "k", unless_created="pay_0001")
    assert (
        await store.claim_idempotency("u", "k", IdempotencyRecord("fp", "p2"), 3600, T0) == record
    )
    await store.release_idempotency("u", "k", unless_created="pay_9999")  # never created
    assert await store.claim_idempotency("u", "k", IdempotencyRecord("x", "p3"), 3600, T0) is None


async def test_completing_a_claim_keeps_the_answer(store: PaymentStore) -> None:
    claim = IdempotencyRecord("fp", "pay_0001")
    await store.claim_idempotency("\x00cancel\x00pay_0001", "k", claim, 3600, T0)
    result = CancelResult(S.REFUNDED, T0 + 1, Money(100, "KRW"), "re_1")
    await store.complete_idempotency(
        "\x00cancel\x00pay_0001", "k", dataclasses.replace(claim, result=result)
    )
    got = await store.claim_idempotency(
        "\x00cancel\x00pay_0001", "k", IdempotencyRecord("other", "x"), 3600, T0 + 5
    )
    assert got is not None
    assert got.result == result
    assert got.fingerprint == "fp"
    # Completing a key nobody holds creates nothing.
    await store.complete_idempotency("u", "gone", dataclasses.replace(claim, result=result))
    assert await store.claim_idempotency("u", "gone", claim, 3600, T0) is None


async def test_an_idempotency_key_expires_at_its_ttl(store: PaymentStore) -> None:
    first = IdempotencyRecord("fp1", "pay_1")
    await store.claim_idempotency("u", "k", first, 100, T0)
    assert await store.claim_idempotency("u", "k", first, 100, T0 + 99.9) == first
    fresh = IdempotencyRecord("fp2", "pay_2")
    assert await store.claim_idempotency("u", "k", fresh, 100, T0 + 100) is None
    assert await store.claim_idempotency("u", "k", first, 100, T0 + 101) == fresh


async def test_sweep_drops_settled_payments_after_retention(store: PaymentStore) -> None:
    pending, done = payment(1), payment(2)
    await store.insert(pending)
    await store.insert(done)
    await store.compare_and_set(done.version, moved(done, S.FAILED, T0 + 10))
    assert await store.sweep(T0 + 10 + RETENTION - 0.5) == []
    assert await store.sweep(T0 + 10 + RETENTION) == ["pay_0002"]
    assert await store.get("pay_0002") is None
    assert [p.payment_intent_id for p in await store.user_payments("user_1")] == ["pay_0001"]
    assert await store.sweep(T0 + 10_000) == []  # pending payments stay
    assert await store.get("pay_0001") == pending


async def test_a_sweep_leaves_the_rest_of_the_users_index_in_order(store: PaymentStore) -> None:
    # Inserted out of order, ties on created_at; the sweep drops some from the middle.
    times = (T0 + 3, T0, T0 + 3, T0 + 1, T0 + 2, T0 + 3, T0 + 1)
    for n, at in enumerate(times, start=1):
        await store.insert(payment(n, at=at))
    for n in (3, 4, 6):  # pay_0003 and pay_0006 tie with pay_0001 on created_at
        p = await store.get(f"pay_{n:04d}")
        assert p is not None
        await store.compare_and_set(p.version, moved(p, S.CANCELLED, T0 + 10))
    assert sorted(await store.sweep(T0 + 10 + RETENTION)) == ["pay_0003", "pay_0004", "pay_0006"]
    listed = await store.user_payments("user_1")
    assert [p.payment_intent_id for p in listed] == ["pay_0002", "pay_0007", "pay_0005", "pay_0001"]
    await store.insert(payment(8, at=T0 + 1))  # into the middle again, after a drop
    listed = await store.user_payments("user_1")
    assert [sort_key(p) for p in listed] == sorted(sort_key(p) for p in listed)
    assert len(listed) == 5


async def test_a_later_change_postpones_the_drop(store: PaymentStore) -> None:
    p = payment(1)
    await store.insert(p)
    done = moved(p, S.COMPLETED, T0 + 2)
    await store.compare_and_set(p.version, done)
    refunded = moved(done, S.COMPLETED, T0 + 50, refunded=10)
    await store.compare_and_set(done.version, refunded)
    assert await store.sweep(T0 + 2 + RETENTION) == []
    assert await store.get("pay_0001") == refunded
    assert await store.sweep(T0 + 50 + RETENTION) == ["pay_0001"]
    assert await store.sweep(T0 + 50 + RETENTION + 1) == []


async def test_many_concurrent_calls_all_land(store: PaymentStore) -> None:
    async def create(n: int) -> None:
        await store.insert(payment(n, user=f"user_{n % 7}", at=T0 + n / 1000))

    async with trio.open_nursery() as nursery:
        for n in range(500):
            nursery.start_soon(create, n)
    total = 0
    for u in range(7):
        listed = await store.user_payments(f"user_{u}")
        assert [sort_key(p) for p in listed] == sorted(sort_key(p) for p in listed)
        total += len(listed)
    assert total == 500
    assert await store.get("pay_0499") == payment(499, user="user_2", at=T0 + 0.499)
