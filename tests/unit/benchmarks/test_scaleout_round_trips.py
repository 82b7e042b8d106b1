"""scaleout's store round trips: the top-level scripts in ``INFO commandstats``."""

from __future__ import annotations

from paysim.benchmarks.h2load import Result
from paysim.benchmarks.scaleout import (
    GOALS,
    RoundTrips,
    pair_ratios,
    per_core_scaling,
    round_trips_in,
)

INFO = (
    "# Commandstats\r\n"
    "cmdstat_evalsha:calls=989,usec=616666,usec_per_call=623.52,rejected_calls=0,failed_calls=2\r\n"
    "cmdstat_eval:calls=2,usec=300,usec_per_call=150.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_evalsha_ro:calls=7,usec=7,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_set:calls=44680,usec=36505,usec_per_call=0.82,rejected_calls=0,failed_calls=0\r\n"
)


def test_only_the_scripts_themselves_count_not_the_commands_inside_them() -> None:
    assert round_trips_in(INFO) == RoundTrips(calls=991, usec=616_966)
    assert round_trips_in("# Commandstats\r\n") == RoundTrips(0, 0)


def test_the_goals_are_issue_18s() -> None:
    assert GOALS == {"redis x1 / memory x1": 0.9, "redis x2 / redis x1": 1.8}


def _result(rps: float, cores: float | None) -> Result:
    return Result("x", 1000, 1.0, rps, 1.0, 1.0, 1.0, 1.0, 0, 0, 100.0, cores)


def test_per_core_scaling_divides_out_the_cores_each_run_got() -> None:
    # Two processes got 1.45 cores: 1.44 x one by throughput, 0.99 per core.
    assert per_core_scaling(_result(4000, 1.0), _result(5760, 1.45)) == 5760 / 1.45 / 4000
    assert per_core_scaling(_result(4000, 0.5), _result(4000, 1.0)) == 0.5


def test_per_core_scaling_is_unknown_without_the_servers_cpu() -> None:
    assert per_core_scaling(_result(4000, None), _result(5760, 1.45)) is None
    assert per_core_scaling(_result(4000, 1.0), _result(5760, 0.0)) is None


def test_pair_ratios_compare_runs_of_the_same_round() -> None:
    memory = [_result(4000, 1.0), _result(3000, 1.0), _result(5000, 1.0)]
    redis = [_result(3600, 1.0), _result(2700, 1.0), _result(4500, 1.0)]
    assert pair_ratios(redis, memory) == [0.9, 0.9, 0.9]
    assert pair_ratios(redis[:2], memory) == [0.9, 0.9]  # a round without both: left out
