"""What API fault injection costs on the core benchmark when it does nothing (issue 17).

    python -m paysim.benchmarks.fault_overhead [--requests 30000] [--rounds 5] [--json FILE]

The core benchmark's load (``paysim.benchmarks.h2load``: CreatePaymentIntent
under h2load, the server on core 0, h2load on core 1, a real payment behind
every call) against ``paysim serve`` in two configurations, back to back and
interleaved round by round so that a drift of the machine hits both alike:

* **off**: no ``CHAOS_API_*`` (the default): the edge holds no fault policy;
* **on, zero rates**: ``CHAOS_API_ENABLED=true`` with every rate at zero: the
  policy is consulted on every call (the per-call header, the plan lookup, the
  draw) and injects nothing.

Both run with ENVIRONMENT=staging (production refuses API faults) and JSON logs,
one line per RPC, as in production. Reported per configuration: the median over
the rounds of server CPU µs per request and of requests/s, and the ratio of
"on" to "off". Goals: off costs nothing measurable against the same build
without the feature (compare ``off`` with the core benchmark's figure of the
commit before it); on with zero rates under 3 % more CPU per request.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from paysim.benchmarks.h2load import (
    Load,
    Result,
    measure,
    request_body,
    start_pinned,
    stop_process,
)
from paysim.loadgen.ports import wait_port
from paysim.loadgen.spawn import free_port, server_env

CONFIGS = {
    "off": {},
    "on, zero rates": {"CHAOS_API_ENABLED": "true"},
}
GOAL_ON = 1.03


def _one(name: str, extra: dict[str, str], load: Load, workdir: Path) -> Result:
    grpc_port, http_port = free_port(), free_port()
    env = server_env(grpc_port, http_port, events=False, extra={})
    env.update(ENVIRONMENT="staging", LOG_FORMAT="json", **extra)
    proc = start_pinned([sys.executable, "-m", "paysim", "serve"], env)
    try:
        wait_port(grpc_port)
        return measure(name, grpc_port, load, workdir, http_port, server_pids=lambda: [proc.pid])
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None or shutil.which("taskset") is None:
        print("needs h2load (nghttp2-client) and taskset (util-linux)", file=sys.stderr)
        return 2
    runs: dict[str, list[Result]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        body = workdir / "request.bin"
        body.write_bytes(request_body())
        load = Load.from_args(args, body)
        for round_ in range(args.rounds):
            order = list(CONFIGS.items())
            if round_ % 2:
                order.reverse()  # neither configuration always runs first
            for name, extra in order:
                result = _one(name, extra, load, workdir)
                runs[name].append(result)
                print(
                    f"round {round_ + 1} {name:15s} {result.rps:8.0f} req/s "
                    f"{result.cpu_us_per_request or float('nan'):6.1f} us/req "
                    f"non-OK {result.grpc_non_ok}",
                    flush=True,
                )
    summary = {
        name: {
            "rps": statistics.median(r.rps for r in results),
            "cpu_us_per_request": statistics.median(
                r.cpu_us_per_request for r in results if r.cpu_us_per_request is not None
            ),
            "non_ok": sum(r.grpc_non_ok or 0 for r in results),
        }
        for name, results in runs.items()
    }
    off, on = summary["off"], summary["on, zero rates"]
    ratio = on["cpu_us_per_request"] / off["cpu_us_per_request"]
    print(f"\nCreatePaymentIntent, {args.requests} requests x {args.rounds} rounds (medians)")
    for name, row in summary.items():
        print(f"  {name:15s} {row['rps']:8.0f} req/s {row['cpu_us_per_request']:6.1f} us/req")
    verdict = "met" if ratio < GOAL_ON else "NOT met"
    print(f"  on/off CPU per request: {ratio:.3f} (goal < {GOAL_ON}): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "on_over_off": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
