"""Timelines on a MockClock, the shipped examples, and CHAOS_API_* from the environment."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from paysim.config import ConfigError, Settings
from paysim.faults.ledger import Ledger
from paysim.faults.metrics import FaultMetrics
from paysim.faults.plan import FaultPlan, PlanError
from paysim.faults.policy import FaultPolicy
from paysim.faults.timeline import EXAMPLES, Timeline, TimelinePlayer, load_timeline

STORM = """
name = "storm"
[[phases]]
name = "slow"
duration_s = 60
[phases.rpcs."*"]
latency = { distribution = "fixed", ms = 2000 }
[[phases]]
name = "flaky"
duration_s = 30
[phases.rpcs.ProcessPayment]
error_rate = 0.05
lost_answer_rate = 0.01
"""


def phase_gauge(registry: CollectorRegistry, phase: str) -> float | None:
    return registry.get_sample_value(
        "paysim_api_fault_phase", {"timeline": "storm", "phase": phase}
    )


async def test_a_timeline_plays_its_phases_on_the_clock_then_returns_to_the_base(autojump_clock):
    registry = CollectorRegistry()
    metrics = FaultMetrics(registry)
    base = FaultPlan.from_dict({"rpcs": {"GetPaymentStatus": {"error_rate": 0.5}}})
    policy = FaultPolicy(base, 1, metrics, Ledger())
    player = TimelinePlayer(policy, metrics)
    timeline = Timeline.from_toml(STORM)
    async with trio.open_nursery() as nursery:
        await nursery.start(player.run)
        player.start(timeline)
        await trio.sleep(59.5)
        assert policy.plan is timeline.phases[0].plan
        assert player.describe()["phase"] == "slow"  # type: ignore[index]
        assert phase_gauge(registry, "slow") == 1
        await trio.sleep(1)
        assert policy.plan is timeline.phases[1].plan
        assert phase_gauge(registry, "slow") == 0
        assert phase_gauge(registry, "flaky") == 1
        await trio.sleep(30)
        assert policy.plan is base
        assert player.describe() is None
        assert phase_gauge(registry, "flaky") == 0
        player.start(timeline)
        await trio.sleep(1)
        player.stop()
        await trio.testing.wait_all_tasks_blocked()
        assert policy.plan is base
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_shipped_examples_parse(name):
    timeline = load_timeline(name)
    assert len(timeline.phases) >= 3
    assert timeline.duration_s >= 60


@pytest.mark.parametrize(
    "text",
    [
        "name = 'x'",
        "[[phases]]\nduration_s = 0",
        "[[phases]]\nduration_s = 5\n[phases.rpcs.Nope]\nerror_rate = 0.1",
        "not toml = = 1",
    ],
)
def test_a_bad_timeline_is_refused(text):
    with pytest.raises(PlanError):
        Timeline.from_toml(text)


def test_chaos_api_settings_from_the_environment():
    settings = Settings.from_env(
        {
            "CHAOS_API_RPCS": "ProcessPayment,CreatePaymentIntent",
            "CHAOS_API_LATENCY": "lognormal:100:2000",
            "CHAOS_API_LATENCY_WHEN": "after",
            "CHAOS_API_ERROR_RATE": "0.05",
            "CHAOS_API_ERROR_CODES": "unavailable:3,resource_exhausted:1",
            "CHAOS_API_RETRY_AFTER_MS": "2500",
            "CHAOS_API_LOST_ANSWER_RATE": "0.01",
            "CHAOS_API_LOST_ANSWER_MODE": "reset",
            "CHAOS_SEED": "42",
        }
    )
    chaos = settings.api_chaos
    assert chaos.active
    assert chaos.seed == 42
    assert set(chaos.plan.rpcs) == {"ProcessPayment", "CreatePaymentIntent"}
    assert chaos.plan.for_rpc("GetPaymentStatus") is None
    rule = chaos.plan.rpcs["ProcessPayment"]
    assert rule.latency is not None
    assert rule.latency.after
    assert (rule.latency.low_s, rule.latency.high_s) == (0.1, 2.0)
    assert rule.error_codes == (("unavailable", 3.0), ("resource_exhausted", 1.0))
    assert (rule.retry_after_s, rule.lost_answer_rate, rule.lost_answer_mode) == (
        2.5,
        0.01,
        "reset",
    )


def test_connection_faults_from_the_environment():
    env = {"CHAOS_API_GOAWAY_EVERY_MS": "250", "CHAOS_API_RESET_EVERY_MS": "2000"}
    chaos = Settings.from_env(env).api_chaos
    assert chaos.active
    assert (chaos.connections.goaway_every_s, chaos.connections.reset_every_s) == (0.25, 2.0)


def test_chaos_api_is_off_by_default():
    assert not Settings.from_env({}).api_chaos.active


@pytest.mark.parametrize(
    "env",
    [
        {"CHAOS_API_ENABLED": "true"},
        {"CHAOS_API_ERROR_RATE": "0.1"},
        {"CHAOS_TIMELINE": "ticket_on_sale"},
        {"CHAOS_API_GOAWAY_EVERY_MS": "1000"},
        {"CHAOS_API_RESET_EVERY_MS": "1000"},
    ],
)
def test_api_chaos_is_refused_in_production(env):
    with pytest.raises(ConfigError, match="refused in production"):
        Settings.from_env({"ENVIRONMENT": "production", **env})


@pytest.mark.parametrize(
    "env",
    [
        {"CHAOS_API_LATENCY": "gamma:1:2"},
        {"CHAOS_API_LATENCY": "uniform:10"},
        {"CHAOS_API_ERROR_RATE": "0.1", "CHAOS_API_ERROR_CODES": "teapot:1"},
        {"CHAOS_API_RPCS": "Refund"},
        {"CHAOS_API_GOAWAY_EVERY_MS": "-1"},
    ],
)
def test_bad_chaos_api_settings_name_the_variable(env):
    with pytest.raises(ConfigError, match="CHAOS_API"):
        Settings.from_env(env)


async def test_a_repeating_timeline_starts_over(autojump_clock):
    metrics = FaultMetrics(CollectorRegistry())
    policy = FaultPolicy(FaultPlan(), 1, metrics, Ledger())
    player = TimelinePlayer(policy, metrics)
    timeline = Timeline.from_toml("repeat = true\n" + STORM)
    async with trio.open_nursery() as nursery:
        await nursery.start(player.run)
        player.start(timeline)
        await trio.sleep(60 + 30 + 10)
        assert policy.plan is timeline.phases[0].plan
        nursery.cancel_scope.cancel()


async def test_phases_end_on_the_timelines_clock_even_when_the_player_wakes_late(mock_clock):
    # A player that wakes late (a busy loop; here the clock jumps past a whole
    # phase and a half) does not push the later phases back: each ends at the
    # timeline's start plus the durations before it.
    text = "\n".join(f"[[phases]]\nname = '{n}'\nduration_s = 1" for n in "abcd")
    metrics = FaultMetrics(CollectorRegistry())
    player = TimelinePlayer(FaultPolicy(FaultPlan(), 1, metrics, Ledger()), metrics)

    async def phase_after(jump: float) -> str:
        mock_clock.jump(jump)
        await trio.testing.wait_all_tasks_blocked()
        return player.describe()["phase"]  # type: ignore[index,no-any-return]

    async with trio.open_nursery() as nursery:
        await nursery.start(player.run)
        player.start(Timeline.from_toml(text))
        await trio.testing.wait_all_tasks_blocked()
        assert await phase_after(1.5) == "b"  # woke at 1.5: "b" is in force till 2.0
        assert await phase_after(0.6) == "c"  # 2.1 (a late "b" would end at 2.5)
        assert await phase_after(1.0) == "d"  # 3.1
        nursery.cancel_scope.cancel()
