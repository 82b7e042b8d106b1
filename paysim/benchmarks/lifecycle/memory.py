"""Memory per payment, each case in a fresh child process (``--memory``).

``run_child`` starts ``python -m paysim.benchmarks.lifecycle --child CASE ...``,
which runs ``memory_pending`` or ``memory_churn`` and prints its
``MemoryResult`` as one JSON line.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import trio
import trio.testing

from paysim import runtime
from paysim.adapters.memory_store import MemoryStore
from paysim.benchmarks.lifecycle.inprocess import EPOCH, make_service, rss_kib
from paysim.config import Settings, SimulationSettings
from paysim.domain.models import (
    CancelCommand,
    CreateIntent,
    Metadata,
    Money,
    PaymentMethod,
    Scenario,
)
from paysim.domain.validation import CreateRequest, validate_create
from paysim.service import PaymentService

T = TypeVar("T")


@dataclass
class MemoryResult:
    case: str
    payments: int
    stored_at_end: int
    rss_at_end_mib: float
    bytes_per_payment: float
    peak_mib: float
    real_s: float
    stored_after_retention: int | None = None
    rss_after_retention_mib: float | None = None
    blocks_after_retention: int | None = None  # sys.getallocatedblocks() minus the baseline
    peak_stored: int | None = None
    create_us: float | None = None
    idle_mib: float | None = None  # absolute VmRSS after setup (the cycle case)
    rss_pending_abs_mib: float | None = None  # absolute VmRSS with every payment pending
    rss_after_cycle_abs_mib: float | None = None  # absolute, after cancel + sweep
    trimmed: bool | None = None  # whether the sweep handed free memory back (malloc_trim)


def _setup_process() -> int:
    """As ``paysim serve``: GC thresholds, start-up objects frozen. The baseline RSS (KiB)."""
    runtime.tune_gc(Settings().gc_thresholds)
    runtime.freeze_startup_objects()
    gc.collect()
    return rss_kib()


def _command(i: int, delay_ms: str | None) -> CreateIntent:
    """A request as the gRPC edge would build it: its own strings, its own tags."""
    tags = {"delay_ms": delay_ms} if delay_ms is not None else {}
    return CreateIntent(
        reservation_id=f"rsv-{i:012d}",
        user_id=f"user-{i % 1000:06d}",
        amount=Money(10_000 + i % 7, "KRW"),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.UNSPECIFIED,
        webhook_url=f"https://shop.example.com/webhooks/payments?shard={i % 16}",
        idempotency_key="",
        metadata=Metadata(
            source="bench",
            user_agent=f"bench-client/1.{i % 10}",
            ip_address=f"10.{i % 256}.{i // 256 % 256}.{i // 65536 % 256}",
            session_id=f"sess-{i:012d}",
            tags=tags,
        ),
        delay_override_s=int(delay_ms) / 1000 if delay_ms is not None else None,
    )


def _timeout_request(i: int) -> CreateIntent:
    """A TIMEOUT request through the edge's ``validate_create``, each with its own strings."""
    return validate_create(
        CreateRequest(
            reservation_id=f"rsv-{i:012d}",
            user_id=f"user-{i % 1000:06d}",
            amount=10_000 + i % 7,
            currency="".join(("K", "RW")),  # decoded per request, like every other string
            amount_present=True,
            method=PaymentMethod.CREDIT_CARD,
            scenario=Scenario.TIMEOUT,
            webhook_url=f"https://shop.example.com/webhooks/payments?shard={i % 16}",
            idempotency_key="",
            metadata=Metadata(
                source="".join(("bench", "")),
                user_agent=f"bench-client/1.{i % 10}",
                ip_address=f"10.{i % 256}.{i // 256 % 256}.{i // 65536 % 256}",
                session_id=f"sess-{i:012d}",
            ),
        ),
        max_delay_s=SimulationSettings().max_delay_s,
    )


