"""``paysim.sparse_tables``: nearly empty tables are rebuilt in place, trio's task
sets included (on the installed trio), and the tasks in them go on as before."""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

from paysim import parking, runtime, sparse_tables
from paysim.simulator import Simulator


@pytest.fixture
def small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables from 4 KiB count, so a few thousand entries make a storm."""
    monkeypatch.setattr(sparse_tables, "SPARSE_FROM_BYTES", 4096)


def test_a_table_is_sparse_when_large_and_mostly_emptied() -> None:
    table = set(range(100_000))
    assert not sparse_tables.is_sparse(table)  # large, but full
    for n in range(99_990):
        table.discard(n)
    assert sparse_tables.is_sparse(table)
    assert not sparse_tables.is_sparse({1, 2, 3})
    assert not sparse_tables.is_sparse(set())
    emptied = {n: n for n in range(100_000)}
    for n in range(100_000):
        del emptied[n]
    assert sparse_tables.is_sparse(emptied)


def test_shrink_set_keeps_the_object_and_its_members() -> None:
    table = set(range(100_000))
    for n in range(10, 100_000):
        table.discard(n)
    before = sys.getsizeof(table)
    same = table
    sparse_tables.shrink_set(table)
    assert same is table
    assert table == set(range(10))
    assert sys.getsizeof(table) < before / 100


def test_shrink_dict_keeps_the_object_and_its_entries() -> None:
    table = {n: str(n) for n in range(100_000)}
    for n in range(10, 100_000):
        del table[n]
    before = sys.getsizeof(table)
    same = table
    sparse_tables.shrink_dict(table)
    assert same is table
    assert table == {n: str(n) for n in range(10)}
    assert list(table) == list(range(10))  # in the same order
    assert sys.getsizeof(table) < before / 100


async def test_trios_task_sets_shrink_and_their_tasks_go_on(small_tables: None) -> None:
    sleeper_cancelled = []

    async def sleeper() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            sleeper_cancelled.append(True)
            raise

    async with trio.open_nursery() as nursery:
        release = trio.Event()
        for _ in range(5_000):
            nursery.start_soon(release.wait)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()  # the storm has ended
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        sets = sparse_tables._trio_task_sets(nursery)
        assert len(sets) == 3, "trio's task sets are not where paysim.sparse_tables looks"
        assert all(sparse_tables.is_sparse(s) for s in sets)
        sizes = [sys.getsizeof(s) for s in sets]
        assert sparse_tables.shrink_trio_task_sets(nursery) == 3
        again = sparse_tables._trio_task_sets(nursery)
        assert all(a is b for a, b in zip(again, sets, strict=True))  # the same objects
        assert all(sys.getsizeof(s) < size / 10 for s, size in zip(sets, sizes, strict=True))
        [child] = nursery.child_tasks
        assert child.name.endswith("sleeper")
        assert sparse_tables.shrink_trio_task_sets(nursery) == 0  # nothing sparse now
        nursery.cancel_scope.cancel()  # reaches the sleeper through the rebuilt sets
    assert sleeper_cancelled == [True]


async def test_an_unchecked_trio_is_left_alone(
    small_tables: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parking, "trio_checked", lambda: False)
    async with trio.open_nursery() as nursery:
        for _ in range(5_000):
            nursery.start_soon(trio.lowlevel.checkpoint)
        await trio.testing.wait_all_tasks_blocked()
        assert sparse_tables.shrink_trio_task_sets(nursery) == 0


async def test_the_simulator_gives_back_a_storms_tables_once(
    small_tables: None, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[str] = []

    async def fire(payment_id: str) -> None:
        fired.append(payment_id)

    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10_000)
        for n in range(5_000):
            sim.schedule(f"p{n}", 60.0, fire)
        await trio.testing.wait_all_tasks_blocked()
        assert not sim.give_back_memory()  # all pending: nothing to give back
        for n in range(1, 5_000):
            sim.cancel(f"p{n}")
        await trio.testing.wait_all_tasks_blocked()  # the cancelled timers' tasks ended
        children = sparse_tables._trio_task_sets(nursery)[1]
        before = sys.getsizeof(children)
        assert sim.give_back_memory()
        assert sys.getsizeof(children) < before / 10
        assert not sim.give_back_memory()  # once
        sim.schedule("after", 1.0, fire)
        await trio.sleep(61.0)
        assert sim.pending == 0
    assert fired == ["after", "p0"]


async def test_a_sweep_after_a_storm_gives_its_memory_back(
    small_tables: None, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from tests.unit.service.test_service import intent, open_service

    trimmed: list[bool] = []

    def return_free_memory() -> bool:
        trimmed.append(True)
        return True

    monkeypatch.setattr(runtime, "return_free_memory", return_free_memory)
    async with open_service(default_scenario="timeout") as h:
        created = [
            await h.service.create_intent(intent(reservation_id=f"r{n}")) for n in range(3_000)
        ]
        await trio.testing.wait_all_tasks_blocked()
        assert await h.service.sweep() == 0
        assert trimmed == []  # nothing to give back while the storm is pending
        for c in created:
            h.simulator.cancel(c.payment.payment_intent_id)
        await trio.testing.wait_all_tasks_blocked()
        assert await h.service.sweep() == 0  # nothing dropped, but the timers' tables went
        assert trimmed == [True]
        assert await h.service.sweep() == 0
        assert trimmed == [True]


async def test_a_large_sweep_gives_its_memory_back(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from paysim import service
    from tests.unit.service.test_service import intent, open_service

    trimmed: list[int] = []
    monkeypatch.setattr(service, "_LARGE_SWEEP", 3)
    async with open_service(default_scenario="approve", retention_s=60.0) as h:
        monkeypatch.setattr(runtime, "return_free_memory", lambda: trimmed.append(len(h.store)))
        for n in range(3):
            await h.service.create_intent(intent(reservation_id=f"r{n}"))
        await trio.sleep(63.0)  # approved after the default delay, then past retention
        assert await h.service.sweep() == 3
        assert trimmed == [0]  # once, after the payments were dropped
