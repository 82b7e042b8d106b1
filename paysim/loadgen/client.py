"""The worker: one asyncio loop, grpc.aio channels, and the calls of one share of the load.

Theory of operation. The parent (``main.py``) gives each worker a ``Plan``:
its share of the concurrency, connections, count and rate. A worker runs in
its own process (or, with one worker, in a thread of the parent) and talks to
the parent over a pipe:

    worker -> parent   ("ready", None) | ("failed", message)
    parent -> worker   ("start", (t0, clock, duration_s)) | ("stop", None)
    worker -> parent   ("progress", (calls, errors)) every 0.5 s, then ("result", Stats)

It connects, runs the warm-up (not reported), says ready, and waits for the
common start time ``t0`` (``time.monotonic()``, which every process on the
host shares), so all workers' measured phases begin together. ``clock`` is
the fault timeline's ``PhaseClock`` (``--timeline``; else None): each call is
also recorded under the phase in force when it was sent. ``duration_s``, if
not None, replaces the plan's (a run as long as the timeline ends with it).

Closed loop (no ``--rps``): ``concurrency`` lanes, each sending its next call
when the previous one answered, spread round-robin over the channels.
Latency is from send to answer. This is ghz's default and h2load's model.

Open loop (``--rps R``): a constant arrival rate. The global call ``j`` is
due at ``t0 + j / R``; worker ``k`` of ``P`` sends the calls ``j = k + P*i``,
so the merged schedule stays evenly spaced. A scheduler dispatches each call
at its due time whatever the answers do; ``concurrency`` caps the calls in
flight, and a call waiting for a free slot keeps waiting with its clock
running (as a number in a backlog, not as a waiting task). Latency is
measured from the *intended* send time (wrk2's correction for coordinated
omission: a stalled server cannot hide its stall by slowing the generator
down). Reported besides: the service time (from the
actual send) and the send lateness (how late the scheduler dispatched: the
generator's own delay; asyncio timers wake with 1 ms resolution, so a
lateness below about 1 ms is noise).

Calls go through ``channel.unary_unary(path)`` with bytes in and bytes out:
the request is serialized by the template (once, when it has no
placeholders) and the answer is not parsed, as h2load does not parse it.
Only the gRPC status matters here.

Each channel is a separate TCP connection (``grpc.use_local_subchannel_pool``:
by default grpcio would share one connection between channels with the same
target and options).

Resource handling: the worker opens its channels and closes them before it
returns; the parent owns the pipe's other end.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc
import grpc.aio

from paysim.loadgen import calls
from paysim.loadgen.phases import PhaseClock
from paysim.loadgen.results import Stats
from paysim.loadgen.template import Context, MetadataTemplate, RequestTemplate, TemplateError

CONNECT_TIMEOUT_S = 10.0
PROGRESS_INTERVAL_S = 0.5
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1)]
CLIENT_ERROR = "CLIENT_ERROR"  # the generator could not build the request

Method = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Plan:
    """One worker's share of the run (``main.split`` makes them)."""

    index: int
    procs: int
    target: str
    call: str
    data: str
    metadata: dict[str, str]
    concurrency: int
    connections: int
    total: int | None  # this worker's calls; None: until duration_s
    duration_s: float | None
    rps: float | None  # the whole run's rate; this worker sends every procs-th call
    warmup_requests: int
    warmup_s: float
    timeout_s: float | None
    seed: int | None
    intents: tuple[str, ...] = ()
    cores: tuple[int, ...] | None = None


