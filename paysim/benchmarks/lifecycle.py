"""ListPayments cost against the number of stored payments, and memory per payment.

    python -m paysim.benchmarks.lifecycle [--list] [--memory] [--json FILE]
        [--layouts 10000x100,100000x1000,1000000x10000,100000x100] [--calls 2000]
        [--pending 100000] [--churn 1000000] [--churn-minutes 10]

Without ``--list`` or ``--memory`` both parts run. A benchmark, not a test: it
reports what it measures and exits 0. Everything runs in process: a
``PaymentService`` with a ``MemoryStore``, a notifier that drops every change,
real ``Metrics``, and the ``Simulator`` in a trio nursery.

**Listing** (``--list``). For each layout ``PAYMENTSxUSERS`` the store is
filled directly with ``store.insert`` of cheaply built ``Payment`` objects
(PENDING, shared sub-objects, creation times 1 ms apart, users in turn), not
through the service: about 5 µs per payment instead of create_intent's 30 µs
(which also starts a timer task), and the per-user index ListPayments reads
is the same either way. The measured user owns PAYMENTS / USERS of them,
spread over the whole time range. Then ``--calls`` ListPayments calls
(``validate_list`` with its cursor decoding, then ``service.list_payments``;
page_size 20, no filter; GC thresholds as in ``paysim serve``) are timed one
by one with ``perf_counter_ns``, for the first page and for the page after
the first page's ``next_cursor``, after 200 unmeasured calls each. The
default layouts hold the measured user at 100 payments while the total grows
10k, 100k, 1M, and add one with 1,000 for the user at 100k: the cost follows
the user's own payments (``paginate`` filters and keys all of them), not
everyone's.

**Memory** (``--memory``), each case in a fresh child process, set up as
``paysim serve`` does (GC thresholds from ``Settings``, start-up objects
frozen). Resident memory is ``VmRSS`` from ``/proc/self/status`` after
``gc.collect()``, minus the same reading taken after setup, before the first
payment; peak is ``VmHWM`` minus that baseline.

* *pending*: ``--pending`` payments created through ``service.create_intent``
  on the real trio clock, each with ``delay_ms`` 600000 (MAX_DELAY_MS) so they
  all stay PENDING with their timer task started; every request has its own
  strings (reservation id, user id among 1,000, webhook URL, metadata), as
  decoded requests would.
* *churn*: ``--churn`` payments created through the service over
  ``--churn-minutes`` simulated minutes on a ``MockClock`` (autojump), in
  batches every 10 ms of simulated time, approved after DEFAULT_DELAY 2 s,
  with RETENTION 60 s and the service's own sweeper (``run_sweeper``, every
  simulated second). Stored payments and RSS are sampled every simulated
  second. Reported at the end of the creation window (+3 s for the last
  timers) and again 65 s later, when retention has dropped everything (with
  ``sys.getallocatedblocks()`` against its baseline: back near zero means
  nothing leaked, whatever RSS the allocator keeps); and the real time the
  run took.

Measured (Python 3.11, two shared Xeon cores, default arguments, about 2 min):

* ListPayments, first page / cursor page p50: 29-31 / 32-35 µs with 100 of
  the user's own among 10k, 100k and 1M payments (p99 60-70 µs); 280 / 285 µs
  with 1,000 of the user's own among 100k. Flat in everyone else's
  payments, linear in the user's own.
* 100,000 pending payments: 469 MiB (4.9 KB each, the timer task included;
  peak 608 MiB); create_intent 29-31 µs per call.
* 1,000,000 payments over 10 simulated minutes with retention 60 s: about
  100,000 stored at a time (105,000 at most), 211 MiB (2.2 KB per stored
  settled payment), peak 211 MiB, 110 s of real time. Once retention has
  dropped everything: 0 stored and allocated blocks back at the baseline
  (+2.4k), while RSS stays at 189 MiB (the allocator keeps its arenas for
  reuse; nothing leaked).

Linux only (``/proc/self/status``).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import trio
import trio.testing

from paysim import runtime
from paysim.adapters.memory_store import MemoryStore
from paysim.config import Settings, SimulationSettings
from paysim.domain import listing
from paysim.domain.ids import new_id
from paysim.domain.models import (
    CreateIntent,
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
    StatusChange,
)
from paysim.domain.validation import validate_list
from paysim.observability.metrics import Metrics
from paysim.service import PaymentService, ServiceParts
from paysim.simulator import Simulator

EPOCH = 1_700_000_000.0
PAGE_SIZE = 20
WARMUP_CALLS = 200
DEFAULT_LAYOUTS = "10000x100,100000x1000,1000000x10000,100000x100"


class DropNotifier:
    """Takes every change and keeps nothing: the notifier's cost is not measured here."""

    def announces(self, change: StatusChange) -> bool:
        return False

    async def notify(self, change: StatusChange) -> None:
        return None


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _service(
    nursery: trio.Nursery,
    store: MemoryStore,
    settings: SimulationSettings,
    wall_clock: Callable[[], float] = time.time,
) -> PaymentService:
    metrics = Metrics()
    simulator = Simulator(nursery, settings.max_pending_payments, metrics.pending_changed)
    return PaymentService(
        ServiceParts(
            store=store,
            simulator=simulator,
            notifier=DropNotifier(),
            metrics=metrics,
        ),
        settings,
        wall_clock=wall_clock,
    )


