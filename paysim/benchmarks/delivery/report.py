"""The numbers of one run (``Report``), computed from its ``Outcome`` and printed."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

from paysim.benchmarks.delivery.constants import (
    FOREIGN_LOAD_WARNING,
    OTHER_CORE,
    SERVER_CORE,
    TARGET_P99_S,
    TARGET_RATE,
)
from paysim.benchmarks.delivery.harness import Outcome
from paysim.benchmarks.delivery.sampling import Sample
from paysim.benchmarks.h2load import percentile
from paysim.loadgen.scrape import by_label, series


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


def build_report(args: argparse.Namespace, o: Outcome) -> Report:
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
    prev: Sample | None = None
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


def print_report(r: Report) -> None:
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
