"""``benchmarks.delivery.instructions`` and the harness's server command (no valgrind run here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from paysim.benchmarks.delivery.harness import server_command
from paysim.benchmarks.delivery.instructions import per_payment, total_instructions

CACHEGRIND_OUT = """\
# callgrind format
version: 1
creator: cachegrind-3.19.0
pid: 4242
cmd: python -m paysim serve
events: Ir
fl=???
fn=???
0 123
summary: 4815900361
"""


def test_the_total_is_the_summary_line() -> None:
    assert total_instructions(CACHEGRIND_OUT) == 4_815_900_361


def test_a_file_without_a_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no summary line"):
        total_instructions(CACHEGRIND_OUT.replace("summary:", "totals:"))


def test_per_payment_is_the_difference_over_the_payments_between() -> None:
    assert per_payment(1_000, 7_000, 600) == 10.0


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"profile_server": None, "count_instructions": None, **kw})


def test_the_server_runs_plain_under_cprofile_or_under_cachegrind(tmp_path: Path) -> None:
    assert server_command(_args()) == [sys.executable, "-m", "paysim", "serve"]
    stats, counts = tmp_path / "stats", tmp_path / "counts"
    assert server_command(_args(profile_server=stats)) == [
        *(sys.executable, "-m", "cProfile", "-o", str(stats)),
        *("-m", "paysim", "serve"),
    ]
    assert server_command(_args(count_instructions=counts)) == [
        *("valgrind", "--tool=cachegrind", "--cache-sim=no"),
        f"--cachegrind-out-file={counts}",
        *(sys.executable, "-m", "paysim", "serve"),
    ]
