"""A Redis outage under load: ``paysim serve`` must live through it and lose nothing.

``python -m paysim.benchmarks.outage --outage 1`` (or 30): a durable
``redis-server`` of its own on a free port (every write in the append-only
file before it answers), ``paysim serve`` on it (``loadgen.spawn``), and
CreatePaymentIntent from stock grpcio clients (``--clients`` threads, each
call in turn) for ``--before`` s; then redis-server is SIGKILLed, kept down for
``--outage`` s while the load goes on, and started again on the same port with
its data; the load runs ``--after`` s more. Then every payment whose create
answered OK is read back (GetPaymentStatus) until all are settled, or
``--settle-timeout`` passes. ``/readyz`` is sampled all along.

It prints (and ``--json`` keeps) the calls and their status codes before,
during and after the outage, how long readiness said not ready, the time from
the restart to the first successful create, and whether every acknowledged
payment resolved; the exit status is 1 if the server exited or any
acknowledged payment did not resolve. Every payment resolves DEFAULT_DELAY_MS
(``--delay-ms``, 2 s) after its create, so in a 30 s outage timers fire while
Redis is away.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_pb2 as pb
from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.loadgen.ports import wait_port
from paysim.loadgen.spawn import free_port, spawned_server

SETTLED = {
    pb.PAYMENT_STATUS_COMPLETED,
    pb.PAYMENT_STATUS_FAILED,
    pb.PAYMENT_STATUS_CANCELLED,
    pb.PAYMENT_STATUS_REFUNDED,
    pb.PAYMENT_STATUS_EXPIRED,
}
_OPTIONS = [("grpc.enable_http_proxy", 0)]


class DurableRedis:
    """A redis-server that can be SIGKILLed and started again on its port, with its data."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self._args = [
            "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)),
        ]
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return process

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        self.process = self._start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


@dataclass
class Phase:
    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)


@dataclass
class Load:
    """The clients' record: per phase, the calls and their codes; the acknowledged ids."""

    phase: str = "before"
    phases: dict[str, Phase] = field(
        default_factory=lambda: {p: Phase() for p in ("before", "during", "after")}
    )
    acknowledged: list[str] = field(default_factory=list)
    first_ok_after_restart: float | None = None
    restarted_at: float | None = None
    details: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, code: str, pid: str = "", detail: str = "") -> None:
        with self.lock:
            phase = self.phases[self.phase]
            phase.calls += 1
            phase.codes[code] += 1
            if pid:
                self.acknowledged.append(pid)
                if self.restarted_at is not None and self.first_ok_after_restart is None:
                    self.first_ok_after_restart = time.monotonic() - self.restarted_at
            if detail and len(self.details) < 5:
                self.details.add(detail)


def _client(target: str, load: Load, stop: threading.Event, n: int) -> None:
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        i = 0
        while not stop.is_set():
            i += 1
            request = pb.CreatePaymentIntentRequest(
                reservation_id=f"rsv_{n}_{i}",
                user_id=f"user_{n}",
                amount=types_pb2.Money(amount=50_000, currency="KRW"),
            )
            try:
                answer = stub.CreatePaymentIntent(request, timeout=5.0)
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() is not None else "UNKNOWN"
                load.record(code, detail=f"{code}: {exc.details()}")
                if code == "UNAVAILABLE":
                    time.sleep(0.01)  # a caller acting on "retry": a short pause first
                continue
            load.record("OK", pid=answer.payment_intent_id)


def _sample_readiness(
    http_port: int, stop: threading.Event, samples: list[tuple[float, bool]]
) -> None:
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
                ready = r.status == 200
        except urllib.error.HTTPError as exc:
            ready = exc.code == 200
        except OSError:
            ready = False
        samples.append((time.monotonic(), ready))
        time.sleep(0.05)


def _not_ready_s(samples: list[tuple[float, bool]]) -> float:
    total = 0.0
    for (t0, ready), (t1, _) in itertools.pairwise(samples):
        if not ready:
            total += t1 - t0
    return total


