"""Stock grpcio clients at full tilt: does every call succeed?

``python -m paysim.benchmarks.grpcio_load --calls 50000 --repeat 5``: starts
``paysim serve`` (``loadgen.spawn``, pinned to ``--cores``), then, ``--repeat``
times, sends ``--calls`` CreatePaymentIntent from ``--channels`` grpc.aio
channels with ``--in-flight`` calls outstanding on each, the shape of a load
test's client pool, and counts the answers by status code. The exit status is
1 if any call failed. This is the run that once saw GOAWAY(STREAM_CLOSED) in
about 4 % of calls: grpcio's WINDOW_UPDATE for a stream the server had
already closed was taken for a connection error.

``--target HOST:PORT`` drives a server that is already running instead;
``--server-env KEY=VALUE`` adds to the spawned server's environment.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any

import grpc

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.loadgen.spawn import spawned_server

_OPTIONS = [("grpc.enable_http_proxy", 0)]


async def _one_run(target: str, calls: int, channels: int, in_flight: int) -> dict[str, Any]:
    counter = itertools.count()
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    opened = [grpc.aio.insecure_channel(target, options=_OPTIONS) for _ in range(channels)]
    try:
        stubs = [payment_pb2_grpc.PaymentServiceStub(c) for c in opened]

        async def worker(stub: Any) -> None:
            while (n := next(counter)) < calls:
                request = pb.CreatePaymentIntentRequest(
                    reservation_id=f"rsv_{n}",
                    user_id=f"user_{n % 1000}",
                    amount=types_pb2.Money(amount=50_000, currency="KRW"),
                )
                start = time.perf_counter()
                try:
                    await stub.CreatePaymentIntent(request, timeout=30)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(worker(stub) for stub in stubs for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in opened:
            await channel.close()
    latencies.sort()
    return {
        "calls": calls,
        "codes": dict(codes),
        "failed": calls - codes["OK"],
        "seconds": round(elapsed, 2),
        "calls_per_s": round(calls / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
    }


def _runs(target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for i in range(args.repeat):
        result = asyncio.run(_one_run(target, args.calls, args.channels, args.in_flight))
        print(f"run {i + 1}: {json.dumps(result)}", flush=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paysim.benchmarks.grpcio_load")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=256, help="outstanding calls per channel")
    parser.add_argument("--target", help="HOST:PORT of a running server (default: spawn one)")
    parser.add_argument("--cores", default="0", help="cores for the spawned server (taskset)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.target:
        results = _runs(args.target, args)
    else:
        extra = dict(item.split("=", 1) for item in args.server_env)
        # Every payment approves after the default delay; room for all of them.
        extra.setdefault("MAX_PENDING_PAYMENTS", str(args.calls * args.repeat + 1))
        cores = tuple(int(c) for c in args.cores.split(","))
        with spawned_server(cores, extra_env=extra) as server:
            results = _runs(server.target, args)
            if server.process.poll() is not None:
                print(f"the server exited with {server.process.returncode}", file=sys.stderr)
                return 1
    failed = sum(r["failed"] for r in results)
    print(f"total: {sum(r['calls'] for r in results)} calls, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
