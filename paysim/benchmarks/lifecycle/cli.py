"""ListPayments cost against the number of stored payments, and memory per payment.

The command line of ``python -m paysim.benchmarks.lifecycle`` (see the package).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from paysim.benchmarks.lifecycle.listing import PAGE_SIZE, run_listing
from paysim.benchmarks.lifecycle.memory import (
    MemoryResult,
    memory_churn,
    memory_cycle,
    memory_pending,
    run_child,
)

DEFAULT_LAYOUTS = "10000x100,100000x1000,1000000x10000,100000x100"


def _layouts(text: str) -> list[tuple[int, int]]:
    layouts = []
    for part in text.split(","):
        payments, users = part.lower().split("x")
        layouts.append((int(payments), int(users)))
    return layouts


GOAL_PENDING_BYTES = 2 * 1024**3  # issue 18: 1,000,000 pending payments in under 2 GiB
GOAL_PENDING_COUNT = 1_000_000
GOAL_CYCLE_RATIO = 1.2  # after create/cancel/sweep: within 20 % of the idle RSS


def _command(args: argparse.Namespace, case: str) -> str:
    size = f"--pending {args.pending}" if case == "pending" else f"--churn {args.churn}"
    return f"python -m paysim.benchmarks.lifecycle --memory --cases {case} {size}"


def _goal_pending(m: MemoryResult) -> str:
    at_goal = m.bytes_per_payment * GOAL_PENDING_COUNT / 1024**3
    verdict = "within" if at_goal * 1024**3 < GOAL_PENDING_BYTES else "OVER"
    return (
        f"{m.bytes_per_payment:,.0f} B per pending payment (timer task included): "
        f"{GOAL_PENDING_COUNT:,} pending would take {at_goal:.2f} GiB, {verdict} the 2 GiB goal"
    )


def _goal_cycle(m: MemoryResult) -> str:
    assert m.idle_mib is not None
    assert m.rss_after_cycle_abs_mib is not None
    ratio = m.rss_after_cycle_abs_mib / m.idle_mib
    verdict = "within" if ratio <= GOAL_CYCLE_RATIO else "OVER"
    return (
        f"RSS idle {m.idle_mib:.1f} MiB, {m.rss_pending_abs_mib:.1f} MiB with all pending, "
        f"{m.rss_after_cycle_abs_mib:.1f} MiB after cancel+sweep (x{ratio:.2f} idle, "
        f"{verdict} the +20 % goal; {m.blocks_after_retention:+,} allocated blocks; "
        f"free memory returned: {m.trimmed})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paysim.benchmarks.lifecycle", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--list", action="store_true", help="time ListPayments")
    parser.add_argument("--memory", action="store_true", help="measure memory per payment")
    parser.add_argument("--layouts", type=_layouts, default=_layouts(DEFAULT_LAYOUTS))
    parser.add_argument("--calls", type=int, default=2_000, help="timed calls per page kind")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--churn", type=int, default=1_000_000)
    parser.add_argument("--churn-minutes", type=float, default=10.0)
    parser.add_argument(
        "--cases", default="pending,cycle,churn", help="memory cases: pending, cycle, churn"
    )
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "pending":
            result = memory_pending(int(rest[0]))
        elif kind == "cycle":
            result = memory_cycle(int(rest[0]))
        else:
            result = memory_churn(int(rest[0]), float(rest[1]))
        print(json.dumps(asdict(result)))
        return 0

    both = not args.list and not args.memory
    summary: dict[str, object] = {}
    if args.list or both:
        rows = run_listing(args.layouts, args.calls)
        summary["listing"] = [asdict(r) for r in rows]
        print(
            f"ListPayments: validate_list + service.list_payments, page_size {PAGE_SIZE}, "
            f"{args.calls} timed calls per column"
        )
        print(f"{'payments':>10}{'users':>8}{'own':>6}{'insert/s':>11}"
              f"{'first p50':>11}{'p99 µs':>8}{'cursor p50':>12}{'p99 µs':>8}")  # fmt: skip
        for r in rows:
            print(
                f"{r.payments:>10,}{r.users:>8,}{r.own:>6,}{r.insert_per_s:>11,.0f}"
                f"{r.first_p50_us:>11.1f}{r.first_p99_us:>8.1f}"
                f"{r.cursor_p50_us:>12.1f}{r.cursor_p99_us:>8.1f}"
            )
        same_own = [r for r in rows if r.own == rows[0].own]
        if len(same_own) > 1:
            growth = same_own[-1].first_p50_us / same_own[0].first_p50_us
            print(
                f"first page p50, {same_own[-1].payments:,} vs {same_own[0].payments:,} "
                f"payments with {rows[0].own} of the user's own: x{growth:.2f}"
            )
    if args.memory or both:
        cases = {
            "pending": ["pending", str(args.pending)],
            "cycle": ["cycle", str(args.churn)],
            "churn": ["churn", str(args.churn), str(args.churn_minutes)],
        }
        results = [run_child(cases[c]) for c in args.cases.split(",")]
        summary["memory"] = [asdict(r) for r in results]
        print("memory: VmRSS after gc.collect() minus the baseline after setup (MiB)")
        print(f"{'case':<44}{'stored':>10}{'RSS':>8}{'B/payment':>11}{'peak':>8}{'real s':>8}")
        for m in results:
            print(
                f"{m.case:<44}{m.stored_at_end:>10,}{m.rss_at_end_mib:>8.1f}"
                f"{m.bytes_per_payment:>11,.0f}{m.peak_mib:>8.1f}{m.real_s:>8.1f}"
            )
            if m.create_us is not None:
                print(f"  create_intent: {m.create_us:.1f} µs per call")
            if m.case.endswith("pending (TIMEOUT, TTL 15 min)"):
                print(f"  {_goal_pending(m)}\n  command: {_command(args, 'pending')}")
            if m.rss_after_cycle_abs_mib is not None:
                print(f"  {_goal_cycle(m)}\n  command: {_command(args, 'cycle')}")
            elif m.stored_after_retention is not None:
                print(
                    f"  most stored at once {m.peak_stored:,}; 65 s after the last creation: "
                    f"{m.stored_after_retention:,} stored, RSS {m.rss_after_retention_mib:.1f} "
                    f"MiB, {m.blocks_after_retention:+,} allocated blocks"
                )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0
