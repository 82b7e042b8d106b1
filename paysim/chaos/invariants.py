"""The promises a chaos run checks, as pure functions of what was recorded.

``check_all(evidence)`` returns one ``Check`` per invariant: passed, failed
(with the number of violations and a few examples) or skipped (with why).
Nothing here does I/O, so each check is unit-tested with synthetic records,
including ones that violate it.

How the records are read (the policy decisions):

* **The consumer's view of a payment** (``fold``): the acknowledged (2xx,
  validly signed) webhooks in arrival order, de-duplicated by X-Webhook-Id,
  each applied only if paysim's state table allows it from the state reached
  so far (``paysim.domain.state``). A stale change (an older state delivered
  after a newer one, which out-of-order delivery does on purpose) is ignored,
  as a consumer must. "The last webhook" is the state this fold ends in.
* **A change** is (payment id, status, amount refunded so far): a partial
  refund leaves the status COMPLETED but is a change of its own. The changes
  of a payment are those its journey must make (``Scenario.path``, or just its
  outcome) plus any seen in a webhook or an event.
* **The final status** is GetPaymentStatus's when the snapshot found the
  payment settled; otherwise (the payment was still pending when the server
  was sent SIGTERM, and resolved in the drain, after which there is no server
  to ask) the fold of its webhooks, else of its events. Those payments are
  not compared with GetPaymentStatus; every other check applies to them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from paysim.chaos.driver import Intent
from paysim.chaos.events import EventSeen
from paysim.chaos.receiver import Receipt
from paysim.chaos.scenarios import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    SCENARIOS,
    TERMINAL,
    TIMER_OUTCOMES,
)
from paysim.domain.models import PaymentStatus
from paysim.domain.state import can_transition

EXAMPLES = 5
MIN_RANDOM_SAMPLE = 30

Change = tuple[str, int]  # (status, refunded) of one payment


@dataclass(frozen=True)
class Shutdown:
    """What the SIGTERM of the server left behind."""

    exit_code: int | None  # None: it did not exit in time
    unresolved: tuple[str, ...] = ()  # payment ids from "unresolved payments at shutdown"
    undelivered_webhooks: tuple[str, ...] = ()
    undelivered_events: tuple[str, ...] = ()
    grace_ran_out: bool = False
    traceback: bool = False


@dataclass
class Evidence:
    intents: list[Intent]
    receipts: list[Receipt]
    events: list[EventSeen] | None  # None: the queue was not read
    # payment id -> GetPaymentStatus's status ("NOT_FOUND", "ERROR …"); absent: not asked
    snapshot: dict[str, str]
    random_approve_rate: float
    sigma: float = 4.5
    shutdown: Shutdown | None = None  # None: no SIGTERM was sent


@dataclass
class Check:
    key: str
    title: str
    status: str = "pass"  # pass, fail, skip
    checked: int = 0
    violations: int = 0
    detail: str = ""
    examples: list[str] = field(default_factory=list)

    def violate(self, example: str) -> None:
        self.violations += 1
        self.status = "fail"
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def skip(self, why: str) -> Check:
        self.status, self.detail = "skip", why
        return self


@dataclass
class PaymentView:
    """Everything recorded about one accepted payment."""

    intent: Intent
    receipts: list[Receipt] = field(default_factory=list)  # arrival order
    events: list[EventSeen] = field(default_factory=list)
    snapshot: str = ""
    folded: str = PENDING  # the consumer's state after its acknowledged webhooks
    stale: int = 0  # acknowledged webhooks the fold ignored (arrived out of order)
    final: str = PENDING

    @property
    def settled_at_snapshot(self) -> bool:
        return self.snapshot in TERMINAL

    def expected_changes(self) -> set[Change]:
        """The changes its journey must have made: the scenario's path, or its outcome."""
        scenario = SCENARIOS[self.intent.scenario]
        if scenario.path and not (self.intent.race_lost or self.intent.step_error):
            return set(scenario.path)
        return {(self.final, 0)} if self.final in TERMINAL else set()

    def changes(self) -> set[Change]:
        seen = {(r.status, r.refunded) for r in self.receipts}
        seen |= {(e.status, e.refunded) for e in self.events}
        return self.expected_changes() | seen


def fold(statuses: Iterable[str]) -> tuple[str, int]:
    """A consumer's state after ``statuses`` in order, and how many it ignored as stale."""
    state, stale = PENDING, 0
    for status in statuses:
        if status == state:
            continue
        if _legal(state, status):
            state = status
        else:
            stale += 1
    return state, stale


