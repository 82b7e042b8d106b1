"""What a pending payment keeps alive (issue 18, goal 2): nothing shared is copied per payment.

The measured figures are the benchmark's (``python -m paysim.benchmarks.lifecycle
--memory``); these tests pin the mechanisms that keep them small.
"""

from __future__ import annotations

import contextvars
import random
import sys

import pytest
import trio
import trio.testing

from paysim import runtime
from paysim.adapters import memory_store
from paysim.adapters.memory_store import MemoryStore
from paysim.domain import outcomes
from paysim.domain.models import CreateIntent, Metadata, PaymentStatus, Scenario
from paysim.simulator import Simulator
from tests.unit.domain.test_domain import validate

REQUEST_FIELD: contextvars.ContextVar[str] = contextvars.ContextVar("request_field", default="")


async def test_a_timer_does_not_keep_the_arming_requests_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The request's context (its log fields) is not copied into each pending timer."""
    seen: list[str] = []

    async def fire(payment_id: str) -> None:
        seen.append(REQUEST_FIELD.get())

    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        REQUEST_FIELD.set("a large request-scoped value")
        sim.schedule("a", 1.0, fire)
        await trio.testing.wait_all_tasks_blocked()
        [timer] = [t for t in nursery.child_tasks if t.name == "paysim.simulator.timer"]
        assert REQUEST_FIELD not in timer.context
    assert seen == [""]
    assert trio.current_time() == 1.0


async def test_every_timer_shares_one_task_name(autojump_clock: trio.testing.MockClock) -> None:
    async def fire(payment_id: str) -> None:
        return None

    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        sim.schedule("a", 1.0, fire)
        sim.schedule("b", 1.0, fire)
        await trio.testing.wait_all_tasks_blocked()
        first, second = [t for t in nursery.child_tasks if t.name == "paysim.simulator.timer"]
        assert first.name is second.name


async def test_the_timers_dict_gives_its_table_back_once_every_timer_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def fire(payment_id: str) -> None:
        return None

    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=100)
        for i in range(50):
            sim.schedule(f"p{i}", 5.0, fire)
        storm_table = sim._timers
        storm_size = sys.getsizeof(storm_table)
        for i in range(50):
            sim.cancel(f"p{i}")
        assert sim.pending == 0
        # Its table is freed, the dict kept: a new one would be born among the
        # storm's objects and keep their memory (sparse_tables.shrink_dict).
        assert sim._timers is storm_table
        assert sys.getsizeof(sim._timers) == sys.getsizeof({})
        assert storm_size > sys.getsizeof({})
        sim.schedule("after", 1.0, fire)  # still schedules as before
    assert sim.pending == 0


def test_timeout_payments_share_one_outcome() -> None:
    timing = outcomes.Timing(
        default_delay_s=2.0, delay_scenario_s=5.0, intent_ttl_s=900.0, random_approve_rate=0.8
    )
    rng = random.Random(1)
    first = outcomes.decide(Scenario.TIMEOUT, timing, rng, None)
    assert first is outcomes.decide(Scenario.TIMEOUT, timing, rng, None)
    assert (first.status, first.delay_s, first.response_code) == (PaymentStatus.EXPIRED, 900.0, 68)
    approved = outcomes.decide(Scenario.APPROVE, timing, rng, None)
    assert approved is outcomes.decide(Scenario.APPROVE, timing, rng, None)
    assert outcomes.decide(Scenario.APPROVE, timing, rng, 7.0).delay_s == 7.0


def test_repeated_request_strings_are_shared_between_payments() -> None:
    """Each decoded request brings its own strings; the command keeps one of each."""

    def fresh(text: str) -> str:
        return "".join(list(text))  # a new object with the same value, as a decoder makes

    def command() -> CreateIntent:
        return validate(
            user_id=fresh("user_456"),
            currency=fresh("KRW"),
            webhook_url=fresh("https://example.com/hooks/payment"),
            metadata=Metadata(source=fresh("web"), user_agent=fresh("Mozilla/5.0")),
        )

    one, two = command(), command()
    assert one.user_id is two.user_id
    assert one.amount.currency is two.amount.currency
    assert one.webhook_url is two.webhook_url
    assert one.metadata.source is two.metadata.source
    assert one.metadata.user_agent is two.metadata.user_agent


async def test_a_large_sweep_compacts_the_store(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from tests.unit.service.test_service import open_service

    monkeypatch.setattr(memory_store, "COMPACT_AFTER", 3)
    returned: list[bool] = []

    def return_free_memory() -> bool:
        returned.append(True)
        return True

    monkeypatch.setattr(runtime, "return_free_memory", return_free_memory)
    store = MemoryStore(retention_s=60.0)
    async with open_service(store=store, retention_s=60.0, default_scenario="approve") as h:
        ids = [
            await h.service.create_intent(validate(reservation_id=f"r{i}", idempotency_key=""))
            for i in range(4)
        ]
        await trio.sleep(3.0)  # approved after the default delay
        assert store.compactions == 0
        await trio.sleep(61.0)  # past retention (the sweeper is not running here)
        assert await h.service.sweep() == 4
        assert store.compactions == 1
        assert returned == [True]
        assert len(store) == 0
        assert await store.get(ids[0].payment.payment_intent_id) is None


def test_free_memory_goes_back_where_glibc_is() -> None:
    assert runtime.return_free_memory() is (runtime._malloc_trim is not None)
