"""The reservation worker's throughput: SQS messages in, PATCH calls out, deletes.

    python -m paysim.benchmarks.worker [--events 20000] [--concurrency 8,16,64]
                                       [--pollers 4] [--json FILE]

A benchmark, not a test: it reports what it reaches and exits 0. It runs a
real ``ReservationWorker`` (the production code path: threads for every SQS
call, parsing, de-duplication, metrics, batched deletes) with the HTTP client
``paysim.worker.reservations.make_http_client`` builds, in two processes on loopback:

* **this process**, pinned to core 0: the worker, fed by ``FakeSqs``, an
  in-process SQS client with boto3's method names that serves pre-built
  EventBridge envelopes (``Payment Status Updated``, COMPLETED, a unique
  event and reservation id each) in batches of 10 and counts deletes. It
  answers at once: a real queue's latency is not what is measured, the
  worker's CPU is. moto's server cannot stand in here: a colleague measured
  221 s just to fill a queue with 5,000 messages, far below the rate to
  measure.
* **the PATCH stub** (``--stub PORT``, pinned to core 1 with ``taskset -c
  1``): a lean asyncio HTTP/1.1 server (Content-Length bodies, keep-alive)
  that answers every request 200 with a tiny JSON body and counts them.

For each concurrency (``WorkerSettings.concurrency``: messages handled at
once, which is also the number of PATCH calls in flight) it runs twice: with
RESERVATION_API_URL (every event is a PATCH) and without (the decision is
logged instead: the worker's cost without the HTTP client). Logging is
configured as in production (JSON, level info) and written to /dev/null.
Each measured run follows an unmeasured one of 2,000 events (caches,
first-use costs) and ends when its last message is deleted. Reported:
events/s, worker CPU per event (the whole process, threads included, from
``time.process_time``), the stub's CPU per event (from ``/proc``), and a
check that every event was confirmed and no call failed.

Measured on two cores (shared with other work: three runs each, 20,000
events per run, concurrency 8 / 16 / 64), events/s and worker CPU per event:

* httpx: 1,260-1,379 / 1,192-1,276 / 968-1,114 events/s at 722-772 /
  779-832 / 895-1,008 µs;
* ``Http1Client``: 5,356-6,195 / 5,308-6,321 / 5,342-6,057 events/s at
  158-187 µs whatever the concurrency;
* without RESERVATION_API_URL: 8,300 to 17,000 events/s at 58-69 µs (the
  CPU is not saturated there: the thread hand-offs of the SQS calls set the
  pace, and they vary with what else the machine does).

Linux only (``taskset``, ``sched_setaffinity``, ``/proc``); needs two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from paysim.config import AwsSettings, WorkerSettings
from paysim.domain.events import DETAIL_TYPE, EVENT_TYPE
from paysim.loadgen.ports import wait_port
from paysim.loadgen.spawn import free_port
from paysim.observability import logging as paysim_logging
from paysim.worker.consumer import ReservationWorker
from paysim.worker.metrics import FAILURE_REASONS
from paysim.worker.reservations import make_http_client

WORKER_CORE, STUB_CORE = 0, 1
QUEUE_URL = "https://sqs.bench.invalid/000000000000/reservations"
WARMUP_EVENTS = 2_000
EMPTY_POLL_S = 0.05  # an empty long poll returns after this (the real one waits 20 s)
STUB_MAX_LIFETIME_S = 3600.0


# --- the fake queue ----------------------------------------------------------------


def envelope(n: int, source: str) -> str:
    """The SQS body of one ``Payment Status Updated`` event (a COMPLETED payment)."""
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": DETAIL_TYPE,
            "source": source,
            "account": "000000000000",
            "time": "2024-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": {
                "payment_id": f"pi_bench_{n}",
                "reservation_id": f"rsv-bench-{n}",
                "user_id": "user-bench",
                "status": "PAYMENT_STATUS_COMPLETED",
                "amount": 100_000,
                "currency": "KRW",
                "timestamp": 1_700_000_000,
                "event_type": EVENT_TYPE,
            },
        }
    )


class FakeSqs:
    """An in-process SQS client (boto3's method names), called from the worker's threads.

    Serves ``bodies`` in order, at most 10 per ReceiveMessage; an empty queue
    answers after EMPTY_POLL_S. ``done`` is set (through ``token``) once
    ``len(bodies)`` messages were deleted.
    """

    def __init__(self, bodies: Sequence[str], token: trio.lowlevel.TrioToken) -> None:
        self._lock = threading.Lock()
        self._bodies = list(bodies)
        self._next = 0
        self._token = token
        self.deleted = 0
        self.done = trio.Event()

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": {"VisibilityTimeout": "30", "RedrivePolicy": "{}"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            start = self._next
            self._next = end = min(len(self._bodies), start + kwargs["MaxNumberOfMessages"])
        if start == end:
            time.sleep(EMPTY_POLL_S)
        return {
            "Messages": [
                {
                    "MessageId": f"m{i}",
                    "ReceiptHandle": f"rh{i}",
                    "Body": self._bodies[i],
                    "Attributes": {"ApproximateReceiveCount": "1"},
                }
                for i in range(start, end)
            ]
        }

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        entries = kwargs["Entries"]
        with self._lock:
            self.deleted += len(entries)
            finished = self.deleted == len(self._bodies)
        if finished:
            self._token.run_sync_soon(self.done.set)
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]], "Failed": []}


# --- one measured run ----------------------------------------------------------------


@dataclass
class Run:
    concurrency: int
    patch: bool  # with RESERVATION_API_URL
    events: int
    seconds: float
    events_per_s: float
    worker_cpu_us_per_event: float
    stub_cpu_us_per_event: float
    confirmed: int
    failures: int


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run_once(settings: WorkerSettings, events: int) -> tuple[float, float, int, int]:
    """Seconds, worker CPU seconds, confirmed, failures for ``events`` messages."""
    source = AwsSettings.event_source
    sqs = FakeSqs([envelope(n, source) for n in range(events)], trio.lowlevel.current_trio_token())
    async with make_http_client(settings) as http, trio.open_nursery() as nursery:
        worker = ReservationWorker(settings, sqs, http)
        wall, cpu = time.perf_counter(), time.process_time()
        await nursery.start(worker.run)
        await sqs.done.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        nursery.cancel_scope.cancel()
    registry = worker.metrics.registry
    confirmed = registry.get_sample_value(
        "paysim_worker_messages_handled_total", {"outcome": "confirmed"}
    )
    failures = sum(
        registry.get_sample_value("paysim_worker_failures_total", {"reason": r}) or 0.0
        for r in FAILURE_REASONS
    )
    return wall, cpu, int(confirmed or 0), int(failures)


def measure(concurrency: int, url: str | None, events: int, pollers: int, stub_pid: int) -> Run:
    settings = WorkerSettings(
        queue_url=QUEUE_URL,
        reservation_api_url=url,
        reservation_timeout_s=5.0,
        pollers=pollers,
        concurrency=concurrency,
        wait_time_s=20,
    )
    trio.run(_run_once, settings, WARMUP_EVENTS)
    stub_cpu = _proc_cpu_s(stub_pid)
    seconds, cpu, confirmed, failures = trio.run(_run_once, settings, events)
    stub_cpu = _proc_cpu_s(stub_pid) - stub_cpu
    return Run(
        concurrency=concurrency,
        patch=url is not None,
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds, 1),
        worker_cpu_us_per_event=round(cpu / events * 1e6, 1),
        stub_cpu_us_per_event=round(stub_cpu / events * 1e6, 1),
        confirmed=confirmed,
        failures=failures,
    )


# --- the PATCH stub (its own process) ------------------------------------------------

_ANSWER = b'{"ok":true}'
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_ANSWER),
    _ANSWER,
)
_CLOSE = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _StubProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1: Content-Length bodies, keep-alive, pipelining; answers 200."""

    count = 0  # requests answered, over every connection

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buf += data
        out = bytearray()
        while (end := self._buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buf[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    if not value.strip().isdigit():
                        self._transport.write(bytes(out) + _CLOSE)
                        self._transport.close()
                        return
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                break
            del self._buf[: end + 4 + length]
            if head.startswith(b"get /stats "):
                stats = b'{"requests":%d}' % _StubProtocol.count
                out += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(stats), stats)
                continue
            _StubProtocol.count += 1
            out += _RESPONSE
        if out:
            self._transport.write(bytes(out))


async def _serve_stub(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(_StubProtocol, "127.0.0.1", port, backlog=1024)
    parent = os.getppid()
    deadline = loop.time() + STUB_MAX_LIFETIME_S
    try:
        while not stop.is_set() and loop.time() < deadline and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        server.close()


def _stub_requests(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
        return int(json.loads(answer.read())["requests"])


# --- main --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paysim.benchmarks.worker")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", default="8,16,64", help="comma-separated")
    parser.add_argument("--pollers", type=int, default=WorkerSettings.pollers)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stub is not None:
        asyncio.run(_serve_stub(args.stub))
        return 0
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs Linux with taskset and at least two cores")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    os.sched_setaffinity(0, {WORKER_CORE})
    paysim_logging.configure("info", json=True, stream=open(os.devnull, "w"))  # noqa: SIM115
    port = free_port()
    stub = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(STUB_CORE),
            sys.executable,
            "-m",
            "paysim.benchmarks.worker",
            "--stub",
            str(port),
        ]
    )
    runs: list[Run] = []
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        print(
            f"worker on core {WORKER_CORE}, PATCH stub on core {STUB_CORE}; "
            f"{args.events} events per run, pollers={args.pollers}",
            flush=True,
        )
        print(
            f"{'concurrency':>11} {'PATCH':>5} {'events/s':>9} {'worker µs/ev':>13} "
            f"{'stub µs/ev':>11} {'confirmed':>9} {'failures':>8}"
        )
        for patch in (True, False):
            for concurrency in concurrencies:
                before = _stub_requests(port)
                run = measure(
                    concurrency, url if patch else None, args.events, args.pollers, stub.pid
                )
                calls = _stub_requests(port) - before
                expected = (args.events + WARMUP_EVENTS) if patch else 0
                if calls != expected:
                    print(f"  warning: the stub saw {calls} PATCH calls, expected {expected}")
                runs.append(run)
                print(
                    f"{run.concurrency:>11} {'yes' if patch else 'no':>5} "
                    f"{run.events_per_s:>9,.0f} {run.worker_cpu_us_per_event:>13,.0f} "
                    f"{run.stub_cpu_us_per_event:>11,.0f} {run.confirmed:>9} {run.failures:>8}",
                    flush=True,
                )
    finally:
        stub.send_signal(signal.SIGTERM)
        try:
            stub.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stub.kill()
            stub.wait()
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
