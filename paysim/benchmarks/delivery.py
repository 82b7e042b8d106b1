"""The whole delivery path under a constant arrival rate: creates, webhooks, events.

    python -m paysim.benchmarks.delivery [--rate 1000] [--duration 60] [--delay-ms 2000]
        [--events moto|sink] [--channels 4] [--webhook-concurrency N]
        [--drain-timeout 60] [--json FILE] [--profile-server FILE]

A benchmark, not a test: it reports what it reaches and exits 0. Everything
runs on loopback (127.0.0.1), in up to four processes:

* **the server**, ``python -m paysim serve`` pinned to core 0 (``taskset -c
  0``), as in production (ENVIRONMENT=production: JSON logs, one line per RPC,
  to /dev/null; metrics on) with WEBHOOK_ALLOWED_HOSTS=127.0.0.1 (production
  refuses loopback otherwise) and AWS_ENDPOINT_URL pointing at the events
  endpoint below;
* **moto's server** (``--events moto``, the default) as EventBridge and SQS
  (``python -m moto.server``), with the bus, rule, queue and DLQ made by
  ``paysim.adapters.aws.ensure_resources``; events are counted in the queue;
* **a webhook receiver** (``python -m paysim.benchmarks.delivery --receiver
  PORT OUTFILE``): a lean asyncio HTTP/1.1 server that answers 200 at once,
  records each delivery's arrival wall time, payment id, status and attempt,
  and checks every signature with ``paysim.webhooks.verify``; it writes its
  records to OUTFILE when told to stop (SIGTERM). With ``--events sink`` it
  also stands in for EventBridge: it accepts every PutEvents entry (checking
  source, detail-type and bus) and records its arrival, so events are
  counted per payment and their lag past due is measured too; moto is not
  started;
* **this process**, the load generator: CreatePaymentIntent (scenario
  APPROVE, a webhook_url to the receiver, a unique reservation id each) at a
  constant arrival rate for ``--duration`` seconds, open loop: request ``i``
  is sent at ``start + i / rate`` by the wall clock, whatever the answers do
  (grpcio futures on ``--channels`` connections). How late it sent is
  measured and reported ("send lateness"): if it fell behind, the rate was
  not offered.

Moto, the receiver and this process are pinned to core 1; the fake AWS
credentials ("bench") are set in this process and its children only.

**Moto is far slower than the server.** moto 5.2 spends about 7 ms of CPU per
event routed to SQS (it compiles the default input template's jsonpath
expressions anew for every event) plus a scan of the whole queue on every
SendMessage, so it absorbs well under 100 events/s, fewer as the queue grows.
So it runs niced (``nice -n 19``): it gets only what core 1 leaves idle and
cannot starve the generator and the receiver, but at hundreds of payments
per second events pile up in the server's buffer and most are not in SQS
when the drain times out (reported as such). Because the server then makes
far fewer PutEvents calls than it would against AWS, its CPU is understated
with moto; ``--events sink`` measures the server with every event published
at the rate it is produced.

**Lag past due.** An APPROVE payment completes ``--delay-ms`` after it was
created, which fires its one webhook and its one event. The server's
``created_at`` is recovered exactly from the answer: ``expires_at`` is
``created_at + INTENT_TTL_MS`` (set explicitly here), so ``due = expires_at -
INTENT_TTL + delay``. The lag of a delivery is its arrival time at the
receiver (after the whole request was read) minus ``due``: timer lateness,
queueing in the dispatcher, the HTTP request and the receiver's own delay
all count. Server and receiver read the same wall clock.

After the last create it waits (bounded by ``--drain-timeout`` past the last
due time) until every created payment's webhook has arrived and its event is
in SQS (or at the sink), then reports: creates/s, webhooks (received,
duplicates, missing, signature failures), lag p50/p90/p99/max, events
(published per the server's ``paysim_events_published_total``, in SQS or at
the sink), server CPU (``process_cpu_seconds_total``), CPU per process and
per core in the steady window (from ``/proc``; a warning when other work on
the host took more than 10 % of a core), a per-second timeline (in the
JSON), and every error. ``/metrics`` is scraped once a second during the run
(a few ms of server CPU each).

Linux only (``taskset``, ``nice``, ``/proc``); needs two cores, grpcio and
``moto[server]`` (the dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from paysim.benchmarks.h2load import percentile
from paysim.config import AwsSettings
from paysim.domain.events import DETAIL_TYPE
from paysim.loadgen.ports import wait_port
from paysim.loadgen.scrape import by_label, scrape, series
from paysim.loadgen.spawn import free_port
from paysim.webhooks import WebhookVerificationError, verify

SERVER_CORE = "0"
OTHER_CORE = "1"
SECRET = "paysim-bench-secret"
BENCH_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",  # moto accepts anything; never real keys
    "AWS_SESSION_TOKEN": "bench",
}
REGION = "ap-northeast-2"
BUS_NAME = "paysim-bench-events"
EVENT_SOURCE = "paysim-bench"
INTENT_TTL_MS = 900_000
RECEIVER_PATH = "/webhooks"
RECEIVER_MAX_LIFETIME_S = 3 * 3600.0
TARGET_RATE = 1000.0
TARGET_P99_S = 0.250
FOREIGN_LOAD_WARNING = 0.10  # share of a core used by other processes


# --- the webhook receiver (its own process) ----------------------------------


@dataclass
class _Record:
    kind: str  # "webhook" or "event" (a PutEvents entry, --events sink)
    arrival: float
    payment_id: str
    status: str
    attempt: str
    signature_ok: bool


@dataclass
class _ReceiverState:
    secret: str
    records: list[_Record] = field(default_factory=list)
    webhook_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    signature_failures: int = 0
    bad_requests: int = 0

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes]:
        """Record one request; the HTTP status and body to answer."""
        if method == "POST" and target == RECEIVER_PATH:
            return self._webhook(headers, body), b""
        if method == "POST" and ("x-amz-target", "AWSEvents.PutEvents") in headers:
            return self._put_events(body)
        if method == "GET" and target == "/stats":
            return 200, self.stats()
        self.bad_requests += 1
        return 404, b""

    def _webhook(self, headers: list[tuple[str, str]], body: bytes) -> int:
        arrival = time.time()
        try:
            verify(body, headers, self.secret)
            ok = True
        except WebhookVerificationError:
            ok = False
            self.signature_failures += 1
        try:
            doc = json.loads(body)
            payment_id, status = str(doc["payment_id"]), str(doc["status"])
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            return 400
        attempt = next((v for k, v in headers if k == "x-webhook-attempt"), "")
        self.records.append(_Record("webhook", arrival, payment_id, status, attempt, ok))
        self.webhook_ids.add(payment_id)
        return 200  # also for a bad signature: counted, not retried

    def _put_events(self, body: bytes) -> tuple[int, bytes]:
        """A stand-in for EventBridge's PutEvents (--events sink): accept every entry."""
        arrival = time.time()
        try:
            entries = json.loads(body)["Entries"]
            found = []
            for entry in entries:
                ours = (entry["Source"], entry["DetailType"], entry.get("EventBusName"))
                detail = json.loads(entry["Detail"])
                found.append((ours == (EVENT_SOURCE, DETAIL_TYPE, BUS_NAME), detail))
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            problem = {"__type": "ValidationException", "message": "bad PutEvents body"}
            return 400, json.dumps(problem).encode()
        answers = []
        for ok, detail in found:
            payment_id = str(detail.get("payment_id", ""))
            status = str(detail.get("status", ""))
            self.records.append(_Record("event", arrival, payment_id, status, "", ok))
            self.event_ids.add(payment_id)
            answers.append({"EventId": f"bench-{len(self.records)}"})
        return 200, json.dumps({"FailedEntryCount": 0, "Entries": answers}).encode()

    def stats(self) -> bytes:
        return json.dumps(
            {
                "records": len(self.records),
                "webhooks_unique": len(self.webhook_ids),
                "events_unique": len(self.event_ids),
                "signature_failures": self.signature_failures,
                "bad_requests": self.bad_requests,
            }
        ).encode()

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as out:
            for r in self.records:
                sig = int(r.signature_ok)
                out.write(
                    f"{r.kind}\t{r.arrival:.6f}\t{r.payment_id}\t{r.status}\t{r.attempt}\t{sig}\n"
                )
        tmp.replace(path)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Too Large", 501: "Not Impl"}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class _ReceiverProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for httpx and urllib: Content-Length bodies, keep-alive."""

    def __init__(self, state: _ReceiverState) -> None:
        self._state = state
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        for _ in range(10_000):  # bounded: requests pipelined in one read
            if not self._one_request():
                return

    def _one_request(self) -> bool:
        """Answer the first complete request in the buffer; False when there is none."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                self._answer(431, b"", close=True)
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._answer(400, b"", close=True)
            return False
        headers: list[tuple[str, str]] = []
        length = 0
        close = parts[2] == "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._answer(400, b"", close=True)
                return False
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                if not value.isdigit() or int(value) > _MAX_BODY:
                    self._answer(400, b"", close=True)
                    return False
                length = int(value)
            elif name == "transfer-encoding":
                self._answer(501, b"", close=True)
                return False
            elif name == "connection":
                close = value.lower() == "close"
        total = end + 4 + length
        if len(self._buf) < total:
            return False
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        status, answer = self._state.handle(parts[0], parts[1], headers, body)
        self._answer(status, answer, close=close)
        return not close

    def _answer(self, status: int, body: bytes, *, close: bool) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Content-Type: application/json\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        self._transport.write(head.encode() + body)
        if close:
            self._buf.clear()
            self._transport.close()


async def _receive(port: int, outfile: Path, secret: str) -> None:
    loop = asyncio.get_running_loop()
    state = _ReceiverState(secret)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        lambda: _ReceiverProtocol(state), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    parent = os.getppid()
    deadline = loop.time() + RECEIVER_MAX_LIFETIME_S
    try:
        while not stop.is_set() and loop.time() < deadline and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        server.close()
        state.write(outfile)


def run_receiver(port: int, outfile: Path) -> int:
    asyncio.run(_receive(port, outfile, SECRET))
    return 0


# --- processes -----------------------------------------------------------------


def _spawn(
    core: str, cmd: list[str], env: dict[str, str], *, nice: bool = False
) -> subprocess.Popen[bytes]:
    # taskset and nice exec the command: the pid is the command's own.
    prefix = ["taskset", "-c", core, *(["nice", "-n", "19"] if nice else [])]
    return subprocess.Popen(
        [*prefix, *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches us only; we stop them in order
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if this process dies (even by SIGKILL)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc; nan when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _core_busy() -> dict[str, tuple[float, float, float]]:
    """Per core: (busy, of which irq and softirq, total) jiffies from /proc/stat."""
    out: dict[str, tuple[float, float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            name, *values = line.split()
            numbers = [float(v) for v in values[:8]]
            idle = numbers[3] + numbers[4]
            out[name] = (sum(numbers) - idle, numbers[5] + numbers[6], sum(numbers))
    return out


def _receiver_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats: dict[str, int] = json.loads(r.read())
        return stats


# --- the load ---------------------------------------------------------------------


@dataclass
class _Load:
    """What the generator recorded, per request index."""

    n: int
    sent: list[float] = field(default_factory=list)  # wall time the call was made
    answered: list[float] = field(default_factory=list)
    due: list[float] = field(default_factory=list)  # created_at + delay (server's clock)
    payment_ids: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    lateness: list[float] = field(default_factory=list)  # sent - scheduled, seconds
    issued: int = 0
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sent = [math.nan] * self.n
        self.answered = [math.nan] * self.n
        self.due = [math.nan] * self.n
        self.payment_ids = [""] * self.n
        self.lateness = [math.nan] * self.n

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def _generate(
    stubs: list[Any], url: str, rate: float, duration: float, delay_s: float, run_id: str
) -> tuple[_Load, float]:
    """Send ``rate * duration`` creates open loop; returns the record and the start (wall)."""
    import grpc

    from paysim._proto.proto.common.v1 import types_pb2
    from paysim._proto.proto.payment.v1 import payment_pb2

    n = round(rate * duration)
    load = _Load(n)
    ttl_s = INTENT_TTL_MS / 1000.0
    amount = types_pb2.Money(amount=100_000, currency="KRW")
    approve = payment_pb2.PAYMENT_SCENARIO_APPROVE

    def on_done(i: int, future: Any) -> None:
        load.answered[i] = time.time()
        try:
            response = future.result()
        except grpc.RpcError as exc:
            load.error(f"grpc {exc.code().name}")
        except Exception as exc:  # cancelled, or a bug in a callback: counted
            load.error(type(exc).__name__)
        else:
            if response.HasField("error") or not response.payment_intent_id:
                load.error(f"app {response.error.code}")
            else:
                load.payment_ids[i] = response.payment_intent_id
                load.due[i] = response.expires_at.ToNanoseconds() / 1e9 - ttl_s + delay_s
        with load.lock:
            load.done += 1

    # Build the requests first: the loop below only sends.
    requests: list[Any] = [
        payment_pb2.CreatePaymentIntentRequest(
            reservation_id=f"rsv_{run_id}_{i}",
            user_id=f"user_bench_{i % 1000}",
            amount=amount,
            scenario=approve,
            webhook_url=url,
        )
        for i in range(n)
    ]
    mono0 = time.monotonic() + 0.2
    wall0 = time.time() + (mono0 - time.monotonic())
    give_up_at = mono0 + duration * 2 + 30  # a generator this late has long stopped measuring
    i = 0
    while i < n:
        now = time.monotonic()
        if now > give_up_at:
            load.error("not sent: generator too far behind")
            break
        scheduled = mono0 + i / rate
        if scheduled > now:
            time.sleep(min(scheduled - now, 0.05))
            continue
        while i < n and mono0 + i / rate <= now:  # every call that is due by now
            load.lateness[i] = time.monotonic() - (mono0 + i / rate)
            load.sent[i] = time.time()
            future = stubs[i % len(stubs)].CreatePaymentIntent.future(requests[i], timeout=30)
            future.add_done_callback(lambda f, i=i: on_done(i, f))
            requests[i] = None
            i += 1
    load.issued = i
    wait_until = time.monotonic() + 35  # the calls' own timeout is 30 s
    while load.done < load.issued and time.monotonic() < wait_until:
        time.sleep(0.05)
    if load.done < load.issued:
        with load.lock:
            load.errors["no answer"] = load.issued - load.done
    return load, wall0


# --- sampling during the run ------------------------------------------------------


@dataclass
class _Sample:
    t: float
    cpu: dict[str, float]  # process name -> cpu seconds so far
    cores: dict[str, tuple[float, float, float]]
    metrics: dict[str, float]


class _Sampler:
    def __init__(self, pids: dict[str, int], http_port: int, period: float = 1.0) -> None:
        self.pids = pids
        self.http_port = http_port
        self.period = period
        self.samples: list[_Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> _Sample:
        cpu = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        cpu["generator"] = sum(os.times()[:2])
        try:
            metrics = scrape(self.http_port)
        except OSError:
            metrics = {}
        s = _Sample(time.time(), cpu, _core_busy(), metrics)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        for _ in range(100_000):  # bounded; stopped long before
            if self._stop.wait(self.period):
                return
            self.sample()

    def __enter__(self) -> _Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def window(self, start: float, end: float) -> tuple[_Sample, _Sample] | None:
        inside = [s for s in self.samples if start <= s.t <= end]
        return (inside[0], inside[-1]) if len(inside) >= 2 else None


# --- the benchmark ---------------------------------------------------------------


@dataclass
class Report:
    rate_requested: float
    duration_s: float
    delay_ms: int
    channels: int
    events_mode: str  # "moto" (EventBridge -> rule -> SQS) or "sink" (PutEvents stand-in)
    creates_requested: int
    creates_sent: int
    creates_ok: int
    create_errors: dict[str, int]
    send_rate: float  # calls made per second, over the sending window
    create_rate: float  # successful creates per second, over the sending window
    send_lateness_p99_ms: float
    send_lateness_max_ms: float
    create_latency_p50_ms: float
    create_latency_p99_ms: float
    webhooks_received: int
    webhooks_unique: int
    webhooks_duplicate: int
    webhooks_missing: int
    webhooks_unknown: int
    signature_failures: int
    receiver_bad_requests: int
    lag_p50_ms: float
    lag_p90_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_min_ms: float
    lag_over_target: int
    server_webhooks: dict[str, float]
    server_webhook_attempts: dict[str, float]
    events_published: float  # paysim_events_published_total during the run
    events_landed: int  # payments with their event in SQS (moto) or at the sink
    events_dlq: int
    events_foreign: int  # sink entries not from our source/bus
    event_lag_p50_ms: float  # due -> accepted by the sink (sink only)
    event_lag_p99_ms: float
    events_failed_attempts: dict[str, float]
    events_dropped: float
    events_backlog_end: float
    events_backlog_max: float
    server_cpu_s: float
    server_cpu_per_load_s: float
    steady_window_s: float
    steady_cpu: dict[str, float]  # process -> share of one core in the steady window
    steady_cores: dict[str, float]  # core -> busy share in the steady window
    irq_cores: dict[str, float]  # core -> share in irq and softirq (loopback TCP, mostly)
    foreign_cores: dict[str, float]  # core -> busy share neither ours nor irq
    drained: bool
    drain_s: float
    target_met: bool
    timeline: list[dict[str, float]]


def _stats_ms(values: list[float]) -> tuple[float, float, float, float, float]:
    """p50, p90, p99, max, min in milliseconds."""
    ms = sorted(v * 1000.0 for v in values)
    if not ms:
        return (math.nan,) * 5
    return (percentile(ms, 0.50), percentile(ms, 0.90), percentile(ms, 0.99), ms[-1], ms[0])


def _read_records(path: Path) -> list[_Record]:
    out: list[_Record] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        kind, arrival, payment_id, status, attempt, sig = line.split("\t")
        out.append(_Record(kind, float(arrival), payment_id, status, attempt, sig == "1"))
    return out


def _queue_count(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def _wait_until(predicate: Callable[[], bool], deadline: float, period: float = 0.5) -> bool:
    for _ in range(1_000_000):  # bounded by the deadline long before
        try:
            if predicate():
                return True
        except Exception:  # a failed poll (receiver or moto busy): try again
            pass
        if time.time() >= deadline:
            return False
        time.sleep(period)
    return False


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started processes, stopped in reverse order however the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                _stop(proc)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@dataclass
class _Outcome:
    """What ``bench`` collected, for ``_report``."""

    load: _Load
    wall0: float
    records: list[_Record]
    sampler: _Sampler
    before: _Sample
    after: _Sample
    sqs_messages: int
    dlq_messages: int
    receiver_stats: dict[str, int]
    drained: bool
    drain_s: float


def bench(args: argparse.Namespace, workdir: Path) -> _Outcome:
    import grpc
    import trio

    from paysim._proto.proto.payment.v1 import payment_pb2_grpc
    from paysim.adapters.aws import ensure_resources, make_client

    os.sched_setaffinity(0, {int(OTHER_CORE)})  # threads started from now on inherit it
    os.environ.update(BENCH_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    aws = AwsSettings(region=REGION, event_bus_name=BUS_NAME, event_source=EVENT_SOURCE)
    delay_s = args.delay_ms / 1000.0
    receiver_port, grpc_port, http_port = free_port(), free_port(), free_port()
    env = {**os.environ, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
    with _processes() as procs:
        pids: dict[str, int] = {}
        sqs: Any = None
        queue_url = dlq_url = ""
        if args.events == "moto":
            moto_port = free_port()
            endpoint = f"http://127.0.0.1:{moto_port}"
            moto_cmd = [
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(moto_port),
            ]
            # Niced: moto cannot keep up with 1,000 events/s (see the module docstring);
            # on core 1 it must not starve the load generator and the receiver.
            procs.append(moto := _spawn(OTHER_CORE, moto_cmd, env, nice=True))
            pids["moto"] = moto.pid
            wait_port(moto_port, 30)
            events = make_client("events", aws, endpoint)
            sqs = make_client("sqs", aws, endpoint)
            resources = trio.run(ensure_resources, events, sqs, aws)
            queue_url, dlq_url = resources.queue_url, resources.dlq_url
        else:
            endpoint = f"http://127.0.0.1:{receiver_port}"  # the receiver answers PutEvents

        outfile = workdir / "records.tsv"
        receiver_cmd = [sys.executable, "-m", "paysim.benchmarks.delivery", "--receiver"]
        receiver_cmd += [str(receiver_port), str(outfile)]
        procs.append(receiver := _spawn(OTHER_CORE, receiver_cmd, env))
        pids["receiver"] = receiver.pid

        server_env = {
            **env,
            "ENVIRONMENT": "production",
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": str(grpc_port),
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "AWS_ENDPOINT_URL": endpoint,
            "EVENT_BUS_NAME": BUS_NAME,
            "PAYMENT_EVENT_SOURCE": EVENT_SOURCE,
            "DEFAULT_DELAY_MS": str(args.delay_ms),
            "INTENT_TTL_MS": str(INTENT_TTL_MS),
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",  # production refuses loopback otherwise
            "SHUTDOWN_GRACE_MS": "5000",
        }
        if args.webhook_concurrency is not None:
            server_env["WEBHOOK_CONCURRENCY"] = str(args.webhook_concurrency)
        serve = [sys.executable, "-m", "paysim", "serve"]
        if args.profile_server:  # cProfile writes the file when the server exits
            serve[1:1] = ["-m", "cProfile", "-o", str(args.profile_server.resolve())]
        procs.append(server := _spawn(SERVER_CORE, serve, server_env))
        pids["server"] = server.pid
        for port in (receiver_port, grpc_port, http_port):
            wait_port(port, 30)

        def webhooks_in(n: int) -> bool:
            return _receiver_stats(receiver_port)["webhooks_unique"] >= n

        def events_in(n: int) -> bool:
            if args.events == "moto":
                return _queue_count(sqs, queue_url) >= n
            return _receiver_stats(receiver_port)["events_unique"] >= n

        options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options)
            for _ in range(args.channels)
        ]
        try:
            for channel in channels:
                grpc.channel_ready_future(channel).result(timeout=10)
            stubs = [payment_pb2_grpc.PaymentServiceStub(c) for c in channels]
            url = f"http://127.0.0.1:{receiver_port}{RECEIVER_PATH}"
            with _Sampler(pids, http_port) as sampler:
                before = sampler.sample()
                run_id = f"{os.getpid()}_{int(time.time())}"
                load, wall0 = _generate(stubs, url, args.rate, args.duration, delay_s, run_id)
                ok = sum(1 for p in load.payment_ids if p)
                drain_start = time.time()
                deadline = max(drain_start, wall0 + args.duration + delay_s) + args.drain_timeout
                drained = _wait_until(lambda: webhooks_in(ok), deadline)
                drained = _wait_until(lambda: events_in(ok), deadline) and drained
                drain_s = time.time() - drain_start
                after = sampler.sample()
        finally:
            for channel in channels:
                channel.close()
        sqs_messages = _queue_count(sqs, queue_url) if sqs is not None else 0
        dlq_messages = _queue_count(sqs, dlq_url) if sqs is not None else 0
        receiver_stats = _receiver_stats(receiver_port)
        _stop(receiver)
        records = _read_records(outfile)

    return _Outcome(
        load=load,
        wall0=wall0,
        records=records,
        sampler=sampler,
        before=before,
        after=after,
        sqs_messages=sqs_messages,
        dlq_messages=dlq_messages,
        receiver_stats=receiver_stats,
        drained=drained,
        drain_s=drain_s,
    )


def _report(args: argparse.Namespace, o: _Outcome) -> Report:
    load, wall0 = o.load, o.wall0
    delay_s = args.delay_ms / 1000.0
    due = {p: d for p, d in zip(load.payment_ids, load.due, strict=True) if p}
    first: dict[str, float] = {}
    first_event: dict[str, float] = {}
    unknown = foreign = webhooks = 0
    for r in o.records:
        if r.kind == "event":
            foreign += not r.signature_ok
            if r.payment_id in due and r.payment_id not in first_event:
                first_event[r.payment_id] = r.arrival
            continue
        webhooks += 1
        if r.payment_id not in due:
            unknown += 1
        elif r.payment_id not in first or r.arrival < first[r.payment_id]:
            first[r.payment_id] = r.arrival
    lags = [arrival - due[p] for p, arrival in first.items()]
    lag = _stats_ms(lags)
    event_lag = _stats_ms([arrival - due[p] for p, arrival in first_event.items()])

    sent = [t for t in load.sent if not math.isnan(t)]
    window = (max(sent) - wall0 + 1.0 / args.rate) if sent else math.nan
    ok = len(due)
    latency = [
        a - s for s, a, p in zip(load.sent, load.answered, load.payment_ids, strict=True) if p
    ]
    lateness = [x for x in load.lateness if not math.isnan(x)]
    _, _, late_p99, late_max, _ = _stats_ms(lateness)
    lat_p50, _, lat_p99, _, _ = _stats_ms(latency)

    m0, m1 = o.before.metrics, o.after.metrics
    cpu_s = series(m1, "process_cpu_seconds_total") - series(m0, "process_cpu_seconds_total")
    # The steady window: creates and their webhooks both flowing.
    start, end = wall0 + delay_s + 1.0, wall0 + args.duration
    if end - start < 2.0:
        start, end = wall0, wall0 + args.duration + delay_s
    steady = o.sampler.window(start, end)
    steady_cpu: dict[str, float] = {}
    steady_cores: dict[str, float] = {}
    irq_cores: dict[str, float] = {}
    foreign_cores: dict[str, float] = {}
    steady_s = 0.0
    if steady is not None:
        a, b = steady
        steady_s = b.t - a.t
        steady_cpu = {k: (b.cpu[k] - a.cpu[k]) / steady_s for k in a.cpu}
        for core, (busy, irq, total) in b.cores.items():
            busy0, irq0, total0 = a.cores.get(core, (0.0, 0.0, 0.0))
            steady_cores[core] = (busy - busy0) / max(1.0, total - total0)
            irq_cores[core] = (irq - irq0) / max(1.0, total - total0)
        ours = {
            f"cpu{SERVER_CORE}": steady_cpu.get("server", 0.0),
            f"cpu{OTHER_CORE}": sum(v for k, v in steady_cpu.items() if k != "server"),
        }
        foreign_cores = {
            k: max(0.0, v - ours.get(k, 0.0) - irq_cores.get(k, 0.0))
            for k, v in steady_cores.items()
        }

    timeline: list[dict[str, float]] = []
    prev: _Sample | None = None
    for s in sorted(o.sampler.samples, key=lambda x: x.t):
        if prev is not None and s.t > prev.t:
            dt = s.t - prev.t
            m = s.metrics
            point = {"t": round(s.t - wall0, 2)}
            for name in s.cpu:
                point[f"cpu_{name}"] = round((s.cpu[name] - prev.cpu[name]) / dt, 3)
            point.update(
                creates=series(m, "paysim_payments_created_total"),
                delivered=series(m, "paysim_webhook_deliveries_total", outcome="delivered"),
                webhook_queue=series(m, "paysim_webhook_queue_depth"),
                events_published=series(m, "paysim_events_published_total"),
                events_backlog=series(m, "paysim_events_backlog"),
            )
            timeline.append(point)
        prev = s

    landed = o.sqs_messages if args.events == "moto" else len(first_event)
    report = Report(
        rate_requested=args.rate,
        duration_s=args.duration,
        delay_ms=args.delay_ms,
        channels=args.channels,
        events_mode=args.events,
        creates_requested=load.n,
        creates_sent=load.issued,
        creates_ok=ok,
        create_errors=dict(load.errors),
        send_rate=load.issued / window if window else math.nan,
        create_rate=ok / window if window else math.nan,
        send_lateness_p99_ms=late_p99,
        send_lateness_max_ms=late_max,
        create_latency_p50_ms=lat_p50,
        create_latency_p99_ms=lat_p99,
        webhooks_received=webhooks,
        webhooks_unique=len(first),
        webhooks_duplicate=webhooks - len(first) - unknown,
        webhooks_missing=ok - len(first),
        webhooks_unknown=unknown,
        signature_failures=sum(not r.signature_ok for r in o.records if r.kind == "webhook"),
        receiver_bad_requests=o.receiver_stats.get("bad_requests", 0),
        lag_p50_ms=lag[0],
        lag_p90_ms=lag[1],
        lag_p99_ms=lag[2],
        lag_max_ms=lag[3],
        lag_min_ms=lag[4],
        lag_over_target=sum(x > TARGET_P99_S for x in lags),
        server_webhooks=by_label(m1, "paysim_webhook_deliveries_total", "outcome"),
        server_webhook_attempts=by_label(m1, "paysim_webhook_attempts_total", "result"),
        events_published=series(m1, "paysim_events_published_total")
        - series(m0, "paysim_events_published_total"),
        events_landed=landed,
        events_dlq=o.dlq_messages,
        events_foreign=foreign,
        event_lag_p50_ms=event_lag[0],
        event_lag_p99_ms=event_lag[2],
        events_failed_attempts=by_label(m1, "paysim_events_failed_attempts_total", "reason"),
        events_dropped=series(m1, "paysim_events_dropped_total"),
        events_backlog_end=series(m1, "paysim_events_backlog"),
        events_backlog_max=max((p["events_backlog"] for p in timeline), default=math.nan),
        server_cpu_s=cpu_s,
        server_cpu_per_load_s=cpu_s / args.duration,
        steady_window_s=steady_s,
        steady_cpu=steady_cpu,
        steady_cores=steady_cores,
        irq_cores=irq_cores,
        foreign_cores=foreign_cores,
        drained=o.drained,
        drain_s=o.drain_s,
        target_met=False,
        timeline=timeline,
    )
    report.target_met = (
        args.rate >= TARGET_RATE
        and args.duration >= 60
        and report.create_rate >= 0.99 * TARGET_RATE
        and not report.create_errors
        and report.webhooks_missing == 0
        and report.signature_failures == 0
        and report.events_landed >= ok
        and report.lag_p99_ms < TARGET_P99_S * 1000
    )
    return report


def _print(r: Report) -> None:
    def row(name: str, value: str) -> None:
        print(f"  {name:<40}{value}")

    def pct(shares: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in sorted(shares.items()))

    print(
        f"delivery benchmark: {r.rate_requested:g} creates/s offered for {r.duration_s:g} s, "
        f"delay {r.delay_ms} ms, {r.channels} gRPC connections, events to {r.events_mode}"
    )
    row(
        "creates sent / ok / requested",
        f"{r.creates_sent} / {r.creates_ok} / {r.creates_requested}",
    )
    row("send rate, creates/s achieved", f"{r.send_rate:.1f}, {r.create_rate:.1f}")
    row(
        "send lateness p99 / max", f"{r.send_lateness_p99_ms:.1f} / {r.send_lateness_max_ms:.1f} ms"
    )
    lat = f"{r.create_latency_p50_ms:.1f} / {r.create_latency_p99_ms:.1f} ms"
    row("create latency p50 / p99", lat)
    row("create errors", json.dumps(r.create_errors) if r.create_errors else "none")
    row("webhooks received (unique payments)", f"{r.webhooks_received} ({r.webhooks_unique})")
    hooks = f"{r.webhooks_missing} / {r.webhooks_duplicate} / {r.webhooks_unknown}"
    row("webhooks missing / duplicate / unknown", hooks)
    row("signature failures", str(r.signature_failures))
    lag = f"{r.lag_p50_ms:.1f} / {r.lag_p90_ms:.1f} / {r.lag_p99_ms:.1f} ms"
    row("webhook lag past due p50 / p90 / p99", lag)
    row("webhook lag past due min / max", f"{r.lag_min_ms:.1f} / {r.lag_max_ms:.1f} ms")
    row(f"webhooks over {TARGET_P99_S * 1000:.0f} ms late", str(r.lag_over_target))
    row("server webhook outcomes", json.dumps(r.server_webhooks))
    row("server webhook attempts", json.dumps(r.server_webhook_attempts))
    row("events published (server metric)", f"{r.events_published:.0f}")
    where = "in SQS (DLQ)" if r.events_mode == "moto" else "at the sink (foreign)"
    extra = r.events_dlq if r.events_mode == "moto" else r.events_foreign
    row(f"events {where}", f"{r.events_landed} ({extra})")
    if r.events_mode == "sink":
        row(
            "event lag past due p50 / p99",
            f"{r.event_lag_p50_ms:.1f} / {r.event_lag_p99_ms:.1f} ms",
        )
    failed = json.dumps(r.events_failed_attempts)
    row("events failed attempts / dropped", f"{failed} / {r.events_dropped:.0f}")
    row("events backlog max / at end", f"{r.events_backlog_max:.0f} / {r.events_backlog_end:.0f}")
    row("server CPU s (per load s)", f"{r.server_cpu_s:.1f} ({r.server_cpu_per_load_s:.2f})")
    row(f"steady CPU, {r.steady_window_s:.0f} s window", pct(r.steady_cpu))
    row("steady core busy", pct(r.steady_cores))
    row("  of which irq+softirq / other work", f"{pct(r.irq_cores)} / {pct(r.foreign_cores)}")
    row("drained in", f"{r.drain_s:.1f} s" + ("" if r.drained else " (TIMED OUT)"))
    busy = {k: v for k, v in r.foreign_cores.items() if v > FOREIGN_LOAD_WARNING}
    if busy:
        print(f"  WARNING: other work used {pct(busy)} in the steady window; rerun on a quiet host")
    print(
        f"target ({TARGET_RATE:g}/s for 60 s, all delivered and published, webhook lag p99 < "
        f"{TARGET_P99_S * 1000:.0f} ms):",
        "met" if r.target_met else "NOT met",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="creates per second")
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
    parser.add_argument("--receiver", nargs=2, metavar=("PORT", "OUTFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        return run_receiver(int(args.receiver[0]), Path(args.receiver[1]))
    if not (args.rate > 0 and args.duration > 0 and args.channels > 0 and args.delay_ms >= 0):
        parser.error("--rate, --duration and --channels must be positive, --delay-ms >= 0")
    if shutil.which("taskset") is None or not Path("/proc/stat").exists():
        print("needs Linux with taskset (util-linux)", file=sys.stderr)
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
    report = _report(args, outcome)
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