# --- listing ---------------------------------------------------------------------------


@dataclass
class ListingResult:
    payments: int
    users: int
    own: int
    insert_per_s: float
    first_p50_us: float
    first_p99_us: float
    cursor_p50_us: float
    cursor_p99_us: float


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _fill(store: MemoryStore, payments: int, users: int) -> float:
    """Insert ``payments`` PENDING payments for ``users`` users in turn; payments per second."""
    user_ids = [f"user-{u:06d}" for u in range(users)]
    amount = Money(10_000, "KRW")
    metadata = Metadata(source="bench")
    outcome = Outcome(PaymentStatus.COMPLETED, 2.0)

    async def fill() -> None:
        for i in range(payments):
            at = EPOCH + i * 1e-3
            await store.insert(
                Payment(
                    payment_intent_id=new_id("pay"),
                    reservation_id=f"rsv-{i}",
                    user_id=user_ids[i % users],
                    amount=amount,
                    method=PaymentMethod.CREDIT_CARD,
                    scenario=Scenario.APPROVE,
                    webhook_url="",
                    metadata=metadata,
                    client_secret="",
                    outcome=outcome,
                    status=PaymentStatus.PENDING,
                    created_at=at,
                    updated_at=at,
                    expires_at=at + 900.0,
                )
            )

    started = time.perf_counter()
    trio.run(fill)
    return payments / (time.perf_counter() - started)


def _time_listing(store: MemoryStore, user: str, calls: int) -> tuple[list[float], list[float]]:
    """Durations (µs) of ListPayments calls: the first page, and the page after it."""

    async def run() -> tuple[list[float], list[float]]:
        async with trio.open_nursery() as nursery:
            service = _service(nursery, store, SimulationSettings())

            async def call(cursor: str) -> listing.Page:
                query = validate_list(
                    user_id=user,
                    status=PaymentStatus.UNSPECIFIED,
                    reservation_id="",
                    page=0,
                    page_size=PAGE_SIZE,
                    cursor=cursor,
                )
                return await service.list_payments(query)

            first = await call("")
            if len(first.payments) != PAGE_SIZE or not first.next_cursor:
                raise SystemExit(f"{user} has fewer than {PAGE_SIZE + 1} payments")
            cursor = first.next_cursor
            results: list[list[float]] = []
            for which in ("", cursor):
                for _ in range(WARMUP_CALLS):
                    await call(which)
                durations = []
                for _ in range(calls):
                    started = time.perf_counter_ns()
                    await call(which)
                    durations.append((time.perf_counter_ns() - started) / 1000)
                durations.sort()
                results.append(durations)
            nursery.cancel_scope.cancel()
            return results[0], results[1]

    return trio.run(run)


def run_listing(layouts: list[tuple[int, int]], calls: int) -> list[ListingResult]:
    runtime.tune_gc(Settings().gc_thresholds)  # as paysim serve
    results = []
    for payments, users in layouts:
        store = MemoryStore()
        rate = _fill(store, payments, users)
        first, after = _time_listing(store, "user-000000", calls)
        results.append(
            ListingResult(
                payments=payments,
                users=users,
                own=payments // users,
                insert_per_s=rate,
                first_p50_us=_percentile(first, 0.50),
                first_p99_us=_percentile(first, 0.99),
                cursor_p50_us=_percentile(after, 0.50),
                cursor_p99_us=_percentile(after, 0.99),
            )
        )
        del store
        gc.collect()
    return results


# --- memory (each case in a child process) -------------------------------------------


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


def _setup_process() -> int:
    """As ``paysim serve``: GC thresholds, start-up objects frozen. The baseline RSS (KiB)."""
    runtime.tune_gc(Settings().gc_thresholds)
    runtime.freeze_startup_objects()
    gc.collect()
    return _rss_kib()


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


