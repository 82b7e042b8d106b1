"""Each loop that needs the store backs off and retries ``StoreUnavailable``.

Fake stores, the mock clock (``autojump_clock``): exact times. The jitter is
fixed by an RNG whose ``uniform`` returns its upper bound, so every wait is the
schedule's ceiling: 50 ms, 100 ms, 200 ms, ... capped at 2 s.
"""

from __future__ import annotations

import random
from typing import Any

import coredis.exceptions
import pytest
import trio
import trio.testing

from paysim.adapters.redis_batch import OpBatcher, classify
from paysim.backoff import Backoff
from paysim.errors import StoreUnavailable
from paysim.observability.health import Readiness
from paysim.ports import Maintenance
from paysim.replica import Replica
from paysim.simulator import Simulator
from paysim.upkeep import run_sweeper


class Ceiling(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def ceiling_backoff() -> Backoff:
    return Backoff(rng=Ceiling())


class Flaky:
    """Fails ``failures`` times with ``StoreUnavailable``, then succeeds; records each call."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []

    def __call__(self) -> None:
        self.calls.append(trio.current_time())
        if len(self.calls) <= self.failures:
            raise StoreUnavailable()


# -- the retention sweeper --------------------------------------------------------


class SweepingService:
    def __init__(self, flaky: Flaky) -> None:
        self.flaky = flaky

    async def sweep(self) -> int:
        self.flaky()
        return 0


async def test_the_sweeper_retries_with_backoff_and_returns_to_its_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(failures=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_sweeper, SweepingService(flaky), 1.0, ceiling_backoff())
        await trio.sleep(3.5)
        nursery.cancel_scope.cancel()
    # 1 s, then 50, 100, 200 ms of backoff; then the interval again.
    assert flaky.calls == pytest.approx([1.0, 1.05, 1.15, 1.35, 2.35, 3.35])


# -- lease renewal and takeover ---------------------------------------------------


class MaintainingStore:
    replica_id = "r"

    def __init__(self, flaky: Flaky) -> None:
        self.flaky = flaky

    async def maintain(self, now: float) -> Maintenance:
        self.flaky()
        return Maintenance(lapsed=False, claimed=[], changes=[], overdue_own=[])


async def test_lease_renewal_retries_with_backoff_not_at_the_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(failures=2)
    async with trio.open_nursery() as nursery:
        replica = Replica(
            MaintainingStore(flaky),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            10.0,
        )
        await nursery.start(
            lambda task_status: replica.run(backoff=ceiling_backoff(), task_status=task_status)
        )
        await trio.sleep(15)
        nursery.cancel_scope.cancel()
    assert flaky.calls == pytest.approx([0.0, 0.05, 0.15, 10.15])


# -- a payment's outcome timer ----------------------------------------------------


async def test_a_timer_whose_fire_meets_an_outage_fires_again_until_it_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(failures=2)

    async def fire(payment_id: str) -> None:
        flaky()

    async with trio.open_nursery() as nursery:
        simulator = Simulator(nursery, 10, backoff=ceiling_backoff)
        simulator.schedule("pay_1", 1.0, fire)
        await trio.sleep(1.01)
        assert simulator.retrying == 1
        assert simulator.is_scheduled("pay_1")  # a takeover must not arm a second timer
        assert simulator.pending_ids() == ["pay_1"]  # still owed
        await simulator.wait_idle()
    assert flaky.calls == pytest.approx([1.0, 1.05, 1.15])
    assert not simulator.is_scheduled("pay_1")


async def test_cancel_ends_a_retrying_fire(autojump_clock: trio.testing.MockClock) -> None:
    flaky = Flaky(failures=100)

    async def fire(payment_id: str) -> None:
        flaky()

    async with trio.open_nursery() as nursery:
        simulator = Simulator(nursery, 10, backoff=ceiling_backoff)
        simulator.schedule("pay_1", 1.0, fire)
        await trio.sleep(1.01)
        assert simulator.cancel("pay_1")
        await simulator.wait_idle()
    assert flaky.calls == [1.0]


# -- the batch sender -------------------------------------------------------------


class FakeScript:
    """The ops script: each op answers "ok"; raises while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[tuple[float, int]] = []  # (time, ops) of each batch it ran

    async def __call__(self, keys: list[Any], args: list[Any]) -> bytes:
        await trio.sleep(0.001)
        if self.down:
            raise coredis.exceptions.ConnectionError("Connection refused")
        import msgpack

        ops = msgpack.unpackb(args[-1], raw=False)
        self.batches.append((trio.current_time(), len(ops)))
        packed: bytes = msgpack.packb(["ok"] * len(ops))  # the ops script's reply
        return packed


async def test_the_sender_fails_fast_while_down_probes_with_backoff_and_keeps_posted_ops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = FakeScript()
    batcher = OpBatcher(script, ("{p}", "r"), 1.0, ceiling_backoff())
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        assert await batcher.call("G", "x") == b"ok"
        script.down = True
        try:
            await batcher.call("G", "x")
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("expected StoreUnavailable")
        assert not batcher.available.value
        down_at = trio.current_time()
        # While down: at once, without reaching the script.
        try:
            await batcher.call("G", "x")
        except StoreUnavailable:
            assert trio.current_time() == down_at
        batcher.post(lambda: ("D", ["evt_1"]))
        await trio.sleep(1.0)
        script.down = False
        await batcher.available.wait_value(True)
        assert await batcher.call("G", "x") == b"ok"
        nursery.cancel_scope.cancel()
    # The first batch after the outage carried the posted op, kept through it.
    assert script.batches[1][1] == 1
    assert script.batches[1][0] > down_at + 1.0


def test_every_client_error_means_unreachable_and_groups_are_looked_into() -> None:
    for exc in (
        coredis.exceptions.ConnectionError("x"),
        coredis.exceptions.BusyLoadingError("x"),
        ConnectionResetError(),
        TimeoutError(),
        OSError(),
        trio.TooSlowError(),
        ExceptionGroup("g", [ConnectionRefusedError(), coredis.exceptions.ConnectionError("x")]),
    ):
        assert classify(exc), exc
    assert not classify(ValueError())
    assert not classify(ExceptionGroup("g", [ConnectionRefusedError(), ValueError()]))


# -- readiness ----------------------------------------------------------------------


async def test_readiness_follows_the_store() -> None:
    readiness = Readiness()
    readiness.mark_serving()
    assert readiness.is_ready
    async with trio.open_nursery() as nursery:
        woken: list[bool] = []

        async def watch() -> None:
            await readiness.wait_changed()
            woken.append(readiness.is_ready)

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        readiness.mark_store(False)
    assert woken == [False]
    readiness.mark_store(True)
    assert readiness.is_ready
    readiness.mark_draining()
    readiness.mark_store(True)
    assert not readiness.is_ready
