"""One chaos run, phase by phase; ``main`` is ``paysim chaos``.

Phases (each timed, shown in the progress line and the report):

1. **setup**: the webhook receiver (faults as asked); the event side (moto's
   server with this run's bus, rule and queue, read by an ``SqsCollector``;
   or the in-process PutEvents sink) behind the ``OutageProxy``; the server,
   ``python -m paysim serve`` with time compression, the fast-enough retry
   settings below and the server-side chaos knobs (or, with ``--target``, a
   running paysim).
2. **load**: ``Driver.run`` at ``--rate`` until ``--count`` payments; each
   payment's status is asked (GetPaymentStatus, the **snapshot**) once it
   should have settled, during the load. The receiver's down windows and the
   EventBridge outages happen during it, at seeded times, never in its first
   or last tenth.
3. With SIGTERM (the default): **sigterm** half a second after the last
   create, while the payments created last are still pending (TIMEOUT ones
   for 3 s): the server must drain: resolve every pending payment (on time or
   early), deliver every webhook, publish every event, exit 0, leaving
   nothing in its shutdown report. With the in-memory store its payments are
   gone afterwards, so those not seen settled in the snapshot are checked
   through their webhooks and events (see ``invariants``). Then **settle**:
   the queue is read until it is empty and quiet.
   Without SIGTERM: **settle** (every payment's terminal webhook acknowledged,
   the server's webhook queue and event backlog empty, the queue drained),
   then **snapshot** again for any payment not seen settled.
4. **verify**: ``invariants.check_all``; the table, ``--json``, ``--html``.

The server's settings (and why): ``server_env``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
import trio

from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.chaos import invariants
from paysim.chaos.driver import Driver, Timing
from paysim.chaos.events import EventLog, OutageProxy, PutEventsSink, SqsCollector
from paysim.chaos.options import Options, Windows
from paysim.chaos.receiver import FaultPlan, WebhookReceiver
from paysim.chaos.report import Result, Window
from paysim.chaos.scenarios import (
    DEFAULT_DELAY_MS,
    DELAY_SCENARIO_MS,
    INTENT_TTL_MS,
    TARGET_INTENT_TTL_MS,
    TERMINAL,
)
from paysim.chaos.server_env import REGION, server_env
from paysim.chaos.stack import ServerProcess, moto_resources, moto_server, paysim_server
from paysim.chaos.summary import summarize
from paysim.config import AwsSettings
from paysim.loadgen.procstat import process_cpu_s
from paysim.loadgen.scrape import series

RECEIVER_PATH = "/webhooks"
SLOW_MARGIN_S = 0.3
SAMPLE_S = 1.0
TAIL_S = 0.5  # with SIGTERM: statuses are asked for this long after the last create


def place_windows(windows: Windows, load_s: float, rng: random.Random) -> list[float]:
    """Start offsets for ``windows`` inside the load, one per equal slot of its middle 80 %.

    Seeded, never overlapping each other, clear of the load's first and last
    tenth (the start must see the service healthy; the end must not blur into
    the drain). A window longer than its slot starts at the slot's start.
    """
    if not windows.enabled:
        return []
    first, span = 0.1 * load_s, 0.8 * load_s
    slot = span / windows.count
    room = max(0.0, slot - windows.seconds)
    return [first + i * slot + rng.uniform(0.0, room) for i in range(windows.count)]


@dataclass
class _Tracker:
    """Incremental progress over the receiver's records (for settling without SIGTERM)."""

    acked_terminal: set[str]  # payments whose terminal webhook was acknowledged
    receipts_seen: int = 0

    def update(self, receiver: WebhookReceiver) -> None:
        receipts = receiver.receipts
        for r in receipts[self.receipts_seen :]:
            if r.answer == "ok" and r.status in TERMINAL:
                self.acked_terminal.add(r.payment_id)
        self.receipts_seen = len(receipts)


