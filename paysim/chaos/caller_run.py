"""``paysim chaos --caller``: a naive and a correct payment client through a fault timeline.

Against a ``paysim serve`` it starts (CHAOS_API_ENABLED) or one given with
``--target`` and ``--http-target``, for each caller in turn (``caller``):

1. ``PUT /admin/faults`` sets the seed and starts the timeline from its start;
2. ``count`` reservations are paid, their starts spread evenly over the
   timeline (or over ``count / rate`` seconds without one), ``concurrency``
   at a time, so every phase is met;
3. the payments are read back (``caller.truth``: nothing left PROCESSING) and
   ``GET /reconciliation`` is read until its double charges stop moving.

The verdict: the report's double charges added during the naive caller's turn
equal exactly what the driver knows it caused (reservations and extra
captures, also checked against the payments themselves), and the correct
caller adds none. Anything else fails the run (exit status 1).

A server given with ``--target`` must not resolve intents by itself during the
run (DEFAULT_DELAY_MS and every scenario delay longer than the run): an intent
whose creation answer was lost would otherwise complete on its own, a double
charge the report rightly counts and no driver can know of.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import grpc
import httpx
import trio

from paysim._proto.proto.payment.v1 import payment_pb2_grpc
from paysim.chaos.caller import Caller, CallerStats, truth
from paysim.chaos.options import Options
from paysim.chaos.stack import paysim_server
from paysim.faults.timeline import Timeline, load_timeline

KINDS = ("naive", "correct")
SETTLE_S = 10.0
HOLD_MS = 3_600_000


@dataclass
class Turn:
    """One caller's turn: what it did, what it caused, what the report says."""

    kind: str
    stats: CallerStats
    seconds: float = 0.0
    truth_doubles: int = 0
    truth_extra: int = 0
    report_doubles: int = 0
    report_extra: int = 0
    lost_answers: int = 0

    @property
    def passed(self) -> bool:
        want = (self.stats.expected_doubles, self.stats.expected_extra)
        if self.kind == "correct" and want != (0, 0):
            return False
        return (
            want
            == (self.truth_doubles, self.truth_extra)
            == (
                self.report_doubles,
                self.report_extra,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "caller": self.kind,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "reservations": s.reservations,
            "paid": s.paid,
            "gave_up": s.gave_up,
            "codes": dict(sorted(s.codes.items())),
            "caused": {"double_charges": s.expected_doubles, "extra_captures": s.expected_extra},
            "payments": {"double_charges": self.truth_doubles, "extra_captures": self.truth_extra},
            "report": {"double_charges": self.report_doubles, "extra_captures": self.report_extra},
            "lost_answers_reported": self.lost_answers,
        }


@dataclass
class CallerResult:
    seed: int
    timeline: str | None
    turns: list[Turn] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return len(self.turns) == len(KINDS) and all(t.passed for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "caller",
            "seed": self.seed,
            "timeline": self.timeline,
            "passed": self.passed,
            "turns": [t.to_dict() for t in self.turns],
        }


def server_env(options: Options) -> dict[str, str]:
    """A development ``paysim serve`` with the fault policy on and nothing else to wait for."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHAOS_", "WEBHOOK_", "EVENTS_", "SIMULATION_", "AWS_ENDPOINT"))
    }
    env.update(
        ENVIRONMENT="development",
        LOG_FORMAT="json",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
        GRPC_HOST="127.0.0.1",
        GRPC_PORT="0",
        HTTP_HOST="127.0.0.1",
        HTTP_PORT="0",
        SIMULATION_SEED=str(options.seed),
        CHAOS_API_ENABLED="true",
        CHAOS_SEED=str(options.seed),
        EVENTS_ENABLED="false",
        # An intent left alone resolves after DEFAULT_DELAY_MS by itself (the PG's
        # late answer): far beyond the run, so only a capture charges.
        DEFAULT_DELAY_MS=str(HOLD_MS),
        MAX_DELAY_MS=str(HOLD_MS),
        INTENT_TTL_MS=str(2 * HOLD_MS),
    )
    return env


class CallerRun:
    def __init__(self, options: Options, out: TextIO) -> None:
        self.o = options
        self._out = out
        self.timeline: Timeline | None = (
            load_timeline(options.timeline) if options.timeline else None
        )

    async def execute(self) -> CallerResult:
        result = CallerResult(self.o.seed, self.timeline.name if self.timeline else None)
        async with (
            self._server() as (grpc_target, http_url),
            httpx.AsyncClient(base_url=http_url, trust_env=False, timeout=30) as admin,
        ):
            for kind in KINDS:
                result.turns.append(await self._turn(kind, grpc_target, admin))
            await self._admin(admin, {"timeline": None})
        return result

    @contextlib.asynccontextmanager
    async def _server(self) -> AsyncIterator[tuple[str, str]]:
        if self.o.target is not None:
            yield self.o.target, f"http://{self.o.http_target}"
            return
        async with paysim_server(server_env(self.o)) as server:
            yield f"127.0.0.1:{server.grpc_port}", f"http://127.0.0.1:{server.http_port}"

    async def _admin(self, admin: httpx.AsyncClient, body: dict[str, Any]) -> None:
        answer = await admin.put("/admin/faults", json=body)
        answer.raise_for_status()

    async def _report(self, admin: httpx.AsyncClient) -> dict[str, Any]:
        answer = await admin.get("/reconciliation")
        answer.raise_for_status()
        report: dict[str, Any] = answer.json()
        return report

    async def _turn(self, kind: str, target: str, admin: httpx.AsyncClient) -> Turn:
        before = (await self._report(admin))["double_charges"]
        body: dict[str, Any] = {"seed": self.o.seed}
        body["timeline"] = self.timeline.to_dict() if self.timeline else None
        await self._admin(admin, body)
        self._say(f"{kind} caller: {self.o.count} reservations")
        started = time.monotonic()
        stats = await self._drive(kind, target)
        turn = Turn(kind, stats, seconds=time.monotonic() - started)
        with contextlib.closing(grpc.insecure_channel(target)) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            turn.truth_doubles, turn.truth_extra = await trio.to_thread.run_sync(truth, stub, stats)
        await self._settled(admin, turn, before)
        self._say(f"{kind} caller: {'passed' if turn.passed else 'FAILED'} {turn.to_dict()}")
        return turn

    async def _settled(self, admin: httpx.AsyncClient, turn: Turn, before: dict[str, Any]) -> None:
        """Read the report until its double charges match the payments' (or SETTLE_S pass)."""
        deadline = trio.current_time() + SETTLE_S
        while True:
            report = await self._report(admin)
            now = report["double_charges"]
            turn.report_doubles = now["reservations"] - before["reservations"]
            turn.report_extra = now["extra_captures"] - before["extra_captures"]
            turn.lost_answers = report["lost_answers"]["count"]
            matches = (turn.report_doubles, turn.report_extra) == (
                turn.truth_doubles,
                turn.truth_extra,
            )
            if matches or trio.current_time() > deadline:
                return
            await trio.sleep(0.05)

    async def _drive(self, kind: str, target: str) -> CallerStats:
        """Pay ``count`` reservations, their starts spread over the timeline."""
        span = self.timeline.duration_s if self.timeline else self.o.count / self.o.rate
        step = span / self.o.count
        run_id = f"{kind}-{self.o.seed}-{time.time_ns() % 10**9}"
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.insecure_channel(target, options=options) for _ in range(self.o.channels)]
        stubs = itertools.cycle([payment_pb2_grpc.PaymentServiceStub(c) for c in channels])
        callers = [Caller(next(stubs), CallerStats(kind)) for _ in range(self.o.concurrency)]
        send, receive = trio.open_memory_channel[int](0)
        limiter = trio.CapacityLimiter(self.o.concurrency)
        try:
            async with trio.open_nursery() as nursery:
                for caller in callers:
                    nursery.start_soon(_work, caller, receive.clone(), run_id, limiter)
                receive.close()
                async with send:
                    start = trio.current_time()
                    for i in range(self.o.count):
                        await trio.sleep_until(start + i * step)
                        await send.send(i)
        finally:
            for channel in channels:
                channel.close()
        return _merged(kind, [c.stats for c in callers])

    def _say(self, line: str) -> None:
        print(f"paysim chaos --caller: {line}", file=self._out, flush=True)


async def _work(
    caller: Caller,
    receive: trio.MemoryReceiveChannel[int],
    run_id: str,
    limiter: trio.CapacityLimiter,
) -> None:
    async with receive:
        async for i in receive:
            await trio.to_thread.run_sync(caller.pay, f"rsv_{run_id}_{i}", limiter=limiter)


def _merged(kind: str, parts: list[CallerStats]) -> CallerStats:
    total = CallerStats(kind)
    for p in parts:
        total.reservations += p.reservations
        total.paid += p.paid
        total.gave_up += p.gave_up
        total.codes.update(p.codes)
        total.expected_doubles += p.expected_doubles
        total.expected_extra += p.expected_extra
        total.intents.update(p.intents)
    return total
