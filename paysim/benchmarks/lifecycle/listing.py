"""ListPayments timed against the number of stored payments (``--list``)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import trio

from paysim import runtime
from paysim.adapters.memory_store import MemoryStore
from paysim.benchmarks.lifecycle.inprocess import EPOCH, make_service
from paysim.config import Settings, SimulationSettings
from paysim.domain import listing
from paysim.domain.ids import new_id
from paysim.domain.models import (
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.domain.validation import validate_list

PAGE_SIZE = 20
WARMUP_CALLS = 200


@dataclass
class ListingResult:
    payments: int
    users: int
    own: int
    insert_per_s: float
    first_p50_us: float
    first_p99_us: float
    cursor_p50_us: float
    cursor_p99_us: float


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _fill(store: MemoryStore, payments: int, users: int) -> float:
    """Insert ``payments`` PENDING payments for ``users`` users in turn; payments per second."""
    user_ids = [f"user-{u:06d}" for u in range(users)]
    amount = Money(10_000, "KRW")
    metadata = Metadata(source="bench")
    outcome = Outcome(PaymentStatus.COMPLETED, 2.0)

    async def fill() -> None:
        for i in range(payments):
            at = EPOCH + i * 1e-3
            await store.insert(
                Payment(
                    payment_intent_id=new_id("pay"),
                    reservation_id=f"rsv-{i}",
                    user_id=user_ids[i % users],
                    amount=amount,
                    method=PaymentMethod.CREDIT_CARD,
                    scenario=Scenario.APPROVE,
                    webhook_url="",
                    metadata=metadata,
                    client_secret="",
                    outcome=outcome,
                    status=PaymentStatus.PENDING,
                    created_at=at,
                    updated_at=at,
                    expires_at=at + 900.0,
                )
            )

    started = time.perf_counter()
    trio.run(fill)
    return payments / (time.perf_counter() - started)


def _time_listing(store: MemoryStore, user: str, calls: int) -> tuple[list[float], list[float]]:
    """Durations (µs) of ListPayments calls: the first page, and the page after it."""

    async def run() -> tuple[list[float], list[float]]:
        async with trio.open_nursery() as nursery:
            service = make_service(nursery, store, SimulationSettings())

            async def call(cursor: str) -> listing.Page:
                query = validate_list(
                    user_id=user,
                    status=PaymentStatus.UNSPECIFIED,
                    reservation_id="",
                    page=0,
                    page_size=PAGE_SIZE,
                    cursor=cursor,
                )
                return await service.list_payments(query)

            first = await call("")
            if len(first.payments) != PAGE_SIZE or not first.next_cursor:
                raise SystemExit(f"{user} has fewer than {PAGE_SIZE + 1} payments")
            cursor = first.next_cursor
            results: list[list[float]] = []
            for which in ("", cursor):
                for _ in range(WARMUP_CALLS):
                    await call(which)
                durations = []
                for _ in range(calls):
                    started = time.perf_counter_ns()
                    await call(which)
                    durations.append((time.perf_counter_ns() - started) / 1000)
                durations.sort()
                results.append(durations)
            nursery.cancel_scope.cancel()
            return results[0], results[1]

    return trio.run(run)


def run_listing(layouts: list[tuple[int, int]], calls: int) -> list[ListingResult]:
    runtime.tune_gc(Settings().gc_thresholds)  # as paysim serve
    results = []
    for payments, users in layouts:
        store = MemoryStore()
        rate = _fill(store, payments, users)
        first, after = _time_listing(store, "user-000000", calls)
        results.append(
            ListingResult(
                payments=payments,
                users=users,
                own=payments // users,
                insert_per_s=rate,
                first_p50_us=_percentile(first, 0.50),
                first_p99_us=_percentile(first, 0.99),
                cursor_p50_us=_percentile(after, 0.50),
                cursor_p99_us=_percentile(after, 0.99),
            )
        )
        del store
        gc.collect()
    return results
