"""What one "rpc" log line costs in the logging setup: CPU per line.

``python -m paysim.benchmarks.log_line [--format json|console] [--lines 100000]
[--repeat 5]`` configures logging as ``paysim serve`` does (level info,
``process=api``) but into /dev/null, binds a payment id as the service does,
writes ``--lines`` lines shaped as the gRPC server's "rpc" line for an OK call
(through a module-level logger, as the server's) ``--repeat`` times and
prints the median of the process CPU time per line, in microseconds. The
server's own call site (``calls._log_rpc``: private to tooling) is not in it.
To compare two checkouts, run ``python -m paysim.benchmarks.log_line`` from
each checkout's root in turn, interleaved (``python -m`` imports the current
directory's ``paysim`` ahead of anything on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import structlog

from paysim.observability import logging as paysim_logging

_METHOD = paysim_logging.Trusted("payment.v1.PaymentService/CreatePaymentIntent")
_OK = paysim_logging.Trusted("OK")
log = structlog.get_logger("paysim.benchmarks.log_line")


def _per_line_us(lines: int) -> float:
    start = time.process_time()
    for _ in range(lines):
        log.info("rpc", grpc_method=_METHOD, grpc_code=_OK, ms=round(0.0012345 * 1000, 3))
    return (time.process_time() - start) / lines * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paysim.benchmarks.log_line")
    parser.add_argument("--format", choices=["json", "console"], default="json")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as null:
        paysim_logging.configure("info", json=args.format == "json", stream=null, process="api")
        structlog.contextvars.bind_contextvars(payment_id="pay_3f9c0a1b2c3d4e5f60718293")
        try:
            _per_line_us(2_000)  # warm up: loggers cached, caches filled
            costs = [_per_line_us(args.lines) for _ in range(args.repeat)]
        finally:
            structlog.contextvars.clear_contextvars()
    print(f"{args.format}: {statistics.median(costs):.2f} us CPU per rpc line (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
