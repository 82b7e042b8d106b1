"""``paysim.parking``: a task parked on a ``ParkingSpot`` behaves as under
``trio.lowlevel.wait_task_rescheduled``, on the small path (trio's private trap
message) and on the public fallback alike; and the small path is in use and small.

If trio changes its trap protocol, these fail: the behaviour tests run the
small path against the real run loop, and ``test_the_small_path_is_in_use``
names the trio releases it was checked against.
"""

from __future__ import annotations

import gc
import tracemalloc

import outcome
import pytest
import trio
import trio.testing

from paysim import parking
from paysim.parking import ParkingSpot


class Spot(ParkingSpot):
    __slots__ = ("aborts", "answer", "task")

    def __init__(self, answer: trio.lowlevel.Abort = trio.lowlevel.Abort.SUCCEEDED) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.answer = answer
        self.aborts = 0

    def __call__(self, raise_cancel: object) -> trio.lowlevel.Abort:
        assert callable(raise_cancel)
        self.aborts += 1
        return self.answer


@pytest.fixture(params=["small", "public"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "public":
        monkeypatch.setattr(parking, "_trap", None)
    return str(request.param)


async def park(spot: Spot, results: list[object]) -> None:
    spot.task = trio.lowlevel.current_task()
    try:
        results.append(await spot)
    except trio.Cancelled:
        results.append("cancelled")
        raise
    except KeyError as exc:
        results.append(exc)
    assert not trio.lowlevel.currently_ki_protected()


async def test_reschedule_with_a_value_resumes_the_task_with_it(path: str) -> None:
    spot, results = Spot(), list[object]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park, spot, results)
        await trio.testing.wait_all_tasks_blocked()
        assert results == []  # parked, not polled again
        assert spot.task is not None
        trio.lowlevel.reschedule(spot.task, outcome.Value(42))
    assert results == [42]
    assert spot.aborts == 0


async def test_reschedule_with_an_error_raises_it_in_the_task(path: str) -> None:
    spot, results = Spot(), list[object]()
    error = KeyError("gone")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park, spot, results)
        await trio.testing.wait_all_tasks_blocked()
        assert spot.task is not None
        trio.lowlevel.reschedule(spot.task, outcome.Error(error))
    assert results == [error]


async def test_cancellation_calls_the_spot_as_abort_function(path: str) -> None:
    spot, results = Spot(), list[object]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park, spot, results)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert results == ["cancelled"]
    assert spot.aborts == 1


async def test_a_refused_abort_keeps_the_task_parked_until_rescheduled(path: str) -> None:
    spot, results = Spot(answer=trio.lowlevel.Abort.FAILED), list[object]()
    scope = trio.CancelScope()

    async def park_in_scope() -> None:
        with scope:
            await park(spot, results)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(park_in_scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert spot.aborts == 1
        assert results == []  # still parked: cancellation was refused
        assert spot.task is not None
        trio.lowlevel.reschedule(spot.task, outcome.Value("late"))
    assert results == ["late"]


async def test_a_spot_parks_again_after_it_was_resumed(path: str) -> None:
    spot, results = Spot(), list[object]()

    async def twice() -> None:
        await park(spot, results)
        await park(spot, results)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(twice)
        for value in ("one", "two"):
            await trio.testing.wait_all_tasks_blocked()
            assert spot.task is not None
            trio.lowlevel.reschedule(spot.task, outcome.Value(value))
    assert results == ["one", "two"]


def test_the_small_path_is_in_use() -> None:
    """On a trio not in TESTED_TRIO the public fallback is used: check the protocol
    (this file) on the new release, then widen the range."""
    assert parking.trio_checked(), f"trio {trio.__version__} is outside parking.TESTED_TRIO"
    assert parking._trap is not None


async def test_a_parked_task_awaits_the_spot_itself() -> None:
    """Small path: no coroutine or generator between the task's coroutine and the spot."""
    spot, results = Spot(), list[object]()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(park, spot, results)
        await trio.testing.wait_all_tasks_blocked()
        assert spot.task is not None
        assert spot.task.coro.cr_await is spot
        trio.lowlevel.reschedule(spot.task, outcome.Value(None))


async def parked_bytes(count: int) -> float:
    """Traced bytes per parked task (task, coroutine, spot included)."""
    spots = [Spot() for _ in range(count)]
    async with trio.open_nursery() as nursery:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for spot in spots:
                nursery.start_soon(park, spot, [])
            await trio.testing.wait_all_tasks_blocked()
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return used / count


async def test_the_small_path_keeps_400_bytes_less_per_parked_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = await parked_bytes(2000)
    monkeypatch.setattr(parking, "_trap", None)
    public = await parked_bytes(2000)
    assert public - small > 400, (small, public)