@contextlib.contextmanager
def _channels(target: str, n: int) -> Iterator[list[grpc.Channel]]:
    """``n`` grpcio channels to ``target``, each its own connection; closed on exit."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(target, options=options) for _ in range(n)]
    try:
        yield channels
    finally:
        for channel in channels:
            channel.close()


class ChaosRun:
    def __init__(self, options: Options, out: TextIO, command: str = "paysim chaos") -> None:
        self.o = options
        self.out = out
        self.command = command
        self.run_id = f"{options.seed}-{os.getpid()}-{secrets.token_hex(2)}"
        self.secret = options.secret or secrets.token_hex(16)
        self.t0 = time.time()
        self.phase = "setup"
        self.phases: dict[str, float] = {}
        self.receiver = WebhookReceiver(
            (self.secret,),
            FaultPlan(
                options.faults.webhook_5xx,
                options.faults.webhook_timeout,
                options.faults.webhook_reset,
                options.seed,
            ),
            slow_s=options.webhook_timeout_ms / 1000.0 + SLOW_MARGIN_S,
        )
        self.aws = AwsSettings(
            region=REGION,
            event_bus_name=f"paysim-chaos-{self.run_id}",
            event_source=f"paysim-chaos-{self.run_id}",
        )
        self.events: EventLog | None = None
        self.collectors: list[SqsCollector] = []
        self.proxy: OutageProxy | None = None
        self.server: ServerProcess | None = None
        self.driver: Driver | None = None
        self.windows: list[Window] = []
        self.timeline: list[dict[str, float]] = []
        self.tracker = _Tracker(set())
        self.metrics: dict[str, float] = {}
        self.shutdown: invariants.Shutdown | None = None
        self.sigterm_at: float | None = None
        self.load_end: float | None = None
        self.pids: dict[str, int] = {"chaos": os.getpid()}
        self.server_metrics: dict[str, float] = {}  # the latest scrape, for the timeline

    # -- the run ------------------------------------------------------------------
    async def execute(self) -> Result:
        async with trio.open_nursery() as background:
            url = await self._start_receiver(background)
            async with (
                self._event_side(background) as events_endpoint,
                self._server_side(events_endpoint) as target,
            ):
                with _channels(target, self.o.channels) as channels:
                    stubs = [payment_pb2_grpc.PaymentServiceStub(c) for c in channels]
                    self.driver = Driver(stubs, self.o, url, self._timing())
                    background.start_soon(self._sample)
                    await self._phases()
            background.cancel_scope.cancel()
        return self._result()

    async def _phases(self) -> None:
        await self._timed("load", self._load)
        if self.o.faults.sigterm:
            await self._timed("sigterm", self._sigterm)
            await self._timed("settle", self._settle_after_exit)
        else:
            await self._timed("settle", self._settle_running)
            await self._timed("snapshot", self._snapshot)
        self.phase = "verify"

    def _timing(self) -> Timing:
        """When each scenario's payments settle on the server: the snapshot asks then."""
        ttl_ms = INTENT_TTL_MS if self.o.target is None else TARGET_INTENT_TTL_MS
        return Timing.of_server(
            default_delay_ms=DEFAULT_DELAY_MS,
            delay_scenario_ms=DELAY_SCENARIO_MS,
            intent_ttl_ms=ttl_ms,
            scale=self.o.time_scale,
        )

    async def _timed(self, name: str, phase: Any) -> None:
        self.phase = name
        started = time.time()
        await phase()
        self.phases[name] = time.time() - started

    # -- setup ----------------------------------------------------------------------
    async def _start_receiver(self, nursery: trio.Nursery) -> str:
        started = time.time()
        port = await nursery.start(self.receiver.serve, self.o.receiver_host, self.o.receiver_port)
        self.phases["setup"] = time.time() - started
        return f"http://{self.o.receiver_host}:{port}{RECEIVER_PATH}"

    @contextlib.asynccontextmanager
    async def _event_side(self, nursery: trio.Nursery) -> AsyncIterator[str | None]:
        """Where the server's events go; yields the proxy's URL (None with --target)."""
        started = time.time()
        if self.o.target is not None:
            if self.o.queue_url is not None:
                await self._collect_platform_queue(nursery, self.o.queue_url)
            yield None
            return
        log = self.events = EventLog(self.aws.event_source, self.aws.event_bus_name)
        if self.o.events == "sink":
            port = await nursery.start(PutEventsSink(log).serve, "127.0.0.1")
            yield await self._proxy(nursery, [port], started)
            return
        async with contextlib.AsyncExitStack() as motos:
            ports = []
            for shard in range(self.o.moto_shards):
                endpoint, pid = await motos.enter_async_context(moto_server(REGION))
                self.pids[f"moto{shard}"] = pid
                sqs, resources = await moto_resources(endpoint, self.aws, self.run_id)
                await self._collect(nursery, SqsCollector(sqs, resources.queue_url, log))
                ports.append(int(endpoint.rsplit(":", 1)[1]))
            yield await self._proxy(nursery, ports, started)

    async def _collect(self, nursery: trio.Nursery, collector: SqsCollector) -> None:
        self.collectors.append(collector)
        nursery.start_soon(collector.run)

    async def _collect_platform_queue(self, nursery: trio.Nursery, queue_url: str) -> None:
        """--target: read the queue named by --queue-url, with the platform's own settings.

        The collector deletes what it reads: give it a queue of its own (a
        second target of the rule), never the one the reservation worker reads.
        """
        from paysim.adapters.aws import make_client
        from paysim.config import Settings

        aws = Settings.from_env(os.environ).aws
        sqs = await trio.to_thread.run_sync(make_client, "sqs", aws)
        self.events = EventLog(aws.event_source, aws.event_bus_name)
        await self._collect(nursery, SqsCollector(sqs, queue_url, self.events))

    async def _proxy(self, nursery: trio.Nursery, upstream_ports: list[int], started: float) -> str:
        self.proxy = OutageProxy("127.0.0.1", upstream_ports)
        port = await nursery.start(self.proxy.serve, "127.0.0.1")
        self.phases["setup"] += time.time() - started
        return f"http://127.0.0.1:{port}"

    @contextlib.asynccontextmanager
    async def _server_side(self, events_endpoint: str | None) -> AsyncIterator[str]:
        """The gRPC target; starts ``paysim serve`` unless --target names one."""
        if self.o.target is not None:
            yield self.o.target
            return
        started = time.time()
        assert events_endpoint is not None
        env = server_env(self.o, self.secret, self.aws, events_endpoint)
        async with paysim_server(env) as server:
            self.server = server
            self.pids["server"] = server.process.pid
            self.phases["setup"] += time.time() - started
            yield f"127.0.0.1:{server.grpc_port}"

    # -- phases -----------------------------------------------------------------------
    async def _load(self) -> None:
        assert self.driver is not None
        async with trio.open_nursery() as nursery:
            faults = trio.CancelScope()
            nursery.start_soon(self._fault_schedule, faults)
            await self.driver.run(tail_s=TAIL_S if self.o.faults.sigterm else None)
            faults.cancel()
        self.load_end = time.time() - self.t0

    async def _fault_schedule(self, scope: trio.CancelScope) -> None:
        f, load_s = self.o.faults, self.o.load_seconds
        plan: list[tuple[float, str, float]] = []
        for kind, windows in (
            ("receiver down", f.receiver_down),
            ("EventBridge outage", f.events_outage),
        ):
            rng = random.Random(f"{self.o.seed}:{kind}")
            plan += [(at, kind, windows.seconds) for at in place_windows(windows, load_s, rng)]
        if self.proxy is None:
            plan = [p for p in plan if p[1] != "EventBridge outage"]
        with scope:
            async with trio.open_nursery() as nursery:
                start = trio.current_time()
                for at, kind, seconds in sorted(plan):
                    nursery.start_soon(self._window, start + at, kind, seconds)

    async def _window(self, at: float, kind: str, seconds: float) -> None:
        await trio.sleep_until(at)
        if kind == "receiver down":
            gate = self.receiver.gate
        elif self.proxy is not None:
            gate = self.proxy.gate
        else:
            return
        window = Window(kind, time.time() - self.t0, math.nan)
        self.windows.append(window)
        try:
            await gate.outage(seconds)
        finally:
            window.end_s = time.time() - self.t0

    async def _snapshot(self) -> None:
        """Without SIGTERM: ask for every payment not seen settled during the load."""
        assert self.driver is not None
        await self.driver.snapshot_missing()

    async def _sigterm(self) -> None:
        server = self.server
        assert server is not None
        self.metrics = await server.metrics() or self.metrics
        self.sigterm_at = time.time() - self.t0
        server.process.terminate()
        exit_code: int | None = None
        with trio.move_on_after(90.0):
            exit_code = await server.process.wait()
            await server.log.ended.wait()
        log = server.log
        self.shutdown = invariants.Shutdown(
            exit_code=exit_code,
            unresolved=tuple(log.ids_in("unresolved payments at shutdown")),
            undelivered_webhooks=tuple(log.ids_in("undelivered webhooks at shutdown")),
            undelivered_events=tuple(log.ids_in("undelivered events at shutdown")),
            grace_ran_out=log.first("grace period over; cancelling what is left") is not None,
            traceback=b"Traceback" in log.stderr,
        )

    async def _settle_after_exit(self) -> None:
        """Nothing more will be sent: read the queue until it is empty and quiet."""
        with trio.move_on_after(self.o.settle_timeout_s):
            await self._queue_drained()

    async def _settle_running(self) -> None:
        """Wait until every payment's end is acknowledged and nothing is left in flight."""
        assert self.driver is not None
        with trio.move_on_after(self.o.settle_timeout_s):
            while True:
                accepted = {i.payment_id for i in self.driver.intents if i.accepted}
                self.tracker.update(self.receiver)
                if accepted <= self.tracker.acked_terminal and await self._server_idle():
                    break
                await trio.sleep(0.25)
            await self._queue_drained()
            self.metrics = (await self.server.metrics()) if self.server else {}

    async def _server_idle(self) -> bool:
        if self.server is None:  # --target: a quiet receiver is all we can see
            return time.time() - max((r.t for r in self.receiver.receipts[-1:]), default=0) > 2.0
        m = await self.server.metrics()
        return bool(m) and (
            series(m, "paysim_webhook_queue_depth") == 0 and series(m, "paysim_events_backlog") == 0
        )

    async def _queue_drained(self, quiet_s: float = 2.0) -> None:
        if not self.collectors or self.events is None:
            return
        while True:
            quiet = time.time() - self.events.last_at > quiet_s
            if quiet and sum([await c.backlog() for c in self.collectors]) == 0:
                return
            await trio.sleep(0.25)

    # -- progress and timeline --------------------------------------------------------
    async def _sample(self) -> None:
        # A poll of other processes' counters: nothing to wait on, so no trio-util here.
        next_print = trio.current_time() + self.o.progress_s
        while True:
            self.tracker.update(self.receiver)
            if self.server is not None and self.shutdown is None and self.phase != "sigterm":
                self.server_metrics = await self.server.metrics()
            self.timeline.append(self._point())
            if self.o.progress_s and trio.current_time() >= next_print:
                next_print += self.o.progress_s
                print(self._progress_line(), file=self.out, flush=True)
            await trio.sleep(SAMPLE_S)

    def _point(self) -> dict[str, float]:
        """One timeline point: cumulative counters, the server's gauges, CPU seconds per process."""
        answers = self.receiver.answers
        driver = self.driver
        m = self.server_metrics
        point = {
            "t": round(time.time() - self.t0, 3),
            "created": float(driver.accepted) if driver else 0.0,
            "webhooks_ok": float(answers["ok"]),
            "webhooks_faulted": float(sum(answers.values()) - answers["ok"]),
            "events": float(len(self.events.events)) if self.events else 0.0,
            "server_events_backlog": series(m, "paysim_events_backlog"),
            "server_webhook_queue": series(m, "paysim_webhook_queue_depth"),
        }
        for name, pid in self.pids.items():
            cpu = process_cpu_s(pid)
            point[f"cpu_{name}"] = math.nan if cpu is None else cpu
        return point

    def _progress_line(self) -> str:
        d = self.driver
        sent = f"{d.sent:,}/{self.o.count:,} sent, {d.accepted:,} accepted" if d else "starting"
        answers = self.receiver.answers
        faulted = sum(answers.values()) - answers["ok"]
        events = f"{len(self.events.events):,} events" if self.events else "events not read"
        flags = []
        if not self.receiver.gate.is_up:
            flags.append("receiver DOWN")
        if self.proxy is not None and not self.proxy.gate.is_up:
            flags.append("EventBridge OUT")
        extra = f" | {', '.join(flags)}" if flags else ""
        return (
            f"[{time.time() - self.t0:7.1f}s] {self.phase:<8} {sent} | webhooks "
            f"{answers['ok']:,} acknowledged, {faulted:,} faulted | {events}{extra}"
        )

    # -- the result --------------------------------------------------------------------
    def _result(self) -> Result:
        return summarize(self)
