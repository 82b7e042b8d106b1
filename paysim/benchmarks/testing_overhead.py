"""What ``paysim.testing`` costs a test: start and stop of a per-test simulator.

``python -m paysim.benchmarks.testing_overhead [--runs 30]`` starts and stops
``run_paysim()`` (the real app on loopback, its webhook inbox, captured events)
``--runs`` times in one trio loop and prints the median and the worst, in
milliseconds. Issue 16's target is a median under 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import trio

from paysim.observability import logging as paysim_logging
from paysim.testing import run_paysim


async def _measure(runs: int) -> list[float]:
    costs = []
    for _ in range(runs):
        start = time.perf_counter()
        async with run_paysim():
            pass
        costs.append(time.perf_counter() - start)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paysim.benchmarks.testing_overhead")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    paysim_logging.configure("warning")
    costs = trio.run(_measure, args.runs)
    median, worst = statistics.median(costs), max(costs)
    verdict = "met" if median < 0.05 else "NOT met"
    print(
        f"run_paysim start+stop over {args.runs} runs: median {median * 1000:.1f} ms, "
        f"worst {worst * 1000:.1f} ms (target: median under 50 ms: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