class Generator:
    """Sends one worker's calls; ``run_phase`` is a warm-up or the measured phase."""

    def __init__(self, plan: Plan, methods: list[Method]) -> None:
        self._plan = plan
        self._methods = methods
        self._request = RequestTemplate(plan.data, calls.request_type(plan.call))
        self._metadata = MetadataTemplate(plan.metadata)
        seed = None if plan.seed is None else plan.seed * 1_000_003 + plan.index
        self._ctx = Context(worker=plan.index, rng=random.Random(seed), intents=plan.intents)
        self._seq = 0  # this worker's calls so far, warm-up included: {{n}} = index + procs * seq
        self.stats = Stats()  # the current phase's record
        self._clock: PhaseClock | None = None

    async def run_phase(
        self,
        t0: float,
        count: int | None,
        duration_s: float | None,
        clock: PhaseClock | None = None,
    ) -> Stats:
        """Send from ``t0`` until ``count`` calls or ``duration_s``; the phase's ``Stats``
        (with ``clock``, split by the timeline's phases too)."""
        self.stats = stats = Stats()
        self._clock = clock
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, t0 - loop.time()))
        cpu0 = time.process_time()
        if self._plan.rps is None:
            end = await self._closed(t0, count, duration_s, stats)
        else:
            end = await self._open(t0, count, duration_s, stats)
        stats.cpu_s = time.process_time() - cpu0
        stats.wall_s = max(end - t0, 1e-9)
        return stats

    def _next_request(self, stats: Stats, offset_s: float) -> tuple[bytes, Any] | None:
        """The next call's body and metadata; None (counted as CLIENT_ERROR) if unbuildable."""
        ctx = self._ctx
        ctx.n = self._plan.index + self._plan.procs * self._seq
        self._seq += 1
        try:
            return self._request.body(ctx), self._metadata.render(ctx)
        except TemplateError as exc:
            stats.record(offset_s, 0.0, 0.0, CLIENT_ERROR, self._phase(offset_s))
            stats.record_error(f"{CLIENT_ERROR}: {exc}")
            return None

    def _phase(self, sent_offset_s: float) -> int | None:
        return None if self._clock is None else self._clock.index_at(sent_offset_s)

    async def _call(self, method: Method, body: bytes, metadata: Any, stats: Stats) -> str:
        """One call; its status code name (errors are also counted by message)."""
        stats.sent += 1
        try:
            await method(body, timeout=self._plan.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            code: str = exc.code().name
            stats.record_error(f"{code}: {exc.details()}")
            return code
        return "OK"

    async def _closed(
        self, t0: float, count: int | None, duration_s: float | None, stats: Stats
    ) -> float:
        loop = asyncio.get_running_loop()
        deadline = t0 + duration_s if duration_s is not None else math.inf
        remaining = [count if count is not None else math.inf]
        last = [t0]

        async def lane(k: int) -> None:
            method = self._methods[k % len(self._methods)]
            while remaining[0] > 0 and loop.time() < deadline:
                remaining[0] -= 1
                request = self._next_request(stats, loop.time() - t0)
                if request is None:
                    continue
                sent = loop.time()
                code = await self._call(method, *request, stats)
                end = loop.time()
                stats.record(end - t0, end - sent, end - sent, code, self._phase(sent - t0))
                last[0] = max(last[0], end)

        await asyncio.gather(*(lane(k) for k in range(self._plan.concurrency)))
        return last[0]

    async def _open(
        self, t0: float, count: int | None, duration_s: float | None, stats: Stats
    ) -> float:
        """The open loop: a scheduler, at most ``concurrency`` slot tasks, a backlog.

        A due call starts at once in a new slot task if fewer than
        ``concurrency`` are running; otherwise its intended time joins the
        backlog, and the next slot to finish takes it. The backlog holds
        floats, not tasks, so an overloaded server does not bury the loop (or
        the garbage collector) under thousands of waiting tasks.
        """
        assert self._plan.rps is not None
        loop = asyncio.get_running_loop()
        interval = self._plan.procs / self._plan.rps
        offset = self._plan.index / self._plan.rps
        stop = t0 + duration_s if duration_s is not None else math.inf
        backlog: collections.deque[float] = collections.deque()
        slots: list[asyncio.Task[None]] = []
        active = [0]  # running slots; decremented by the slot itself, before it ends
        last = [t0]

        async def slot(method: Method, intended: float) -> None:
            try:
                while True:
                    request = self._next_request(stats, loop.time() - t0)
                    if request is not None:
                        sent = loop.time()
                        code = await self._call(method, *request, stats)
                        end = loop.time()
                        phase = self._phase(sent - t0)
                        stats.record(end - t0, end - intended, end - sent, code, phase)
                        last[0] = max(last[0], end)
                    if not backlog:
                        return
                    intended = backlog.popleft()
            finally:
                active[0] -= 1

        i = 0
        while count is None or i < count:
            intended = t0 + offset + i * interval
            if intended >= stop:
                break
            now = loop.time()
            if intended > now:
                await asyncio.sleep(intended - now)
                now = loop.time()
            stats.lateness.record(max(now - intended, 0.0))
            stats.send_span_s = now - t0
            if active[0] < self._plan.concurrency:
                active[0] += 1
                method = self._methods[i % len(self._methods)]
                slots.append(loop.create_task(slot(method, intended)))
                if len(slots) > 4 * self._plan.concurrency:
                    slots = [t for t in slots if not t.done()]
            else:
                backlog.append(intended)
            i += 1
        await asyncio.gather(*slots)
        return last[0]


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure grpc.aio channel on its own TCP connection; the caller closes it."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


async def _report_progress(generator: Generator, conn: Connection) -> None:
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        stats = generator.stats
        conn.send(("progress", (stats.count, stats.error_count)))


async def _connect(channels: list[grpc.aio.Channel], target: str) -> None:
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.channel_ready() for c in channels)), CONNECT_TIMEOUT_S
        )
    except TimeoutError:
        raise ConnectionError(
            f"cannot connect to {target} within {CONNECT_TIMEOUT_S:.0f} s"
        ) from None


async def _work(plan: Plan, conn: Connection) -> None:
    channels = [open_channel(plan.target) for _ in range(plan.connections)]
    try:
        await _connect(channels, plan.target)
        generator = Generator(plan, [c.unary_unary(calls.path(plan.call)) for c in channels])
        gc.freeze()  # what exists now lives for the whole run: keep it out of collections
        if plan.warmup_requests or plan.warmup_s:
            loop = asyncio.get_running_loop()
            count = plan.warmup_requests or None
            await generator.run_phase(loop.time(), count, plan.warmup_s or None)
        conn.send(("ready", None))
        kind, start = await asyncio.to_thread(conn.recv)
        if kind != "start":
            return
        t0, clock, duration_s = start
        duration_s = plan.duration_s if duration_s is None else duration_s
        progress = asyncio.create_task(_report_progress(generator, conn))
        try:
            stats = await generator.run_phase(t0, plan.total, duration_s, clock)
        finally:
            progress.cancel()
        conn.send(("result", stats))
    finally:
        for channel in channels:
            await channel.close()


def run_worker(plan: Plan, conn: Connection) -> None:
    """A worker thread's entry point: never raises, a failure goes to the parent."""
    try:
        asyncio.run(_work(plan, conn))
    except ConnectionError as exc:
        _tell(conn, ("failed", str(exc)))
    except BaseException as exc:  # reported to the parent, which decides the exit status
        _tell(conn, ("failed", f"worker {plan.index} failed: {exc!r}"))


def process_main(plan: Plan, conn: Connection) -> None:
    """A worker process's entry point: pin it to its cores first, then ``run_worker``."""
    if plan.cores:
        os.sched_setaffinity(0, plan.cores)
    run_worker(plan, conn)


def _tell(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the parent has gone: nobody is left to tell