def _legal(current: str, new: str) -> bool:
    try:
        a = PaymentStatus[current.removeprefix("PAYMENT_STATUS_")]
        b = PaymentStatus[new.removeprefix("PAYMENT_STATUS_")]
    except KeyError:
        return False
    return can_transition(a, b)


def views(e: Evidence) -> dict[str, PaymentView]:
    """One view per accepted payment, by payment id."""
    out = {i.payment_id: PaymentView(i) for i in e.intents if i.accepted}
    for r in sorted(e.receipts, key=lambda r: r.t):
        if r.payment_id in out:
            out[r.payment_id].receipts.append(r)
    for ev in sorted(e.events or (), key=lambda ev: ev.t):
        if ev.payment_id in out:
            out[ev.payment_id].events.append(ev)
    for pid, v in out.items():
        v.snapshot = e.snapshot.get(pid, "")
        seen: set[str] = set()
        acked = []
        for r in v.receipts:
            if r.answer == "ok" and r.signature_ok and r.webhook_id not in seen:
                seen.add(r.webhook_id)
                acked.append(r.status)
        v.folded, v.stale = fold(acked)
        by_events, _ = fold(ev.status for ev in v.events)
        if v.settled_at_snapshot:
            v.final = v.snapshot
        elif v.folded in TERMINAL:
            v.final = v.folded
        elif by_events in TERMINAL:
            v.final = by_events
        else:
            v.final = v.snapshot or v.folded
    return out


# -- the checks ----------------------------------------------------------------------


def check_terminal(vs: dict[str, PaymentView]) -> Check:
    c = Check("terminal", "every accepted intent reached a terminal status", checked=len(vs))
    for pid, v in vs.items():
        if v.final not in TERMINAL:
            seen = v.snapshot or "no answer"
            c.violate(
                f"{pid} ({v.intent.scenario}): GetPaymentStatus {seen}, no terminal webhook/event"
            )
    return c


def check_status_agrees(vs: dict[str, PaymentView]) -> Check:
    c = Check("status", "GetPaymentStatus agrees with the last webhook")
    late = 0
    for pid, v in vs.items():
        if v.snapshot == "NOT_FOUND" or v.snapshot.startswith("ERROR"):
            c.checked += 1
            c.violate(f"{pid}: GetPaymentStatus answered {v.snapshot}")
        elif not v.settled_at_snapshot:  # not asked, or not settled yet when asked
            late += 1
        else:
            c.checked += 1
            if v.folded != v.snapshot:
                c.violate(f"{pid}: GetPaymentStatus {v.snapshot}, webhooks say {v.folded}")
    if late:
        c.detail = (
            f"{late} not settled when last asked (pending at SIGTERM, resolved in the drain): "
            "checked through their webhooks and events"
        )
    return c


def check_webhooks(vs: dict[str, PaymentView], receipts: list[Receipt]) -> Check:
    c = Check("webhooks", "every change delivered at least once, validly signed, stable id")
    for pid, v in vs.items():
        acked = {(r.status, r.refunded) for r in v.receipts if r.answer == "ok" and r.signature_ok}
        for status, refunded in sorted(v.changes()):
            c.checked += 1
            if (status, refunded) not in acked:
                c.violate(f"{pid}: {status} (refunded {refunded}) never acknowledged")
    bad = [r for r in receipts if not r.signature_ok]
    for r in bad:
        c.violate(f"{r.payment_id}: bad signature on {r.webhook_id} attempt {r.attempt}")
    bodies: dict[str, set[str]] = defaultdict(set)
    ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for r in receipts:
        bodies[r.webhook_id].add(r.digest)
        ids[r.change].add(r.webhook_id)
    for webhook_id, digests in bodies.items():
        if len(digests) > 1:
            c.violate(f"{webhook_id}: one X-Webhook-Id carried {len(digests)} different bodies")
    for (pid, status, _), webhook_ids in ids.items():
        if len(webhook_ids) > 1:
            c.violate(f"{pid}: {status} sent under {len(webhook_ids)} different X-Webhook-Ids")
    return c