def memory_pending(count: int) -> MemoryResult:
    settings = SimulationSettings(max_pending_payments=count + 1)
    store = MemoryStore()

    async def run() -> tuple[int, int, float, float, int]:
        async with trio.open_nursery() as nursery:
            service = make_service(nursery, store, settings)
            baseline = _setup_process()
            started = time.perf_counter()
            for i in range(count):
                await service.create_intent(_timeout_request(i))
            create_s = time.perf_counter() - started
            await trio.testing.wait_all_tasks_blocked()  # every timer task started
            gc.collect()
            rss = rss_kib()
            # The peak while they were made and pending: read before the teardown,
            # which cancels every timer at once (a million Cancelled unwinding
            # together roughly doubles RSS for a moment, which no run of the
            # server does: a drain expedites the timers instead).
            peak = rss_kib("VmHWM") - baseline
            real_s = time.perf_counter() - started
            nursery.cancel_scope.cancel()
            return baseline, rss, create_s, real_s, peak

    baseline, rss, create_s, real_s, peak = trio.run(run)
    return MemoryResult(
        case=f"{count:,} pending (TIMEOUT, TTL 15 min)",
        payments=count,
        stored_at_end=len(store),
        rss_at_end_mib=(rss - baseline) / 1024,
        bytes_per_payment=(rss - baseline) * 1024 / count,
        peak_mib=peak / 1024,
        real_s=real_s,
        create_us=create_s / count * 1e6,
    )


def memory_churn(count: int, minutes: float) -> MemoryResult:
    retention_s = 60.0
    settings = SimulationSettings(
        retention_s=retention_s, default_delay_s=2.0, max_pending_payments=count + 1
    )
    store = MemoryStore(retention_s=retention_s)
    window_s = minutes * 60.0
    ticks = round(window_s * 100)  # a batch every 10 ms of simulated time

    def wall_clock() -> float:
        return EPOCH + trio.current_time()

    samples: list[tuple[int, int]] = []  # (stored, RSS KiB), every simulated second

    async def sample_every_second() -> None:
        while True:
            await trio.sleep(1.0)
            samples.append((len(store), rss_kib()))

    async def run() -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            service = make_service(nursery, store, settings, wall_clock)
            nursery.start_soon(service.run_sweeper, settings.sweep_interval_s)
            nursery.start_soon(sample_every_second)
            baseline = _setup_process()
            blocks = sys.getallocatedblocks()
            started = time.perf_counter()
            made = 0
            for tick in range(ticks):
                target = count * (tick + 1) // ticks
                while made < target:
                    await service.create_intent(_command(made, None))
                    made += 1
                await trio.sleep(0.01)
            await trio.sleep(3.0)  # the last payments' timers
            gc.collect()
            at_end = {"stored": len(store), "rss": rss_kib() - baseline}
            await trio.sleep(retention_s + 5.0)
            gc.collect()
            after = {
                "stored": len(store),
                "rss": rss_kib() - baseline,
                "blocks": sys.getallocatedblocks() - blocks,
            }
            real_s = time.perf_counter() - started
            nursery.cancel_scope.cancel()
            return {
                "baseline": baseline,
                "stored_end": at_end["stored"],
                "rss_end": at_end["rss"],
                "stored_after": after["stored"],
                "rss_after": after["rss"],
                "blocks_after": after["blocks"],
                "real_s": real_s,
            }

    r = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    peak = rss_kib("VmHWM") - r["baseline"]
    return MemoryResult(
        case=f"{count:,} churned over {minutes:g} min, retention {retention_s:g} s",
        payments=count,
        stored_at_end=int(r["stored_end"]),
        rss_at_end_mib=r["rss_end"] / 1024,
        bytes_per_payment=r["rss_end"] * 1024 / max(1, r["stored_end"]),
        peak_mib=peak / 1024,
        real_s=r["real_s"],
        stored_after_retention=int(r["stored_after"]),
        rss_after_retention_mib=r["rss_after"] / 1024,
        blocks_after_retention=int(r["blocks_after"]),
        peak_stored=max((stored for stored, _ in samples), default=0),
    )


