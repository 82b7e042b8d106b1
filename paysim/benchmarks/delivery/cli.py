"""The whole delivery path under a constant arrival rate: creates, webhooks, events.

The command line of ``python -m paysim.benchmarks.delivery`` (see the package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from paysim.benchmarks.delivery.constants import TARGET_RATE
from paysim.benchmarks.delivery.harness import bench
from paysim.benchmarks.delivery.receiver import run_receiver
from paysim.benchmarks.delivery.report import build_report, print_report


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paysim.benchmarks.delivery", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="creates per second (default: the goal)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--delay-ms", type=int, default=2000, help="DEFAULT_DELAY_MS")
    parser.add_argument("--channels", type=int, default=4, help="gRPC connections")
    parser.add_argument(
        "--events",
        choices=("moto", "sink"),
        default="moto",
        help="moto: EventBridge, rule and SQS in moto's server; sink: a PutEvents stand-in",
    )
    parser.add_argument(
        "--webhook-concurrency", type=int, help="WEBHOOK_CONCURRENCY (default: the server's)"
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=60.0, help="seconds to wait past the last due time"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--profile-server",
        type=Path,
        metavar="FILE",
        help="run the server under cProfile and write its stats here (slows the server down)",
    )
    parser.add_argument(
        "--count-instructions",
        type=Path,
        metavar="FILE",
        help="run the server under valgrind's cachegrind (instructions only) and write its"
        " counts here (the server runs 30-50 times slower: use a low --rate; see"
        " paysim.benchmarks.delivery.instructions)",
    )
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "OUTFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        return run_receiver(int(args.receiver[0]), Path(args.receiver[1]))
    if not (args.rate > 0 and args.duration > 0 and args.channels > 0 and args.delay_ms >= 0):
        parser.error("--rate, --duration and --channels must be positive, --delay-ms >= 0")
    if shutil.which("taskset") is None or not Path("/proc/stat").exists():
        print("needs Linux with taskset (util-linux)", file=sys.stderr)
        return 2
    if args.count_instructions and shutil.which("valgrind") is None:
        print("--count-instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs two cores: the server on core 0, the rest on core 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="paysim-delivery-") as tmp:
            outcome = bench(args, Path(tmp))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    report = build_report(args, outcome)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0
