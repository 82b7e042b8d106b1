"""Instructions per payment on the whole path: a count that does not drift with the machine.

    python -m paysim.benchmarks.delivery.instructions [--rate 20] [--short 10] [--long 40]

Runs ``python -m paysim.benchmarks.delivery --events sink`` twice, with the
server under valgrind's cachegrind (``--count-instructions``: instructions
only, no cache simulation), for ``--short`` and for ``--long`` seconds of load
at ``--rate`` creates per second, and prints (count of the long run - count
of the short run) / (the payments between them): start-up, warm-up and
shutdown cancel out. Run it from the checkout to measure (``python -m``
imports the current directory's ``paysim``), once per tree, back to back.

Why: on a shared machine, CPU per payment differs by 3-5 % from run to run,
more than most single changes; two runs of one tree counted this way differ
by about 1 %. The server runs 30-50 times slower under valgrind, so the rate
stays low (20/s keeps it near half a core): a payment's events then share
PutEvents calls with fewer others than at high rates (2 per call at 20/s,
10 above 100/s), which weighs botocore's per-call cost more; compare trees
at one rate. Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from paysim.benchmarks.delivery import cli

_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def total_instructions(cachegrind_out: str) -> int:
    """The program total in a cachegrind output file (its ``summary:`` line)."""
    found = _SUMMARY.search(cachegrind_out)
    if found is None:
        raise ValueError("no summary line: did the server exit before writing its counts?")
    return int(found.group(1))


def per_payment(short: int, long: int, payments_between: float) -> float:
    return (long - short) / payments_between


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="creates per second")
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short run")
    parser.add_argument("--long", type=float, default=40.0, help="seconds of the long run")
    args = parser.parse_args(argv)
    if not (args.rate > 0 and 0 < args.short < args.long):
        parser.error("--rate must be positive and 0 < --short < --long")
    counts = []
    with tempfile.TemporaryDirectory(prefix="paysim-instructions-") as tmp:
        for seconds in (args.short, args.long):
            out = Path(tmp) / f"cachegrind.{seconds:g}"
            code = cli.main(
                [
                    *("--rate", f"{args.rate:g}", "--duration", f"{seconds:g}"),
                    *("--events", "sink", "--count-instructions", str(out)),
                ]
            )
            if not out.exists():
                print(f"the {seconds:g} s run wrote no counts (exit {code})", file=sys.stderr)
                return 1
            counts.append(total_instructions(out.read_text()))
    payments = args.rate * (args.long - args.short)
    print(
        f"server instructions: {counts[0]:,} after {args.short:g} s, {counts[1]:,} after"
        f" {args.long:g} s at {args.rate:g}/s: {per_payment(counts[0], counts[1], payments):,.0f}"
        " per payment"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