def _settle(target: str, ids: list[str], timeout_s: float) -> tuple[int, Counter[str], float]:
    """Read every id until all are settled or the time is up: (settled, statuses, seconds)."""
    started = time.monotonic()
    waiting = set(ids)
    statuses: Counter[str] = Counter()
    with grpc.insecure_channel(target, options=_OPTIONS) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        while waiting and time.monotonic() - started < timeout_s:
            for pid in list(waiting):
                try:
                    got = stub.GetPaymentStatus(
                        pb.GetPaymentStatusRequest(payment_intent_id=pid), timeout=5.0
                    )
                except grpc.RpcError:
                    continue
                if got.payment.status in SETTLED:
                    waiting.discard(pid)
                    statuses[pb.PaymentStatus.Name(got.payment.status)] += 1
            if waiting:
                time.sleep(0.2)
    return len(ids) - len(waiting), statuses, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=1.0, help="seconds Redis stays down")
    parser.add_argument("--before", type=float, default=2.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=2_000)
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="paysim-outage-") as workdir:
        redis = DurableRedis(Path(workdir))
        env = {
            "STORE_URL": f"redis://127.0.0.1:{redis.port}/0",
            "DEFAULT_DELAY_MS": str(args.delay_ms),
            "STORE_TIMEOUT_MS": "1000",
            "LOG_LEVEL": "warning",
        }
        try:
            with spawned_server((0, 1), extra_env=env) as server:
                load = Load()
                stop, sampling = threading.Event(), threading.Event()
                samples: list[tuple[float, bool]] = []
                sampler = threading.Thread(
                    target=_sample_readiness, args=(server.http_port, sampling, samples)
                )
                sampler.start()
                clients = [
                    threading.Thread(target=_client, args=(server.target, load, stop, n))
                    for n in range(args.clients)
                ]
                for thread in clients:
                    thread.start()
                time.sleep(args.before)
                redis.kill()
                load.phase = "during"
                time.sleep(args.outage)
                redis.restart()
                load.restarted_at = time.monotonic()
                load.phase = "after"
                time.sleep(args.after)
                stop.set()
                for thread in clients:
                    thread.join()
                settled, statuses, settle_s = _settle(
                    server.target, load.acknowledged, args.settle_timeout
                )
                sampling.set()
                sampler.join()
                alive = server.process.poll() is None
                exit_status = server.process.returncode
        finally:
            redis.stop()

    summary: dict[str, Any] = {
        "outage_s": args.outage,
        "server_alive": alive,
        "server_exit_status": exit_status,
        "phases": {
            name: {"calls": p.calls, "codes": dict(p.codes)} for name, p in load.phases.items()
        },
        "error_details": sorted(load.details),
        "not_ready_s": round(_not_ready_s(samples), 2),
        "first_ok_after_restart_s": (
            round(load.first_ok_after_restart, 3)
            if load.first_ok_after_restart is not None
            else None
        ),
        "acknowledged": len(load.acknowledged),
        "resolved": settled,
        "resolved_statuses": dict(statuses),
        "resolve_wait_s": round(settle_s, 2),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
    }
    print(f"Redis outage of {args.outage:g} s under load ({args.clients} grpcio clients)")
    for name, phase in summary["phases"].items():
        codes = ", ".join(f"{k} {v}" for k, v in sorted(phase["codes"].items()))
        print(f"  {name:>6}: {phase['calls']:>6} calls: {codes}")
    for detail in summary["error_details"]:
        print(f"  error seen: {detail}")
    print(f"  /readyz not ready for {summary['not_ready_s']} s")
    print(f"  first OK create {summary['first_ok_after_restart_s']} s after Redis restarted")
    print(
        f"  acknowledged {summary['acknowledged']}, resolved {settled} "
        f"({dict(statuses)}) {summary['resolve_wait_s']} s after the load stopped"
    )
    print(f"  server alive throughout: {alive}")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0 if alive and settled == len(load.acknowledged) else 1


if __name__ == "__main__":
    sys.exit(main())