async def _create_timeouts(service: PaymentService, count: int) -> list[str]:
    """Create ``count`` TIMEOUT payments; their ids.

    A function of its own so that nothing of the last payment outlives it in
    the harness (its loop variables would): after the sweep, what is left
    should be what the service keeps.
    """
    ids = []
    for i in range(count):
        created = await service.create_intent(_timeout_request(i))
        ids.append(created.payment.payment_intent_id)
    return ids


async def _cancel_each(service: PaymentService, ids: list[str]) -> None:
    """Cancel every payment in ``ids`` (like ``_create_timeouts``, its locals end with it)."""
    for n, pid in enumerate(ids):
        await service.cancel_payment(CancelCommand(pid, "bench", None, ""))
        if n % 1000 == 999:
            await trio.lowlevel.checkpoint()  # the cancelled timers end, as between calls


async def _in_a_task(fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()`` in a task of its own, as the server runs each call.

    What a call binds to its context (``payment_id`` for its log lines) ends
    with its task in the server; run in the harness's own task, the storm's
    last binding would outlive it, and with it a memory arena of the storm.
    """
    results: list[T] = []

    async def run() -> None:
        results.append(await fn())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
    return results[0]


def memory_cycle(count: int) -> MemoryResult:
    """Create ``count`` TIMEOUT payments, cancel them all, sweep them once retention is over.

    The wall clock is a fake one the run moves past retention; the sweep is the
    service's own (``PaymentService.sweep``, as ``run_sweeper`` calls it).

    The creates and the cancels each run in a task of their own (``_in_a_task``),
    as the server runs each call.
    """
    retention_s = 60.0
    settings = SimulationSettings(retention_s=retention_s, max_pending_payments=count + 1)
    store = MemoryStore(retention_s=retention_s)
    now = [EPOCH]

    async def run() -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            service = make_service(nursery, store, settings, lambda: now[0])
            idle = _setup_process()
            blocks = sys.getallocatedblocks()
            started = time.perf_counter()
            ids = await _in_a_task(partial(_create_timeouts, service, count))
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            pending = rss_kib()
            await _in_a_task(partial(_cancel_each, service, ids))
            del ids
            await trio.testing.wait_all_tasks_blocked()  # every timer task has ended
            now[0] += retention_s + 1.0
            swept = await service.sweep()
            gc.collect()
            after = rss_kib()
            real_s = time.perf_counter() - started
            nursery.cancel_scope.cancel()
            return {
                "idle": idle,
                "pending": pending,
                "after": after,
                "swept": swept,
                "blocks": sys.getallocatedblocks() - blocks,
                "trimmed": store.compactions > 0,
                "real_s": real_s,
            }

    r = trio.run(run)
    idle = r["idle"]
    return MemoryResult(
        case=f"{count:,} created, cancelled, swept",
        payments=count,
        stored_at_end=len(store),
        rss_at_end_mib=(r["after"] - idle) / 1024,
        bytes_per_payment=(r["pending"] - idle) * 1024 / count,
        peak_mib=(rss_kib("VmHWM") - idle) / 1024,
        real_s=r["real_s"],
        stored_after_retention=len(store),
        rss_after_retention_mib=(r["after"] - idle) / 1024,
        blocks_after_retention=int(r["blocks"]),
        idle_mib=idle / 1024,
        rss_pending_abs_mib=r["pending"] / 1024,
        rss_after_cycle_abs_mib=r["after"] / 1024,
        trimmed=bool(r["trimmed"]),
    )


def run_child(args: list[str]) -> MemoryResult:
    out = subprocess.run(
        [sys.executable, "-m", "paysim.benchmarks.lifecycle", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stdout}{out.stderr}")
    return MemoryResult(**json.loads(out.stdout.strip().splitlines()[-1]))
