"""The simulator: one timer task per pending payment, exact deadlines, a cap."""

from __future__ import annotations

import pytest
import structlog
import trio
import trio.testing

from paysim.errors import Overloaded
from paysim.simulator import Simulator


class Recorder:
    """A ``fire`` callback that remembers who fired, and when."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, float]] = []

    async def __call__(self, payment_id: str) -> None:
        self.fired.append((payment_id, trio.current_time()))


class Deltas:
    """An ``on_pending_change`` callback that keeps every delta."""

    def __init__(self) -> None:
        self.deltas: list[int] = []

    def __call__(self, delta: int) -> None:
        self.deltas.append(delta)

    @property
    def total(self) -> int:
        return sum(self.deltas)


async def test_fires_at_exactly_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        sim.schedule("a", 2.0, fire)
        sim.schedule("b", 0.5, fire)
        sim.schedule("c", 10.0, fire)
        assert sim.pending == 3
        assert sim.is_scheduled("a")

        await trio.sleep_until(1.999)
        assert fire.fired == [("b", 0.5)]
        assert sim.is_scheduled("a")
        assert not sim.is_scheduled("b")
        assert sim.pending == 2
    # The nursery closes when the last timer has fired.
    assert fire.fired == [("b", 0.5), ("a", 2.0), ("c", 10.0)]
    assert trio.current_time() == 10.0
    assert sim.pending == 0


async def test_delay_counts_from_the_moment_of_scheduling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        await trio.sleep(3.0)
        sim.schedule("a", 2.0, fire)
        sim.schedule("now", 0.0, fire)
    assert fire.fired == [("now", 3.0), ("a", 5.0)]


async def test_timers_due_within_a_tick_fire_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The clock sleeps a millisecond at least between wakes: "b", due 0.2 ms
    # after "a", waits for the next tick instead of a wake of its own; a timer
    # due at once still fires at once, within the tick (and the tick counts from
    # that wake); "c" keeps its time.
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        sim.schedule("a", 1.0, fire)
        sim.schedule("b", 1.0002, fire)
        sim.schedule("c", 1.5, fire)
        await trio.sleep(1.0)
        await trio.sleep(0.0001)
        sim.schedule("now", 0.0, fire)
    assert [name for name, _ in fire.fired] == ["a", "now", "b", "c"]
    assert [at for _, at in fire.fired] == pytest.approx([1.0, 1.0001, 1.0011, 1.5])


async def test_cancel_prevents_firing(autojump_clock: trio.testing.MockClock) -> None:
    fire = Recorder()
    deltas = Deltas()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10, on_pending_change=deltas)
        sim.schedule("a", 2.0, fire)
        sim.schedule("b", 2.0, fire)
        await trio.sleep(1.0)
        assert sim.cancel("a") is True
        assert not sim.is_scheduled("a")
        assert sim.pending == 1
        assert sim.cancel("a") is False  # already cancelled
        assert sim.cancel("never-scheduled") is False
        await trio.sleep(5.0)
        assert sim.cancel("b") is False  # already fired
    assert fire.fired == [("b", 2.0)]
    assert trio.current_time() == 6.0
    assert deltas.deltas == [1, 1, -1, -1]


async def test_cancelled_timer_task_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        sim.schedule("a", 100.0, fire)
        await trio.sleep(1.0)
        sim.cancel("a")
    # The nursery did not wait for the old deadline.
    assert trio.current_time() == 1.0
    assert fire.fired == []


async def test_cancel_racing_the_deadline_is_consistent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The test task and the timer wake in the same tick, in an order trio chooses:
    # whichever wins, cancel() returns True exactly when fire was not called.
    for _ in range(40):
        fire = Recorder()
        deltas = Deltas()
        async with trio.open_nursery() as nursery:
            sim = Simulator(nursery, max_pending=10, on_pending_change=deltas)
            start = trio.current_time()
            sim.schedule("a", 1.0, fire)
            await trio.sleep_until(start + 1.0)
            cancelled = sim.cancel("a")
        assert cancelled is (fire.fired == [])
        assert deltas.total == 0
        assert sim.pending == 0


async def test_cap_raises_overloaded_and_frees_a_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fire = Recorder()
    deltas = Deltas()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=2, on_pending_change=deltas)
        sim.schedule("a", 1.0, fire)
        sim.schedule("b", 5.0, fire)
        with pytest.raises(Overloaded, match="too many pending payments"):
            sim.check_capacity()
        with pytest.raises(Overloaded):
            sim.schedule("c", 1.0, fire)
        assert not sim.is_scheduled("c")
        assert deltas.deltas == [1, 1]  # the refused one changed nothing

        await trio.sleep(1.0)  # "a" fires and frees its slot...
        await trio.testing.wait_all_tasks_blocked()  # ...in this same tick: let it run first
        assert trio.current_time() == 1.0
        assert fire.fired == [("a", 1.0)]
        sim.schedule("c", 1.0, fire)
        with pytest.raises(Overloaded):
            sim.schedule("d", 1.0, fire)

        assert sim.cancel("b") is True  # a cancel frees a slot too
        sim.schedule("d", 1.0, fire)
        assert sim.pending == 2
    assert sorted(fire.fired) == [("a", 1.0), ("c", 2.0), ("d", 2.0)]
    assert trio.current_time() == 2.0


async def test_pending_deltas_sum_back_to_zero(autojump_clock: trio.testing.MockClock) -> None:
    fire = Recorder()
    deltas = Deltas()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=100, on_pending_change=deltas)
        for i in range(10):
            sim.schedule(f"p{i}", float(i + 1), fire)
        assert deltas.total == sim.pending == 10
        for i in range(0, 10, 3):
            sim.cancel(f"p{i}")
        assert deltas.total == sim.pending == 6
        await trio.sleep(4.5)
        assert deltas.total == sim.pending  # the gauge follows the simulator at every step
    assert set(deltas.deltas) == {1, -1}
    assert deltas.total == 0
    assert sim.pending == 0
    assert len(fire.fired) == 6


async def test_cancelling_the_owning_nursery_ends_every_timer_without_firing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=100)
        for i in range(20):
            sim.schedule(f"p{i}", 5.0 + i, fire)
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 1.0
    await trio.sleep(100.0)  # long past every deadline
    assert fire.fired == []


async def test_a_failing_fire_is_logged_and_does_not_kill_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fire = Recorder()

    async def broken(payment_id: str) -> None:
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            sim = Simulator(nursery, max_pending=10)
            sim.schedule("bad", 1.0, broken)
            sim.schedule("good", 2.0, fire)
    assert fire.fired == [("good", 2.0)]
    assert sim.pending == 0
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["payment_id"] == "bad"


async def test_an_earlier_timer_wakes_the_sleeping_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The clock sleeps until the earliest due time it knows (100 s); a timer
    # armed later for 1 s from then must still fire at 1 s, not at 100.
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        sim.schedule("late", 100.0, fire)
        await trio.sleep(5.0)  # the clock is parked, its deadline 100 s
        sim.schedule("early", 1.0, fire)
        await trio.sleep(2.0)
        assert fire.fired == [("early", 6.0)]
        sim.cancel("late")


async def test_cancelling_every_timer_ends_the_clock_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With nothing live left, the sleeping clock is woken and ends now, not at
    # the last (stale) due time: the nursery closes without waiting an hour.
    fire = Recorder()
    async with trio.open_nursery() as nursery:
        sim = Simulator(nursery, max_pending=10)
        for n in range(3):
            sim.schedule(f"p{n}", 3600.0, fire)
        await trio.sleep(1.0)
        for n in range(3):
            assert sim.cancel(f"p{n}")
    assert trio.current_time() == 1.0
    assert fire.fired == []
