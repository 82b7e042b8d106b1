"""PaymentService on a mock clock: scenario timing, idempotency, processing, metrics.

Every test runs on ``autojump_clock``: the clock jumps to the next deadline as
soon as every task is blocked, so a 900 s TTL takes no real time and every
time assertion is exact. The wall clock the service stamps payments with is
the trio clock shifted to a realistic epoch.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from paysim.adapters.memory_store import MemoryStore
from paysim.adapters.recording_notifier import RecordingNotifier
from paysim.config import SimulationSettings
from paysim.domain import forced_outcomes, outcomes
from paysim.domain.models import (
    CreateIntent,
    Metadata,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
)
from paysim.domain.validation import CreateRequest, validate_create
from paysim.errors import (
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    Overloaded,
    StoreUnavailable,
)
from paysim.observability.metrics import Metrics
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import Simulator

S = PaymentStatus
EPOCH = 1_700_000_000.0
DECLINE_REASONS = {reason for reason, _, _ in outcomes.DECLINES}


def wall_clock() -> float:
    return EPOCH + trio.current_time()


@dataclass
class Harness:
    service: PaymentService
    store: MemoryStore
    notifier: RecordingNotifier
    metrics: Metrics
    simulator: Simulator
    settings: SimulationSettings

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels or {})

    def created(self, scenario: str) -> float | None:
        return self.sample("paysim_payments_created_total", {"scenario": scenario})

    def transitions(self, old: str, new: str) -> float | None:
        return self.sample(
            "paysim_payment_transitions_total", {"from_status": old, "to_status": new}
        )

    def rejected(self, reason: str) -> float | None:
        return self.sample("paysim_payments_rejected_total", {"reason": reason})

    @property
    def pending_gauge(self) -> float | None:
        return self.sample("paysim_payments_pending")


@asynccontextmanager
async def open_service(
    *, seed: int = 1, store: MemoryStore | None = None, **settings: Any
) -> AsyncIterator[Harness]:
    """A service whose simulator nursery belongs to the test; cancelled on exit."""
    sim_settings = SimulationSettings(**settings)
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        simulator = Simulator(nursery, sim_settings.max_pending_payments, metrics.pending_changed)
        store = store if store is not None else MemoryStore(sim_settings.retention_s)
        notifier = RecordingNotifier()
        service = PaymentService(
            ServiceParts(
                store=store,
                simulator=simulator,
                notifier=notifier,
                metrics=metrics,
            ),
            sim_settings,
            rng=random.Random(seed),
            wall_clock=wall_clock,
        )
        yield Harness(service, store, notifier, metrics, simulator, sim_settings)
        nursery.cancel_scope.cancel()


def intent(
    scenario: Scenario = Scenario.UNSPECIFIED,
    *,
    tags: dict[str, str] | None = None,
    metadata_scenario: Scenario = Scenario.UNSPECIFIED,
    **changes: Any,
) -> CreateIntent:
    fields: dict[str, Any] = {
        "reservation_id": "res_1",
        "user_id": "user_1",
        "amount": 50_000,
        "currency": "KRW",
        "amount_present": True,
        "method": PaymentMethod.CREDIT_CARD,
        "scenario": scenario,
        "webhook_url": "https://example.com/hook",
        "idempotency_key": "",
        "metadata": Metadata(source="test", scenario=metadata_scenario, tags=tags or {}),
        "max_delay_s": SimulationSettings().max_delay_s,
    }
    fields.update(changes)
    max_delay_s = fields.pop("max_delay_s")
    return validate_create(CreateRequest(**fields), max_delay_s=max_delay_s)


async def create(h: Harness, cmd: CreateIntent) -> Payment:
    created = await h.service.create_intent(cmd)
    assert created.replayed is False
    return created.payment


# -- scenario timing ------------------------------------------------------------

TIMING_CASES = [
    # scenario, tags, final status, seconds after creation
    (Scenario.APPROVE, {}, S.COMPLETED, 2.0),
    (Scenario.FAIL, {}, S.FAILED, 2.0),
    (Scenario.DELAY, {}, S.COMPLETED, 10.0),
    (Scenario.TIMEOUT, {}, S.EXPIRED, 900.0),
    (Scenario.APPROVE, {"delay_ms": "1500"}, S.COMPLETED, 1.5),
    (Scenario.FAIL, {"delay_ms": "250"}, S.FAILED, 0.25),
    (Scenario.DELAY, {"delay_ms": "4000"}, S.COMPLETED, 4.0),
    (Scenario.APPROVE, {"delay_ms": "600000"}, S.COMPLETED, 600.0),
    (Scenario.TIMEOUT, {"delay_ms": "1000"}, S.EXPIRED, 900.0),  # TIMEOUT ignores it
]


@pytest.mark.parametrize(
    ("scenario", "tags", "status", "delay"),
    TIMING_CASES,
    ids=[f"{s.name}-{t.get('delay_ms', 'default')}" for s, t, _, _ in TIMING_CASES],
)
async def test_scenario_resolves_at_exactly_its_delay(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    tags: dict[str, str],
    status: PaymentStatus,
    delay: float,
) -> None:
    async with open_service() as h:
        await trio.sleep(5.0)  # not at time zero: delays count from creation
        t0 = trio.current_time()
        p = await create(h, intent(scenario, tags=tags))
        assert p.status is S.PENDING
        assert p.payment_intent_id.startswith("pay_")
        assert p.client_secret.startswith(f"{p.payment_intent_id}_secret_")
        assert p.created_at == EPOCH + t0
        assert p.expires_at == p.created_at + 900.0
        assert p.result is None

        await trio.sleep_until(t0 + delay - 0.001)
        assert (await h.service.get_payment(p.payment_intent_id)).status is S.PENDING
        assert h.notifier.changes == []

        await h.notifier.wait_for(1)
        assert trio.current_time() == t0 + delay
        done = await h.service.get_payment(p.payment_intent_id)
        assert done.status is status
        assert done.updated_at == p.created_at + delay
        assert done.version == 2
        [change] = h.notifier.changes
        assert change.payment == done
        assert change.previous is S.PENDING
        assert change.at == done.updated_at
        assert change.event_id.startswith("evt_")

        result = done.result
        assert result is not None
        assert result.processed_at == done.updated_at
        if status is S.COMPLETED:
            assert result.success is True
            assert result.response_code == 0
            assert result.failure_reason == ""
        else:
            assert result.success is False
            assert result.response_code != 0
            assert result.failure_reason
        if status is S.EXPIRED:
            assert result.failure_reason == "timeout"
            assert done.payment_id == done.transaction_id == ""
            assert done.processed_at is None
            assert done.updated_at == done.expires_at
        else:
            assert done.payment_id.startswith("pmt_")
            assert done.transaction_id.startswith("txn_")
            assert done.processed_at == done.updated_at
        if status is S.FAILED:
            assert result.failure_reason in DECLINE_REASONS

        # Nothing else happens, however long we wait.
        await trio.sleep(2000.0)
        assert await h.service.get_payment(p.payment_intent_id) == done
        assert len(h.notifier.changes) == 1


async def test_timings_come_from_the_settings(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service(default_delay_s=0.75, delay_scenario_s=3.0, intent_ttl_s=60.0) as h:
        ids = {}
        for scenario in (Scenario.APPROVE, Scenario.FAIL, Scenario.DELAY, Scenario.TIMEOUT):
            ids[(await create(h, intent(scenario))).payment_intent_id] = scenario
        await h.notifier.wait_for(4)
        assert trio.current_time() == 60.0
        seen = {
            ids[c.payment.payment_intent_id]: (c.payment.status, c.at - EPOCH)
            for c in h.notifier.changes
        }
        assert seen == {
            Scenario.APPROVE: (S.COMPLETED, 0.75),
            Scenario.FAIL: (S.FAILED, 0.75),
            Scenario.DELAY: (S.COMPLETED, 3.0),
            Scenario.TIMEOUT: (S.EXPIRED, 60.0),
        }


async def test_invalid_delay_tag_is_refused_before_anything_is_created(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The command is parsed (and refused) at the edge; the service never sees it.
    async with open_service(max_delay_s=5.0) as h:
        for raw in ("abc", "-1", "5001"):
            with pytest.raises(InvalidArgument) as info:
                intent(Scenario.APPROVE, tags={"delay_ms": raw}, max_delay_s=h.settings.max_delay_s)
            assert info.value.field == "metadata.tags[delay_ms]"
        assert len(h.store) == 0
        assert h.simulator.pending == 0
        assert h.created("approve") == 0.0


# -- scenario resolution --------------------------------------------------------

RESOLUTION = [
    # request scenario, metadata.scenario, settings default, resolved
    (Scenario.FAIL, Scenario.DELAY, "timeout", Scenario.FAIL),
    (Scenario.UNSPECIFIED, Scenario.DELAY, "timeout", Scenario.DELAY),
    (Scenario.UNSPECIFIED, Scenario.UNSPECIFIED, "timeout", Scenario.TIMEOUT),
    (Scenario.UNSPECIFIED, Scenario.UNSPECIFIED, "fail", Scenario.FAIL),
    (Scenario.UNSPECIFIED, Scenario.UNSPECIFIED, "approve", Scenario.APPROVE),
    (Scenario.APPROVE, Scenario.UNSPECIFIED, "fail", Scenario.APPROVE),
]


@pytest.mark.parametrize(("requested", "from_metadata", "default", "resolved"), RESOLUTION)
async def test_scenario_resolution(
    autojump_clock: trio.testing.MockClock,
    requested: Scenario,
    from_metadata: Scenario,
    default: str,
    resolved: Scenario,
) -> None:
    expected = {
        Scenario.APPROVE: (S.COMPLETED, 2.0),
        Scenario.FAIL: (S.FAILED, 2.0),
        Scenario.DELAY: (S.COMPLETED, 10.0),
        Scenario.TIMEOUT: (S.EXPIRED, 900.0),
    }[resolved]
    async with open_service(default_scenario=default) as h:
        p = await create(h, intent(requested, metadata_scenario=from_metadata))
        assert p.scenario is resolved
        assert h.created(resolved.name.lower()) == 1.0
        await h.notifier.wait_for(1)
        assert (h.notifier.changes[0].payment.status, trio.current_time()) == expected


# -- idempotency ----------------------------------------------------------------


async def test_same_key_same_params_replays_and_starts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        first = await create(h, intent(Scenario.APPROVE, idempotency_key="k1"))
        await trio.sleep(1.0)
        again = await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert again.replayed is True
        assert again.payment == first
        assert h.simulator.pending == 1
        assert len(h.store) == 1
        assert h.created("approve") == 1.0

        await trio.sleep(100.0)
        assert len(h.notifier.for_payment(first.payment_intent_id)) == 1
        assert len(h.notifier.changes) == 1
        # A replay after resolution answers with the payment as it is now.
        later = await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert later.replayed is True
        assert later.payment.payment_intent_id == first.payment_intent_id
        assert later.payment.status is S.COMPLETED
        assert len(h.notifier.changes) == 1
        assert h.simulator.pending == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 50_001},
        {"currency": "USD"},
        {"reservation_id": "res_2"},
        {"scenario": Scenario.FAIL},
        {"method": PaymentMethod.BANK_TRANSFER},
        {"webhook_url": "https://example.com/other"},
        {"tags": {"delay_ms": "100"}},
        {"metadata_scenario": Scenario.DELAY},
    ],
)
async def test_same_key_different_params_is_a_conflict(
    autojump_clock: trio.testing.MockClock, changes: dict[str, Any]
) -> None:
    async with open_service() as h:
        first = await create(h, intent(Scenario.APPROVE, idempotency_key="k1"))
        args: dict[str, Any] = {"scenario": Scenario.APPROVE, "idempotency_key": "k1", **changes}
        scenario = args.pop("scenario")
        with pytest.raises(IdempotencyConflict) as info:
            await h.service.create_intent(intent(scenario, **args))
        assert "conflict" in str(info.value)
        assert h.rejected("idempotency_conflict") == 1.0
        assert len(h.store) == 1
        assert h.simulator.pending == 1
        # The original is untouched and still resolves on time.
        await h.notifier.wait_for(1)
        assert trio.current_time() == 2.0
        assert h.notifier.changes[0].payment.payment_intent_id == first.payment_intent_id


async def test_same_key_for_another_user_is_independent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        a = await create(h, intent(Scenario.APPROVE, idempotency_key="k1", user_id="alice"))
        b = await create(h, intent(Scenario.APPROVE, idempotency_key="k1", user_id="bob"))
        assert a.payment_intent_id != b.payment_intent_id
        # ...even with different parameters: keys are per user.
        c = await create(h, intent(Scenario.FAIL, idempotency_key="k1", user_id="carol", amount=1))
        assert h.simulator.pending == 3
        await h.notifier.wait_for(3)
        statuses = {ch.payment.payment_intent_id: ch.payment.status for ch in h.notifier.changes}
        assert statuses == {
            a.payment_intent_id: S.COMPLETED,
            b.payment_intent_id: S.COMPLETED,
            c.payment_intent_id: S.FAILED,
        }


async def test_without_a_key_every_request_is_new(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service() as h:
        a = await create(h, intent(Scenario.APPROVE))
        b = await create(h, intent(Scenario.APPROVE))
        assert a.payment_intent_id != b.payment_intent_id
        assert h.simulator.pending == 2


async def test_keys_are_kept_for_the_idempotency_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        ttl = h.settings.idempotency_ttl_s
        assert ttl >= 24 * 3600
        first = await create(h, intent(Scenario.APPROVE, idempotency_key="k1"))
        await trio.sleep(ttl - 1.0)
        replay = await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert replay.replayed is True
        assert replay.payment.payment_intent_id == first.payment_intent_id
        await trio.sleep(2.0)
        fresh = await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert fresh.replayed is False
        assert fresh.payment.payment_intent_id != first.payment_intent_id


# -- ProcessPayment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "status"),
    [(Scenario.APPROVE, S.COMPLETED), (Scenario.FAIL, S.FAILED), (Scenario.DELAY, S.COMPLETED)],
)
async def test_process_resolves_a_pending_payment_at_once(
    autojump_clock: trio.testing.MockClock, scenario: Scenario, status: PaymentStatus
) -> None:
    async with open_service() as h:
        p = await create(h, intent(scenario))
        await trio.sleep(0.5)
        done = await h.service.process_payment(p.payment_intent_id)
        assert trio.current_time() == 0.5
        assert done.status is status
        assert done.payment_id.startswith("pmt_")
        assert done.transaction_id.startswith("txn_")
        assert done.processed_at == done.updated_at == EPOCH + 0.5
        assert done.result is not None
        assert done.result.success is (status is S.COMPLETED)
        assert done == await h.service.get_payment(p.payment_intent_id)
        assert not h.simulator.is_scheduled(p.payment_intent_id)
        assert h.simulator.pending == 0
        assert h.pending_gauge == 0.0

        await trio.sleep(1000.0)  # long past the original deadline: the timer is gone
        [change] = h.notifier.for_payment(p.payment_intent_id)
        assert change.payment == done
        assert await h.service.get_payment(p.payment_intent_id) == done


async def test_process_on_a_resolved_payment_returns_it_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(seed=5) as h:
        payments = [await create(h, intent(Scenario.RANDOM)) for _ in range(30)]
        first = {
            p.payment_intent_id: await h.service.process_payment(p.payment_intent_id)
            for p in payments
        }
        assert {p.status for p in first.values()} == {S.COMPLETED, S.FAILED}  # both drawn
        for _ in range(5):
            await trio.sleep(1.0)
            for pid, done in first.items():
                assert await h.service.process_payment(pid) == done
                assert await h.service.get_payment(pid) == done
        for pid, done in first.items():
            assert done.status is done.outcome.status  # the pre-decided outcome
            assert len(h.notifier.for_payment(pid)) == 1


async def test_process_after_the_timer_fired_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        p = await create(h, intent(Scenario.FAIL))
        await h.notifier.wait_for(1)
        fired = await h.service.get_payment(p.payment_intent_id)
        assert await h.service.process_payment(p.payment_intent_id) == fired
        assert len(h.notifier.changes) == 1
        assert h.transitions("PENDING", "FAILED") == 1.0


async def test_process_on_timeout_goes_processing_then_expires_at_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        p = await create(h, intent(Scenario.TIMEOUT))
        await trio.sleep(3.0)
        processing = await h.service.process_payment(p.payment_intent_id)
        assert processing.status is S.PROCESSING
        assert processing.updated_at == EPOCH + 3.0
        assert processing.payment_id == processing.transaction_id == ""
        assert h.simulator.is_scheduled(p.payment_intent_id)  # the TTL timer still runs
        # Processing again changes nothing.
        assert await h.service.process_payment(p.payment_intent_id) == processing
        assert len(h.notifier.changes) == 1

        await trio.sleep_until(900.0 - 0.001)
        assert (await h.service.get_payment(p.payment_intent_id)).status is S.PROCESSING

        await h.notifier.wait_for(2)
        assert trio.current_time() == 900.0
        first, second = h.notifier.changes
        assert (first.previous, first.payment.status) == (S.PENDING, S.PROCESSING)
        assert (second.previous, second.payment.status) == (S.PROCESSING, S.EXPIRED)
        expired = await h.service.get_payment(p.payment_intent_id)
        assert expired.status is S.EXPIRED
        assert expired.updated_at == expired.expires_at
        assert expired.result is not None
        assert expired.result.failure_reason == "timeout"
        assert h.transitions("PENDING", "PROCESSING") == 1.0
        assert h.transitions("PROCESSING", "EXPIRED") == 1.0


async def test_process_checks_the_method(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service() as h:
        card = await create(h, intent(Scenario.APPROVE, method=PaymentMethod.CREDIT_CARD))
        with pytest.raises(InvalidArgument) as info:
            await h.service.process_payment(card.payment_intent_id, PaymentMethod.MOBILE_PAY)
        assert info.value.field == "payment_details.method"
        assert (await h.service.get_payment(card.payment_intent_id)).status is S.PENDING
        assert h.simulator.is_scheduled(card.payment_intent_id)
        done = await h.service.process_payment(card.payment_intent_id, PaymentMethod.CREDIT_CARD)
        assert done.status is S.COMPLETED

        open_method = await create(h, intent(Scenario.APPROVE, method=PaymentMethod.UNSPECIFIED))
        done = await h.service.process_payment(
            open_method.payment_intent_id, PaymentMethod.BANK_TRANSFER
        )
        assert done.method is PaymentMethod.BANK_TRANSFER


async def test_process_unknown_payment_is_not_found(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service() as h:
        with pytest.raises(NotFound, match="not found"):
            await h.service.process_payment("pay_nope")


# -- GetPaymentStatus -----------------------------------------------------------


async def test_get_payment_and_its_owner(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service() as h:
        p = await create(h, intent(Scenario.APPROVE, user_id="alice"))
        assert await h.service.get_payment(p.payment_intent_id) == p  # empty user_id allowed
        assert await h.service.get_payment(p.payment_intent_id, "") == p
        assert await h.service.get_payment(p.payment_intent_id, "alice") == p

        with pytest.raises(NotFound) as unknown:
            await h.service.get_payment("pay_000000000000000000000000")
        assert "not found" in str(unknown.value)

        with pytest.raises(NotFound) as not_yours:
            await h.service.get_payment(p.payment_intent_id, "mallory")
        assert "not found" in str(not_yours.value)
        # The same answer as for a payment that does not exist.
        assert str(not_yours.value) == str(unknown.value).replace(
            "pay_000000000000000000000000", p.payment_intent_id
        )


# -- capacity -------------------------------------------------------------------


async def test_max_pending_turns_into_overloaded(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service(max_pending_payments=2) as h:
        await create(h, intent(Scenario.APPROVE))
        await create(h, intent(Scenario.DELAY))
        with pytest.raises(Overloaded):
            await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert h.rejected("overload") == 1.0
        assert len(h.store) == 2
        assert h.created("approve") == 1.0
        with pytest.raises(Overloaded):
            await h.service.create_intent(intent(Scenario.APPROVE))
        assert h.rejected("overload") == 2.0

        await h.notifier.wait_for(1)  # the APPROVE one resolves and frees its slot
        assert trio.current_time() == 2.0
        # The refused key was released: the retry creates, it does not replay.
        retry = await h.service.create_intent(intent(Scenario.APPROVE, idempotency_key="k1"))
        assert retry.replayed is False
        assert retry.payment.status is S.PENDING
        assert len(h.store) == 3


class CheckpointingStore(MemoryStore):
    """A store that yields on insert, as a networked one (Redis) does."""

    async def insert(self, payment: Payment) -> None:
        await trio.lowlevel.checkpoint()
        await super().insert(payment)


class LostAnswerStore(MemoryStore):
    """Runs the first insert, then fails it as a store whose answer was lost does."""

    lost = False

    async def insert(self, payment: Payment) -> None:
        await super().insert(payment)
        if not self.lost:
            self.lost = True
            raise StoreUnavailable()


async def test_a_retry_after_an_insert_whose_answer_was_lost_gets_that_payment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_service(store=LostAnswerStore()) as h:
        with pytest.raises(StoreUnavailable):
            await h.service.create_intent(intent(idempotency_key="k1"))
        assert len(h.store) == 1  # it ran
        retry = await h.service.create_intent(intent(idempotency_key="k1"))
        assert retry.replayed is True
        assert len(h.store) == 1  # no twin


def test_concurrent_creates_at_the_cap_leave_no_orphan() -> None:
    # A sync test around trio.run with a MockClock, so a failure surfaces as a
    # plain AssertionError rather than one wrapped in pytest-trio's ExceptionGroup.
    results: list[object] = []

    async def main() -> Harness:
        async with open_service(max_pending_payments=1, store=CheckpointingStore()) as h:

            async def attempt(key: str) -> None:
                try:
                    results.append(await h.service.create_intent(intent(idempotency_key=key)))
                except Overloaded as exc:
                    results.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attempt, "k1")
                nursery.start_soon(attempt, "k2")
        return h

    h = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sum(isinstance(r, Overloaded) for r in results) == 1
    assert len(h.store) == 1  # the refused request left nothing behind
    assert h.rejected("overload") == 1.0


# -- metrics --------------------------------------------------------------------


async def test_metrics_follow_the_payments(autojump_clock: trio.testing.MockClock) -> None:
    async with open_service() as h:
        assert h.pending_gauge == 0.0
        for scenario in (Scenario.APPROVE, Scenario.APPROVE, Scenario.FAIL, Scenario.TIMEOUT):
            await create(h, intent(scenario))
        to_process = await create(h, intent(Scenario.DELAY))
        assert {s: h.created(s) for s in ("approve", "fail", "delay", "random", "timeout")} == {
            "approve": 2.0,
            "fail": 1.0,
            "delay": 1.0,
            "random": 0.0,
            "timeout": 1.0,
        }
        assert h.pending_gauge == 5.0

        await h.service.process_payment(to_process.payment_intent_id)
        assert h.pending_gauge == 4.0

        await h.notifier.wait_for(4)
        assert trio.current_time() == 2.0
        assert h.pending_gauge == 1.0  # the TIMEOUT one waits for its TTL
        assert h.transitions("PENDING", "COMPLETED") == 3.0
        assert h.transitions("PENDING", "FAILED") == 1.0
        assert h.transitions("PENDING", "EXPIRED") == 0.0  # there from the start

        await h.notifier.wait_for(5)
        assert trio.current_time() == 900.0
        assert h.transitions("PENDING", "EXPIRED") == 1.0
        assert h.pending_gauge == 0.0
        assert h.simulator.pending == 0


# -- seeded randomness ----------------------------------------------------------


async def random_run(seed: int, n: int = 200) -> list[tuple[PaymentStatus, str, int]]:
    async with open_service(seed=seed) as h:
        t0 = trio.current_time()
        ids = [(await create(h, intent(Scenario.RANDOM))).payment_intent_id for _ in range(n)]
        await h.notifier.wait_for(n)
        assert trio.current_time() == t0 + 2.0
        out = []
        for pid in ids:
            p = await h.service.get_payment(pid)
            assert p.result is not None
            out.append((p.status, p.result.failure_reason, p.result.response_code))
        return out


async def test_same_seed_same_outcomes(autojump_clock: trio.testing.MockClock) -> None:
    first = await random_run(seed=1234)
    second = await random_run(seed=1234)
    assert first == second
    statuses = [status for status, _, _ in first]
    assert set(statuses) == {S.COMPLETED, S.FAILED}
    # A different seed tells a different story (so the comparison above means something).
    assert await random_run(seed=4321) != first


async def test_settings_seed_is_used_when_no_rng_is_given(
    autojump_clock: trio.testing.MockClock,
) -> None:
    settings = SimulationSettings(seed=99)
    runs = []
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            metrics = Metrics()
            notifier = RecordingNotifier()
            service = PaymentService(
                ServiceParts(
                    store=MemoryStore(),
                    simulator=Simulator(nursery, 1000, metrics.pending_changed),
                    notifier=notifier,
                    metrics=metrics,
                ),
                settings,
            )
            ids = [
                (await service.create_intent(intent(Scenario.RANDOM))).payment.payment_intent_id
                for _ in range(50)
            ]
            await notifier.wait_for(50)
            runs.append([(await service.get_payment(pid)).status for pid in ids])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {S.COMPLETED, S.FAILED}


def test_harness_settings_are_the_contract_defaults() -> None:
    # The timing cases above assume these values.
    s = SimulationSettings()
    assert (s.default_delay_s, s.delay_scenario_s, s.intent_ttl_s) == (2.0, 10.0, 900.0)
    assert s.max_delay_s == 600.0


async def test_a_forced_pg_timeout_waits_for_the_expiry_not_the_decided_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ProcessPayment with a PG-timeout card on an APPROVE intent: its timer, armed
    for the 2 s approval, finds the payment PROCESSING and waits on to the expiry."""
    async with open_service() as h:
        p = await create(h, intent(Scenario.APPROVE))
        await trio.sleep(1.0)
        processing = await h.service.process_payment(
            p.payment_intent_id, forced=forced_outcomes.CARDS["4000000000000408"]
        )
        assert processing.status is S.PROCESSING
        await trio.sleep_until(900.0 - 0.001)  # long past the 2 s the timer was armed for
        assert (await h.service.get_payment(p.payment_intent_id)).status is S.PROCESSING
        await h.notifier.wait_for(2)
        assert trio.current_time() == 900.0
        expired = await h.service.get_payment(p.payment_intent_id)
        assert expired.status is S.EXPIRED
        assert expired.updated_at == expired.expires_at
        assert h.transitions("PROCESSING", "EXPIRED") == 1.0