def check_events(vs: dict[str, PaymentView], events: list[EventSeen] | None) -> Check:
    c = Check("events", "every change reached the SQS queue")
    if events is None:
        return c.skip("the queue was not read (give --queue-url with --target)")
    for pid, v in vs.items():
        evented = {(ev.status, ev.refunded) for ev in v.events}
        for status, refunded in sorted(v.changes()):
            c.checked += 1
            if (status, refunded) not in evented:
                c.violate(f"{pid}: {status} (refunded {refunded}) not in the queue")
    for ev in events:
        if not ev.contract_ok:
            c.violate(f"{ev.payment_id}: event {ev.message_id} with a foreign source or type")
    return c


def check_random_ratio(vs: dict[str, PaymentView], rate: float, sigma: float) -> Check:
    c = Check("random", f"RANDOM's approve ratio within {sigma:g} sigma of {rate:g}")
    outcomes = [v.final for v in vs.values() if v.intent.scenario == "random"]
    decided = [s for s in outcomes if s in (COMPLETED, FAILED)]
    c.checked = n = len(decided)
    if n < MIN_RANDOM_SAMPLE:
        return c.skip(f"{n} RANDOM payments settled; at least {MIN_RANDOM_SAMPLE} are needed")
    approved = decided.count(COMPLETED)
    ratio = approved / n
    sd = math.sqrt(rate * (1.0 - rate) / n)
    bound = sigma * sd
    c.detail = f"{approved}/{n} = {ratio:.4f}, allowed {rate:g} ± {bound:.4f}"
    if abs(ratio - rate) > bound + 1e-12:
        c.violate(
            f"approve ratio {ratio:.4f} is {abs(ratio - rate) / max(sd, 1e-12):.1f} sigma off"
        )
    return c


def check_cancelled_timers(vs: dict[str, PaymentView]) -> Check:
    c = Check("timers", "nothing delivered for a cancelled timer")
    for pid, v in vs.items():
        if not v.intent.cancelled:
            continue
        c.checked += 1
        leaked = {r.status for r in v.receipts} | {ev.status for ev in v.events}
        leaked &= TIMER_OUTCOMES
        if leaked:
            c.violate(f"{pid} ({v.intent.scenario}): cancelled, then {', '.join(sorted(leaked))}")
        elif v.final != CANCELLED:
            c.violate(f"{pid} ({v.intent.scenario}): cancelled, but ended {v.final}")
    if not c.checked:
        return c.skip("no payment was cancelled while pending (no cancel scenarios in --mix)")
    return c


def check_outcomes(vs: dict[str, PaymentView]) -> Check:
    c = Check("outcomes", "every payment ended where its scenario says", checked=len(vs))
    for pid, v in vs.items():
        scenario = SCENARIOS[v.intent.scenario]
        expected = scenario.race_lost if v.intent.race_lost else scenario.expected
        if v.intent.step_error:
            c.violate(f"{pid} ({scenario.name}): {v.intent.step_error}")
        elif v.final in TERMINAL and v.final not in expected:
            c.violate(f"{pid} ({scenario.name}): ended {v.final}, expected {'/'.join(expected)}")
    return c


def check_shutdown(shutdown: Shutdown | None) -> Check:
    c = Check("sigterm", "SIGTERM: drained in the grace, everything announced, exit 0")
    if shutdown is None:
        return c.skip("no SIGTERM was sent (--no-sigterm, or --target)")
    c.checked = 1
    if shutdown.exit_code != 0:
        c.violate(f"exit status {shutdown.exit_code}")
    for what, ids in (
        ("unresolved payments", shutdown.unresolved),
        ("undelivered webhooks", shutdown.undelivered_webhooks),
        ("undelivered events", shutdown.undelivered_events),
    ):
        if ids:
            c.violate(f"{len(ids)} {what} at shutdown, e.g. {', '.join(ids[:3])}")
    if shutdown.grace_ran_out:
        c.violate("the grace period ran out")
    if shutdown.traceback:
        c.violate("a traceback on the server's stderr")
    return c


def check_all(e: Evidence) -> list[Check]:
    vs = views(e)
    return [
        check_terminal(vs),
        check_status_agrees(vs),
        check_webhooks(vs, e.receipts),
        check_events(vs, e.events),
        check_random_ratio(vs, e.random_approve_rate, e.sigma),
        check_cancelled_timers(vs),
        check_outcomes(vs),
        check_shutdown(e.shutdown),
    ]


def passed(checks: list[Check]) -> bool:
    return all(c.status != "fail" for c in checks)
