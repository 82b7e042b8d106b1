"""The fault policy in process: 10,000 seeded decisions, latency percentiles on a MockClock."""

from __future__ import annotations

import collections
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from paysim.faults.ledger import Ledger
from paysim.faults.metrics import FaultMetrics
from paysim.faults.plan import PAYMENT_SERVICE, FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy, InjectedFault

N = 10_000


@dataclass
class Event:
    custom_metadata: tuple[tuple[str, str], ...] = ()


@dataclass
class Message:
    payment_intent_id: str = "pay_1"


async def work(message: Any, *, request: Any) -> Message:
    """A handler's shape: the message, and the call's event as ``request``."""
    return Message(message.payment_intent_id)


def policy(plan: dict[str, Any], seed: int = 1) -> FaultPolicy:
    metrics = FaultMetrics(CollectorRegistry())
    return FaultPolicy(FaultPlan.from_dict(plan), seed, metrics, Ledger())


async def outcomes(p: FaultPolicy, rpc: str = "ProcessPayment") -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for i in range(N):
        try:
            await p.around(PAYMENT_SERVICE, rpc, work, Message(f"pay_{i}"), Event())
            seen["ok"] += 1
        except InjectedFault as fault:
            seen["reset" if fault.reset else fault.code] += 1
    return seen


def within(count: int, p: float, n: int = N) -> bool:
    """Within 5 standard deviations of the binomial expectation."""
    return abs(count - n * p) < 5 * math.sqrt(n * p * (1 - p))


async def test_rates_and_codes_match_the_plan_over_10000_calls():
    rule = {
        "error_rate": 0.1,
        "error_codes": {"unavailable": 2, "resource_exhausted": 1, "internal": 1},
        "lost_answer_rate": 0.05,
        "lost_answer_mode": "reset",
    }
    p = policy({"rpcs": {"*": rule}})
    seen = await outcomes(p)
    assert within(seen["unavailable"], 0.05)
    assert within(seen["resource_exhausted"], 0.025)
    assert within(seen["internal"], 0.025)
    assert within(seen["reset"], 0.05)
    assert p.ledger.lost_answers == seen["reset"]  # each lost capture recorded once


async def test_the_same_seed_makes_the_same_decisions():
    plan = {"rpcs": {"*": {"error_rate": 0.3, "lost_answer_rate": 0.2}}}
    assert await outcomes(policy(plan, seed=5)) == await outcomes(policy(plan, seed=5))
    assert await outcomes(policy(plan, seed=5)) != await outcomes(policy(plan, seed=6))


async def test_an_rpc_without_a_rule_and_other_services_are_untouched():
    p = policy({"rpcs": {"CancelPayment": {"error_rate": 1.0}}})
    assert (await outcomes(p, "ProcessPayment"))["ok"] == N
    health = await p.around("grpc.health.v1.Health", "Check", work, Message(), Event())
    assert health == Message()


async def _latencies(p: FaultPolicy) -> list[float]:
    out = []
    for _ in range(N):
        start = trio.current_time()
        await p.around(PAYMENT_SERVICE, "GetPaymentStatus", work, Message(), Event())
        out.append(trio.current_time() - start)
    return out


async def test_lognormal_latency_has_the_configured_p50_and_p99(autojump_clock):
    latency = {"distribution": "lognormal", "p50_ms": 100, "p99_ms": 2000}
    got = await _latencies(policy({"rpcs": {"*": {"latency": latency}}}))
    cuts = statistics.quantiles(got, n=100)
    assert cuts[49] == pytest.approx(0.100, rel=0.05)
    assert cuts[98] == pytest.approx(2.000, rel=0.15)


async def test_uniform_and_fixed_latency(autojump_clock):
    uniform = {"distribution": "uniform", "min_ms": 50, "max_ms": 150}
    got = await _latencies(policy({"rpcs": {"*": {"latency": uniform}}}))
    assert min(got) >= 0.05
    assert max(got) <= 0.15
    assert statistics.median(got) == pytest.approx(0.1, rel=0.05)
    fixed = {"distribution": "fixed", "ms": 250}
    got = await _latencies(policy({"rpcs": {"*": {"latency": fixed}}}))
    assert got == pytest.approx([0.25] * N)


async def test_latency_after_the_work_cut_by_the_deadline_is_a_lost_answer(autojump_clock):
    latency = {"distribution": "fixed", "ms": 5000, "when": "after"}
    p = policy({"rpcs": {"*": {"latency": latency}}})
    with trio.move_on_after(1):
        await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message("pay_x"), Event())
    assert p.ledger.report()["lost_answers"]["by_rpc"] == {
        "ProcessPayment": {"lost": 1, "recovered": 0}
    }


async def test_a_header_overrides_the_plan_for_one_call(autojump_clock):
    p = policy({"rpcs": {"*": {"error_rate": 1.0}}})
    start = trio.current_time()
    header = Event((("x-paysim-fault", "latency=300"),))
    await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message(), header)
    assert trio.current_time() - start == pytest.approx(0.3)
    with pytest.raises(InjectedFault) as info:
        await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message(), Event())
    assert info.value.code == "unavailable"


@pytest.mark.parametrize(
    "plan",
    [
        {"rpcs": {"Charge": {}}},
        {"rpcs": {"*": {"error_rate": 1.5}}},
        {"rpcs": {"*": {"error_rate": 0.6, "lost_answer_rate": 0.6}}},
        {"rpcs": {"*": {"error_codes": {"not_found": 1}}}},
        {"rpcs": {"*": {"latency": {"distribution": "lognormal", "p50_ms": 200, "p99_ms": 100}}}},
        {"rpcs": {"*": {"latency": {"distribution": "fixed"}}}},
        {"rpcs": {"*": {"lost_answer_mode": "explode"}}},
        {"rpcs": {"*": {"surprise": 1}}},
        [],
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(plan):
    with pytest.raises(PlanError):
        FaultPlan.from_dict(plan)


def test_a_plan_round_trips_through_its_dict():
    plan = {
        "rpcs": {
            "ProcessPayment": {
                "latency": {"distribution": "uniform", "min_ms": 5, "max_ms": 9, "when": "after"},
                "error_rate": 0.1,
                "error_codes": {"internal": 1.0},
                "retry_after_ms": 250,
                "lost_answer_rate": 0.2,
                "lost_answer_mode": "reset",
                "slow_drip_rate": 0.3,
                "slow_drip_chunk_bytes": 4,
                "slow_drip_interval_ms": 20,
            }
        },
        "webhooks": {"lag": {"distribution": "lognormal", "p50_ms": 1000, "p99_ms": 30000}},
    }
    parsed = FaultPlan.from_dict(plan)
    assert FaultPlan.from_dict(parsed.to_dict()) == parsed
    assert parsed.to_dict() == plan
