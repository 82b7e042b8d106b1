"""Slow-drip answers and webhook lag: parsing, refusals naming the field, seeded draws."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from paysim.config import ConfigError, Settings
from paysim.faults.ledger import Ledger
from paysim.faults.metrics import FaultMetrics
from paysim.faults.plan import PAYMENT_SERVICE, FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy, InjectedFault, SlowDrip
from tests.unit.faults.test_policy import Event, Message, within, work

N = 10_000


def policy(plan: dict[str, Any], seed: int = 1) -> tuple[FaultPolicy, CollectorRegistry]:
    registry = CollectorRegistry()
    return FaultPolicy(FaultPlan.from_dict(plan), seed, FaultMetrics(registry), Ledger()), registry


def injected(registry: CollectorRegistry, kind: str, rpc: str) -> float:
    value = registry.get_sample_value(
        "paysim_api_faults_total", {"kind": kind, "rpc": rpc, "code": "OK"}
    )
    return value or 0.0


async def test_a_drip_rate_wraps_that_share_of_answers_after_the_work():
    rule = {"error_rate": 0.1, "lost_answer_rate": 0.1, "slow_drip_rate": 0.2}
    p, registry = policy({"rpcs": {"*": {**rule, "slow_drip_chunk_bytes": 3}}})
    seen: collections.Counter[str] = collections.Counter()
    for i in range(N):
        try:
            answer = await p.around(
                PAYMENT_SERVICE, "ProcessPayment", work, Message(f"pay_{i}"), Event()
            )
        except InjectedFault as fault:
            seen[fault.code] += 1
            continue
        if type(answer) is SlowDrip:
            assert answer.response == Message(f"pay_{i}")
            assert (answer.chunk_bytes, answer.interval_s) == (3, 0.1)
            seen["drip"] += 1
        else:
            seen["ok"] += 1
    assert within(seen["drip"], 0.2)
    assert within(seen["unavailable"], 0.2)  # errors and lost answers both say UNAVAILABLE
    assert injected(registry, "slow_drip", "ProcessPayment") == seen["drip"]


async def test_a_drip_cut_short_is_a_lost_answer_and_a_whole_one_is_not():
    p, _ = policy({"rpcs": {"*": {"slow_drip_rate": 1.0}}})
    whole = await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message("pay_a"), Event())
    cut = await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message("pay_b"), Event())
    whole.delivered()
    cut.cut_short()
    report = p.ledger.report()["lost_answers"]
    assert report["by_rpc"] == {"ProcessPayment": {"lost": 1, "recovered": 0}}
    assert report["unrecovered_sample"] == ["pay_b"]
    # A later answer about the same payment recovers it.
    again = await p.around(PAYMENT_SERVICE, "ProcessPayment", work, Message("pay_b"), Event())
    again.delivered()
    assert p.ledger.recovered == 1


@pytest.mark.parametrize(
    ("header", "chunk", "interval"),
    [("slow_drip", 8, 0.1), ("slow_drip=1:5", 1, 0.005), (" SLOW_DRIP=16384:0 ", 16384, 0.0)],
)
async def test_a_header_asks_one_call_to_drip(header, chunk, interval):
    p, registry = policy({})
    answer = await p.around(
        PAYMENT_SERVICE,
        "CreatePaymentIntent",
        work,
        Message(),
        Event((("x-paysim-fault", header),)),
    )
    assert type(answer) is SlowDrip
    assert (answer.chunk_bytes, answer.interval_s) == (chunk, interval)
    assert injected(registry, "slow_drip_targeted", "CreatePaymentIntent") == 1


@pytest.mark.parametrize("header", ["slow_drip=0:5", "slow_drip=8", "slow_drip=8:-1", "drip"])
async def test_a_bad_drip_header_is_invalid_argument_naming_the_shape(header):
    p, _ = policy({})
    with pytest.raises(InjectedFault) as info:
        await p.around(
            PAYMENT_SERVICE,
            "GetPaymentStatus",
            work,
            Message(),
            Event((("x-paysim-fault", header),)),
        )
    assert info.value.code == "invalid_argument"
    assert "slow_drip=BYTES:MS" in info.value.message


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"slow_drip_rate": 2}, "rpcs.*.slow_drip_rate"),
        ({"slow_drip_rate": 0.5, "error_rate": 0.6}, "slow_drip_rate must not exceed 1"),
        ({"slow_drip_chunk_bytes": 0}, "rpcs.*.slow_drip_chunk_bytes"),
        ({"slow_drip_chunk_bytes": 2.5}, "rpcs.*.slow_drip_chunk_bytes"),
        ({"slow_drip_chunk_bytes": 20000}, "rpcs.*.slow_drip_chunk_bytes"),
        ({"slow_drip_interval_ms": -1}, "rpcs.*.slow_drip_interval_ms"),
        ({"slow_drip_interval_ms": "fast"}, "rpcs.*.slow_drip_interval_ms"),
    ],
)
def test_a_bad_drip_is_refused_naming_the_field(rule, field):
    with pytest.raises(PlanError, match=field.replace("*", r"\*")):
        FaultPlan.from_dict({"rpcs": {"*": rule}})


@pytest.mark.parametrize(
    ("webhooks", "field"),
    [
        ({"lag_ms": -5}, "webhooks.lag_ms"),
        ({"lag_ms": 10**9}, "webhooks.lag_ms"),
        ({"lag_ms": True}, "webhooks.lag_ms"),
        ({"lag_ms": 10, "lag": {"distribution": "fixed", "ms": 10}}, "not both"),
        ({"lag": {"distribution": "gamma"}}, "webhooks.lag"),
        ({"lag": {"distribution": "fixed", "ms": 10, "when": "after"}}, "webhooks.lag"),
        ({"delay_ms": 10}, "webhooks: unknown field 'delay_ms'"),
        (30000, "webhooks"),
    ],
)
def test_a_bad_webhook_lag_is_refused_naming_the_field(webhooks, field):
    with pytest.raises(PlanError, match=field):
        FaultPlan.from_dict({"webhooks": webhooks})


def test_a_webhook_lag_plan_round_trips_and_zero_is_no_lag():
    plan = FaultPlan.from_dict({"webhooks": {"lag_ms": 30000}})
    assert not plan.empty
    assert plan.to_dict() == {"rpcs": {}, "webhooks": {"lag_ms": 30000.0}}
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    assert FaultPlan.from_dict({"webhooks": {"lag_ms": 0}}).empty


async def test_webhook_lag_follows_the_plan_in_force_and_is_counted():
    p, registry = policy({})
    assert p.webhook_lag() == 0.0
    p.set_plan(FaultPlan.from_dict({"webhooks": {"lag_ms": 2500}}))
    assert [p.webhook_lag() for _ in range(3)] == [2.5, 2.5, 2.5]
    uniform = {"distribution": "uniform", "min_ms": 100, "max_ms": 200}
    p.set_plan(FaultPlan.from_dict({"webhooks": {"lag": uniform}}))
    lags = [p.webhook_lag() for _ in range(1000)]
    assert min(lags) >= 0.1
    assert max(lags) <= 0.2
    p.set_plan(p.base)
    assert p.webhook_lag() == 0.0
    assert injected(registry, "webhook_lag", "webhook") == 1003


async def test_webhook_lag_draws_do_not_shift_the_calls_faults():
    plan = {
        "rpcs": {"*": {"error_rate": 0.5}},
        "webhooks": {"lag": {"distribution": "uniform", "min_ms": 1, "max_ms": 9}},
    }

    async def codes(p: FaultPolicy, lag_between: bool) -> list[str]:
        out = []
        for _ in range(200):
            if lag_between:
                p.webhook_lag()
            try:
                await p.around(PAYMENT_SERVICE, "GetPaymentStatus", work, Message(), Event())
                out.append("ok")
            except InjectedFault as fault:
                out.append(fault.code)
        return out

    assert await codes(policy(plan)[0], False) == await codes(policy(plan)[0], True)


def test_drip_and_lag_from_the_environment():
    env = {
        "CHAOS_API_SLOW_DRIP_RATE": "0.02",
        "CHAOS_API_SLOW_DRIP_CHUNK_BYTES": "4",
        "CHAOS_API_SLOW_DRIP_INTERVAL_MS": "250",
        "CHAOS_API_WEBHOOK_LAG_MS": "30000",
    }
    chaos = Settings.from_env(env).api_chaos
    assert chaos.active
    rule = chaos.plan.rpcs["*"]
    assert (rule.slow_drip_rate, rule.slow_drip_chunk_bytes, rule.slow_drip_interval_s) == (
        0.02,
        4,
        0.25,
    )
    assert chaos.plan.webhooks is not None
    assert chaos.plan.webhooks.lag.low_s == 30.0
    assert Settings.from_env({"CHAOS_API_WEBHOOK_LAG_MS": "2000"}).api_chaos.active


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHAOS_API_SLOW_DRIP_RATE": "2"}, "CHAOS_API_SLOW_DRIP_RATE"),
        (
            {"CHAOS_API_SLOW_DRIP_RATE": "0.1", "CHAOS_API_SLOW_DRIP_CHUNK_BYTES": "0"},
            "CHAOS_API_SLOW_DRIP_CHUNK_BYTES",
        ),
        (
            {"CHAOS_API_SLOW_DRIP_RATE": "0.1", "CHAOS_API_SLOW_DRIP_CHUNK_BYTES": "99999"},
            "slow_drip_chunk_bytes",
        ),
        ({"CHAOS_API_WEBHOOK_LAG_MS": "soon"}, "CHAOS_API_WEBHOOK_LAG_MS"),
        ({"CHAOS_API_WEBHOOK_LAG_MS": "999999999"}, "webhooks.lag_ms"),
    ],
)
def test_bad_drip_and_lag_settings_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_drip_and_lag_are_refused_in_production():
    for env in ({"CHAOS_API_SLOW_DRIP_RATE": "0.1"}, {"CHAOS_API_WEBHOOK_LAG_MS": "10"}):
        with pytest.raises(ConfigError, match="refused in production"):
            Settings.from_env({"ENVIRONMENT": "production", **env})
