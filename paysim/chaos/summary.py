"""A finished chaos run in numbers: the invariants checked, the faults' evidence, the counts.

``summarize(run)`` turns what a ``ChaosRun`` recorded into a ``Result``: it
runs ``invariants.check_all`` on the evidence, and for each fault the number
of times it happened with the evidence in words (the receiver's answers, the
server's own counters scraped before it stopped, the shutdown report). A
fault that was on and never happened becomes a warning.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from paysim.chaos import invariants
from paysim.chaos.options import Windows
from paysim.chaos.report import FaultRow, Result
from paysim.loadgen.scrape import by_label

if TYPE_CHECKING:
    from paysim.chaos.run import ChaosRun


def summarize(run: ChaosRun) -> Result:
    assert run.driver is not None
    started = time.time()
    evidence = invariants.Evidence(
        intents=run.driver.intents,
        receipts=run.receiver.receipts,
        events=run.events.events if run.events is not None else None,
        snapshot=run.driver.snapshot,
        random_approve_rate=run.o.random_approve_rate,
        sigma=run.o.sigma,
        shutdown=run.shutdown,
    )
    checks = invariants.check_all(evidence)
    vs = invariants.views(evidence)
    run.phases["verify"] = time.time() - started
    faults = fault_rows(run, vs)
    warnings = [
        f"{f.name} was enabled but never happened: the run proves nothing about it"
        for f in faults
        if f.enabled and not f.exercised
    ]
    return Result(
        title=(
            f"paysim chaos: {run.o.count:,} payments at {run.o.rate:g}/s, "
            f"seed {run.o.seed}, events via {events_mode(run)}, "
            f"time scale {run.o.time_scale:g}"
        ),
        seed=run.o.seed,
        command=run.command,
        settings=settings(run),
        wall_s=time.time() - run.t0,
        phases=run.phases,
        counts=counts(run, vs),
        faults=faults,
        windows=run.windows,
        checks=checks,
        timeline=run.timeline,
        sigterm_at_s=run.sigterm_at,
        load_end_s=run.load_end,
        warnings=warnings,
    )


def events_mode(run: ChaosRun) -> str:
    if run.o.target is not None:
        return "the platform's queue" if run.o.queue_url else "(not read)"
    return "moto (EventBridge -> rule -> SQS)" if run.o.events == "moto" else "a PutEvents sink"


def fault_rows(run: ChaosRun, vs: dict[str, invariants.PaymentView]) -> list[FaultRow]:
    f, m, answers = run.o.faults, run.metrics, run.receiver.answers
    attempts = by_label(m, "paysim_webhook_attempts_total", "result")
    chaos = by_label(m, "paysim_webhook_chaos_total", "kind")
    failed_events = by_label(m, "paysim_events_failed_attempts_total", "reason")
    acked: dict[str, int] = {}
    for r in run.receiver.receipts:
        if r.answer == "ok":
            acked[r.webhook_id] = acked.get(r.webhook_id, 0) + 1
    repeats = sum(1 for n in acked.values() if n > 1)
    stale = sum(v.stale for v in vs.values())

    def windows(kind: str) -> int:
        return sum(1 for w in run.windows if w.kind == kind)

    def setting(p: float) -> str:
        return f"p={p:g}" if p else "off"

    def span(w: Windows) -> str:
        return f"{w.count} x {w.seconds:g} s" if w.enabled else "off"

    pending = run.server.log.first("shutting down") if run.server else None
    sigterm = ""
    resolving = run.server.log.first("resolving pending payments") if run.server else None
    if run.shutdown is not None and pending is not None:
        sigterm = f"{pending.get('pending', '?')} payments pending at SIGTERM"
        if resolving is not None:
            sigterm += f" ({resolving.get('early', '?')} resolved early)"
        sigterm += f", exit {run.shutdown.exit_code}"

    def server(text: str) -> str:
        """The server's own count, when its metrics could be read (not with --target)."""
        return f"; server: {text}" if m else ""

    dup, over, held = (chaos.get(k, 0.0) for k in ("duplicate", "reorder", "hold"))
    rows = [
        ("webhook 5xx", setting(f.webhook_5xx), answers["5xx"],
         "answered 500/502/503" + server(f"{attempts.get('5xx', 0):.0f} before SIGTERM")),
        ("webhook timeout", setting(f.webhook_timeout), answers["timeout"],
         "no answer in time" + server(f"{attempts.get('timeout', 0):.0f} before SIGTERM")),
        ("webhook connection reset", setting(f.webhook_reset), answers["reset"],
         "RST after reading the request"),
        ("receiver down", span(f.receiver_down), windows("receiver down"),
         "windows: connections refused, open ones reset"
         + server(f"{attempts.get('error', 0):.0f} connection errors in all")),
        ("duplicate delivery", setting(f.duplicate_rate), int(dup) if m else repeats,
         f"{repeats} webhook ids acknowledged more than once" + server(f"{dup:.0f} copies")),
        ("out-of-order delivery", setting(f.reorder_rate), int(over) if m else stale,
         f"{stale} stale webhooks ignored by the consumer fold"
         + server(f"{over:.0f} overtaken, {held:.0f} held back")),
        ("EventBridge outage", span(f.events_outage), windows("EventBridge outage"),
         "windows: connections refused, open ones reset"
         + server(f"{sum(failed_events.values()):.0f} failed PutEvents entry attempts")),
        ("SIGTERM", "at the end" if f.sigterm else "off", int(run.shutdown is not None),
         sigterm),
    ]  # fmt: skip
    enabled = f.enabled()
    return [FaultRow(name, s, enabled[name], n, ev) for name, s, n, ev in rows]


def counts(run: ChaosRun, vs: dict[str, invariants.PaymentView]) -> dict[str, Any]:
    assert run.driver is not None
    d = run.driver
    answers = run.receiver.answers
    by_final: dict[str, int] = {}
    for v in vs.values():
        by_final[v.final] = by_final.get(v.final, 0) + 1
    return {
        "payments planned": run.o.count,
        "creates sent": d.sent,
        "intents accepted": d.accepted,
        "driver errors": dict(d.errors),
        "cancels that lost the race to the timer": sum(i.race_lost for i in d.intents),
        "max send lateness (s)": round(d.max_lateness_s, 3),
        "final statuses": dict(sorted(by_final.items())),
        "webhook requests received": len(run.receiver.receipts),
        "webhook answers": dict(answers),
        "events seen": len(run.events.events) if run.events else None,
        "events read twice (at least once)": run.events.repeats if run.events else None,
        "server RPC log lines": run.server.log.rpc_lines if run.server else None,
    }


def settings(run: ChaosRun) -> dict[str, Any]:
    o = run.o
    return {
        "count": o.count,
        "rate": o.rate,
        "mix": o.mix,
        "seed": o.seed,
        "time scale": o.time_scale,
        "RANDOM_APPROVE_RATE": o.random_approve_rate,
        "sigma": o.sigma,
        "events": events_mode(run),
        "target": o.target or "a server started here",
        "faults": {name: on for name, on in o.faults.enabled().items()},
    }
