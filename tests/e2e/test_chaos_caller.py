"""``paysim chaos --caller``: a naive and a correct client through a timeline with every kind
of API fault; the reconciliation report must count exactly the naive one's double charges.

A real ``paysim serve`` child process, real sockets, a few hundred payments (CI time).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from paysim.chaos.caller import CallerStats
from paysim.chaos.caller_run import CallerResult, Turn

ROOT = Path(__file__).parents[2]
STORM = """
name = "ci-storm"
[[phases]]
name = "slow"
duration_s = 0.5
[phases.rpcs."*"]
latency = { distribution = "lognormal", p50_ms = 1, p99_ms = 20 }
[[phases]]
name = "flaky"
duration_s = 1.0
[phases.rpcs."*"]
error_rate = 0.1
error_codes = { unavailable = 3, resource_exhausted = 1, internal = 1 }
lost_answer_rate = 0.03
[phases.rpcs.ProcessPayment]
error_rate = 0.05
lost_answer_rate = 0.1
lost_answer_mode = "reset"
[[phases]]
name = "lossy"
duration_s = 0.5
[phases.rpcs.ProcessPayment]
lost_answer_rate = 0.15
[[phases]]
name = "recovery"
duration_s = 0.5
"""


async def test_the_report_counts_exactly_the_naive_callers_double_charges(tmp_path: Path):
    timeline = tmp_path / "storm.toml"
    timeline.write_text(STORM)
    out = tmp_path / "caller.json"
    cmd = [sys.executable, "-m", "paysim", "chaos", "--caller", "--timeline", str(timeline)]
    cmd += ["--count", "250", "--seed", "17", "--concurrency", "16", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with trio.fail_after(120):
        done = await trio.run_process(
            cmd, env=env, check=False, capture_stdout=True, capture_stderr=True
        )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(out.read_text())
    naive, correct = result["turns"]
    assert naive["caller"] == "naive"
    assert correct["caller"] == "correct"
    assert naive["caused"]["double_charges"] > 0  # the storm lost answers it retried past
    assert naive["report"] == naive["caused"] == naive["payments"]
    assert correct["report"] == {"double_charges": 0, "extra_captures": 0}
    assert correct["codes"].get("INTERNAL", 0) > 0  # it met lost answers and recovered them
    assert b"PASS" in done.stdout
    assert b"FAIL" not in done.stdout


def _turn(kind: str, caused: int, report: int) -> Turn:
    stats = CallerStats(kind, expected_doubles=caused, expected_extra=caused)
    return Turn(
        kind,
        stats,
        truth_doubles=caused,
        truth_extra=caused,
        report_doubles=report,
        report_extra=report,
    )


def test_a_report_that_misses_or_invents_a_double_charge_fails_the_run():
    assert CallerResult(1, None, [_turn("naive", 3, 3), _turn("correct", 0, 0)]).passed
    assert not CallerResult(1, None, [_turn("naive", 3, 2), _turn("correct", 0, 0)]).passed
    assert not CallerResult(1, None, [_turn("naive", 3, 3), _turn("correct", 0, 1)]).passed
    assert not CallerResult(1, None, [_turn("naive", 3, 3), _turn("correct", 1, 1)]).passed
    assert not CallerResult(1, None, [_turn("naive", 3, 3)]).passed