def memory_pending(count: int) -> MemoryResult:
    settings = SimulationSettings(max_pending_payments=count + 1)
    store = MemoryStore()

    async def run() -> tuple[int, int, float, float]:
        async with trio.open_nursery() as nursery:
            service = _service(nursery, store, settings)
            baseline = _setup_process()
            started = time.perf_counter()
            for i in range(count):
                await service.create_intent(_command(i, "600000"))
            create_s = time.perf_counter() - started
            await trio.testing.wait_all_tasks_blocked()  # every timer task started
            gc.collect()
            rss = _rss_kib()
            real_s = time.perf_counter() - started
            nursery.cancel_scope.cancel()
            return baseline, rss, create_s, real_s

    baseline, rss, create_s, real_s = trio.run(run)
    peak = _rss_kib("VmHWM") - baseline
    return MemoryResult(
        case=f"{count:,} pending (timers armed)",
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
            samples.append((len(store), _rss_kib()))

    async def run() -> dict[str, float]:
        async with trio.open_nursery() as nursery:
            service = _service(nursery, store, settings, wall_clock)
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
            at_end = {"stored": len(store), "rss": _rss_kib() - baseline}
            await trio.sleep(retention_s + 5.0)
            gc.collect()
            after = {
                "stored": len(store),
                "rss": _rss_kib() - baseline,
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
    peak = _rss_kib("VmHWM") - r["baseline"]
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


def _run_child(args: list[str]) -> MemoryResult:
    out = subprocess.run(
        [sys.executable, "-m", "paysim.benchmarks.lifecycle", "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stdout}{out.stderr}")
    return MemoryResult(**json.loads(out.stdout.strip().splitlines()[-1]))


# --- main ------------------------------------------------------------------------------


def _layouts(text: str) -> list[tuple[int, int]]:
    layouts = []
    for part in text.split(","):
        payments, users = part.lower().split("x")
        layouts.append((int(payments), int(users)))
    return layouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="time ListPayments")
    parser.add_argument("--memory", action="store_true", help="measure memory per payment")
    parser.add_argument("--layouts", type=_layouts, default=_layouts(DEFAULT_LAYOUTS))
    parser.add_argument("--calls", type=int, default=2_000, help="timed calls per page kind")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--churn", type=int, default=1_000_000)
    parser.add_argument("--churn-minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, *rest = args.child
        if kind == "pending":
            result = memory_pending(int(rest[0]))
        else:
            result = memory_churn(int(rest[0]), float(rest[1]))
        print(json.dumps(asdict(result)))
        return 0

    both = not args.list and not args.memory
    summary: dict[str, object] = {}
    if args.list or both:
        rows = run_listing(args.layouts, args.calls)
        summary["listing"] = [asdict(r) for r in rows]
        print(
            f"ListPayments: validate_list + service.list_payments, page_size {PAGE_SIZE}, "
            f"{args.calls} timed calls per column"
        )
        print(f"{'payments':>10}{'users':>8}{'own':>6}{'insert/s':>11}"
              f"{'first p50':>11}{'p99 µs':>8}{'cursor p50':>12}{'p99 µs':>8}")  # fmt: skip
        for r in rows:
            print(
                f"{r.payments:>10,}{r.users:>8,}{r.own:>6,}{r.insert_per_s:>11,.0f}"
                f"{r.first_p50_us:>11.1f}{r.first_p99_us:>8.1f}"
                f"{r.cursor_p50_us:>12.1f}{r.cursor_p99_us:>8.1f}"
            )
        same_own = [r for r in rows if r.own == rows[0].own]
        if len(same_own) > 1:
            growth = same_own[-1].first_p50_us / same_own[0].first_p50_us
            print(
                f"first page p50, {same_own[-1].payments:,} vs {same_own[0].payments:,} "
                f"payments with {rows[0].own} of the user's own: x{growth:.2f}"
            )
    if args.memory or both:
        results = [
            _run_child(["pending", str(args.pending)]),
            _run_child(["churn", str(args.churn), str(args.churn_minutes)]),
        ]
        summary["memory"] = [asdict(r) for r in results]
        print("memory: VmRSS after gc.collect() minus the baseline after setup (MiB)")
        print(f"{'case':<44}{'stored':>10}{'RSS':>8}{'B/payment':>11}{'peak':>8}{'real s':>8}")
        for m in results:
            print(
                f"{m.case:<44}{m.stored_at_end:>10,}{m.rss_at_end_mib:>8.1f}"
                f"{m.bytes_per_payment:>11,.0f}{m.peak_mib:>8.1f}{m.real_s:>8.1f}"
            )
            if m.create_us is not None:
                print(f"  create_intent: {m.create_us:.1f} µs per call")
            if m.stored_after_retention is not None:
                print(
                    f"  most stored at once {m.peak_stored:,}; 65 s after the last creation: "
                    f"{m.stored_after_retention:,} stored, RSS {m.rss_after_retention_mib:.1f} "
                    f"MiB, {m.blocks_after_retention:+,} allocated blocks"
                )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
