"""CreatePaymentIntent throughput and latency under h2load, against a bare grpc.aio yardstick.

    python -m paysim.benchmarks.h2load [--requests 60000] [--connections 4] [--streams 16]

Both servers run in turn on core 0 (``taskset -c 0``), h2load on core 1, with
the same pre-encoded gRPC request body and the same load (``connections x
streams`` concurrent streams). paysim runs as in production (JSON logs, one
line per RPC, metrics on), with a real payment behind every call. The
yardstick is a bare ``grpc.aio`` server answering a constant.

h2load reports HTTP status only, so gRPC outcomes are read from paysim's own
``grpc_server_handled_total`` before and after; latency percentiles come from
h2load's per-request log. Needs h2load (Debian ``nghttp2-client``) and
``taskset`` (util-linux), and grpcio for the yardstick (dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2
from paysim.loadgen.ports import wait_port
from paysim.loadgen.procstat import process_cpu_s
from paysim.loadgen.spawn import free_port, server_env

PATH = "/payment.v1.PaymentService/CreatePaymentIntent"
PARITY = 1.0  # issue 18: the gRPC path at parity with the bare grpc.aio server (was 0.75)


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    http_failures: int
    grpc_non_ok: int | None
    # The server's own CPU over the measured run (all its processes), when known:
    # CPU time per request, and cores kept busy (CPU seconds per second).
    cpu_us_per_request: float | None = None
    server_cores: float | None = None
    # Of that, the time in garbage collections (paysim_gc_pause_seconds), when known.
    gc_us_per_request: float | None = None


def request_body() -> bytes:
    message = payment_pb2.CreatePaymentIntentRequest(
        reservation_id="rsv_bench",
        user_id="user_bench",
        amount=types_pb2.Money(amount=100_000, currency="KRW"),
    ).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _metrics(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _gc_seconds(text: str) -> float:
    """All of paysim_gc_pause_seconds_total in a scrape (0 if the server has none)."""
    found = re.findall(r"^paysim_gc_pause_seconds_total\{.*?\} ([0-9.e+-]+)$", text, re.M)
    return sum(float(v) for v in found)


def _handled(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    pattern = r"^grpc_server_handled_total\{(.*?)\} ([0-9.e+]+)$"
    for labels, value in re.findall(pattern, text, re.M):
        if 'grpc_method="CreatePaymentIntent"' in labels:
            code = re.search(r'grpc_code="(\w+)"', labels)
            if code:
                out[code.group(1)] = float(value)
    return out


@dataclass(frozen=True)
class Load:
    """How h2load drives a server: the request body file, how many requests (after
    ``warmup`` unmeasured ones), how many at once, and where h2load runs."""

    body: Path
    requests: int
    warmup: int
    connections: int
    streams: int  # concurrent streams per connection
    cores: str = "1"  # taskset list

    @classmethod
    def from_args(cls, args: argparse.Namespace, body: Path, cores: str = "1") -> Load:
        """From the ``--requests --warmup --connections --streams`` options."""
        return cls(body, args.requests, args.warmup, args.connections, args.streams, cores)


def _h2load(port: int, load: Load, requests: int, log: Path | None) -> tuple[str, list[float]]:
    cmd = [
        "taskset", "-c", load.cores, "h2load",
        "-n", str(requests), "-c", str(load.connections), "-m", str(load.streams),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-d", str(load.body),
    ]  # fmt: skip
    if log is not None:
        cmd += ["--log-file", str(log)]
    cmd.append(f"http://127.0.0.1:{port}{PATH}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    durations: list[float] = []
    if log is not None:
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                durations.append(int(parts[2]) / 1000.0)  # microseconds -> ms
    return out, durations


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    index = min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))
    return sorted_ms[index]


def measure(
    name: str,
    port: int,
    load: Load,
    workdir: Path,
    http_port: int | None = None,
    server_pids: Callable[[], list[int]] | None = None,
) -> Result:
    """Warm up, then measure; ``http_port``: the server's metrics, whose gRPC
    outcomes are then counted; ``server_pids``: the server's processes, whose CPU
    time is then reported."""
    _h2load(port, load, load.warmup, None)
    scrape = _metrics(http_port) if http_port else ""
    before, gc_before = _handled(scrape), _gc_seconds(scrape)
    pids = server_pids() if server_pids is not None else []
    cpu_before = _cpu_s(pids)
    log = workdir / f"{name}.log"
    out, durations = _h2load(port, load, load.requests, log)
    cpu_after = _cpu_s(pids)
    scrape = _metrics(http_port) if http_port else ""
    after, gc_after = _handled(scrape), _gc_seconds(scrape)
    # h2load writes "finished in 789.57ms" under a second, "finished in 12.3s" above.
    finished = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", out)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if not finished or not counts:
        raise SystemExit(f"could not parse h2load output:\n{out}")
    done, succeeded = int(counts.group(1)), int(counts.group(2))
    non_ok = None
    if http_port:
        non_ok = int(
            sum(after.get(c, 0) - before.get(c, 0) for c in set(after) | set(before) if c != "OK")
        )
    durations.sort()
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Result(
        name=name,
        requests=done,
        seconds=seconds,
        rps=float(finished.group(3)),
        p50_ms=percentile(durations, 0.50),
        p90_ms=percentile(durations, 0.90),
        p99_ms=percentile(durations, 0.99),
        max_ms=durations[-1] if durations else float("nan"),
        http_failures=done - succeeded,
        grpc_non_ok=non_ok,
        cpu_us_per_request=None if cpu_s is None or not succeeded else 1e6 * cpu_s / succeeded,
        server_cores=None if cpu_s is None or not seconds else cpu_s / seconds,
        gc_us_per_request=1e6 * (gc_after - gc_before) / succeeded
        if http_port and succeeded
        else None,
    )


def _cpu_s(pids: list[int]) -> float | None:
    """CPU seconds of all ``pids`` together; None if there are none or one is unreadable."""
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        cpu = process_cpu_s(pid)
        if cpu is None:
            return None
        total += cpu
    return total


def start_pinned(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    for tool, package in (("h2load", "nghttp2-client"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install {package}", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("needs two cores: the server on core 0, h2load on core 1", file=sys.stderr)
        return 2

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        body = workdir / "request.bin"
        body.write_bytes(request_body())
        load = Load.from_args(args, body)

        grpc_port, http_port = free_port(), free_port()
        # The gRPC path alone: no event bus here (the delivery benchmark covers it).
        env = server_env(grpc_port, http_port, events=False, extra={})
        proc = start_pinned([sys.executable, "-m", "paysim", "serve"], env)
        try:
            wait_port(grpc_port)
            results.append(
                measure(
                    "paysim",
                    grpc_port,
                    load,
                    workdir,
                    http_port,
                    server_pids=lambda: [proc.pid],  # taskset execs into the server
                )
            )
        finally:
            stop_process(proc)

        if not args.skip_baseline:
            port = free_port()
            baseline = [sys.executable, "-m", "paysim.benchmarks.aio_baseline", str(port)]
            proc = start_pinned(baseline, dict(os.environ))
            try:
                wait_port(port)
                aio = proc  # taskset execs into the server, as for paysim
                results.append(
                    measure("grpc.aio-constant", port, load, workdir, server_pids=lambda: [aio.pid])
                )
            finally:
                stop_process(proc)

    concurrency = args.connections * args.streams
    print(f"CreatePaymentIntent, {args.requests} requests, {concurrency} concurrent streams")
    print(f"{'server':<20}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'errors':>8}")  # fmt: skip
    for r in results:
        errors = r.http_failures + (r.grpc_non_ok or 0)
        print(
            f"{r.name:<20}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{r.max_ms:>9.2f}{errors:>8}"
        )
        if r.cpu_us_per_request is not None and r.server_cores is not None:
            print(f"{'':<20}server CPU {r.cpu_us_per_request:.0f} us/request, "
                  f"{r.server_cores:.2f} cores busy")  # fmt: skip
        if r.gc_us_per_request is not None:
            print(f"{'':<20}of which garbage collection {r.gc_us_per_request:.1f} us/request")
    summary: dict[str, object] = {"results": [asdict(r) for r in results]}
    if len(results) == 2:
        ratio = results[0].rps / results[1].rps
        summary["ratio"] = ratio
        print(f"paysim / grpc.aio = {ratio:.2f}")
        paysim_cpu, aio_cpu = results[0].cpu_us_per_request, results[1].cpu_us_per_request
        if paysim_cpu and aio_cpu:
            # On a shared machine the server may not get its core: CPU per request is
            # the steadier comparison (a whole core each: throughput ratio = aio/paysim).
            summary["cpu_ratio"] = aio_cpu / paysim_cpu
            print(f"grpc.aio CPU / paysim CPU per request = {aio_cpu / paysim_cpu:.2f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    ok = bool(results) and results[0].rps >= 2500 and results[0].p99_ms < 50
    if len(results) == 2:
        ok = ok and results[0].rps >= PARITY * results[1].rps
    print(
        f"targets (>= 2500 req/s, p99 < 50 ms, >= {PARITY:g} x grpc.aio):",
        "met" if ok else "NOT met",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
