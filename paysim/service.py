"""Use cases: the only code that moves a payment from one status to another.

``PaymentService`` validates nothing: the edge parsed each request into a
complete command (``domain.validation``), and the rules it applies are the
domain's (``domain.state``: which status may do what; ``domain.outcomes``: what
the simulated PG answers). It adds what needs the store and time: idempotency
(``paysim.idempotency``), capacity and timers (``Simulator``), simulated time
(``SimClock``) and one notification per status change. Every change is a
compare-and-set on the store, so a timer firing and a ProcessPayment racing
on one payment cannot both win.

Owns nothing it must close: the store, the simulator (and its nursery) and the
notifier are the wiring's, which opens them before and closes them after.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from paysim import idempotency, runtime
from paysim.domain import forced_outcomes, listing, outcomes, state
from paysim.domain.ids import new_id
from paysim.domain.models import (
    CancelCommand,
    CancelResult,
    CreateIntent,
    IntentCreated,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    Scenario,
    Simulated,
    StatusChange,
)
from paysim.errors import FailedPrecondition, IdempotencyConflict, NotFound, Overloaded
from paysim.observability.metrics import Metrics
from paysim.ports import IdempotencyRecord, Notifier, PaymentStore
from paysim.simulator import Simulator

if TYPE_CHECKING:  # the shape of the settings it reads; the wiring passes them in
    from paysim.config import SimulationSettings

log = structlog.get_logger("paysim.service")


_CAS_ATTEMPTS = 8
_LARGE_SWEEP = 50_000  # payments dropped at once: their memory goes back (malloc_trim)


@dataclass(frozen=True, slots=True)
class ServiceParts:
    """What the service works with; the wiring opens each before and closes it after."""

    store: PaymentStore
    simulator: Simulator
    notifier: Notifier
    metrics: Metrics


class PaymentService:
    def __init__(
        self,
        parts: ServiceParts,
        settings: SimulationSettings,
        *,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``rng`` defaults to one seeded by ``settings.seed``; both seams are for tests."""
        self._store = parts.store
        self._simulator = parts.simulator
        self._notifier = parts.notifier
        self._metrics = parts.metrics
        self._settings = settings
        self._rng = rng if rng is not None else random.Random(settings.seed)
        self._now = wall_clock
        self._keys = idempotency.Keys(parts.store, settings.idempotency_ttl_s, wall_clock)
        self._fire_timer = self._fire  # one bound method for every timer, not one each
        self._clock = settings.clock
        self._default_scenario = Scenario.from_name(settings.default_scenario)
        self._timing = outcomes.Timing(
            default_delay_s=settings.default_delay_s,
            delay_scenario_s=settings.delay_scenario_s,
            intent_ttl_s=settings.intent_ttl_s,
            random_approve_rate=settings.random_approve_rate,
        )

    def reseed(self, seed: int) -> None:
        """Restart the outcome randomness from ``seed`` (``paysim.testing``'s ``sim.seed``)."""
        self._rng.seed(seed)

    # -- CreatePaymentIntent ---------------------------------------------------
    async def create_intent(self, cmd: CreateIntent) -> IntentCreated:
        scenario = outcomes.resolve_scenario(cmd.scenario, cmd.metadata, self._default_scenario)
        payment_intent_id = new_id("pay")
        key = cmd.idempotency_key
        if key:
            fingerprint = idempotency.fingerprint(cmd.fingerprint())
            existing = await self._keys.claim(cmd.user_id, key, fingerprint, payment_intent_id)
            if existing is not None:
                return await self._replay(cmd, existing, fingerprint)
        try:
            # The slot is taken before any await, so concurrent creates cannot overshoot.
            self._simulator.reserve(payment_intent_id)
        except Overloaded:
            self._metrics.payment_rejected("overload")
            if key:
                await self._keys.release(cmd.user_id, key, shield=False)
            raise
        outcome = outcomes.decide(scenario, self._timing, self._rng, cmd.delay_override_s)
        if cmd.forced_outcome is not None:
            outcome = forced_outcomes.outcome(
                cmd.forced_outcome, outcome.delay_s, self._settings.intent_ttl_s
            )
        now = self._now()
        expires_at = now + self._clock.real(self._settings.intent_ttl_s)
        payment = cmd.new_payment(payment_intent_id, scenario, outcome, now, expires_at)
        try:
            await self._store.insert(payment)
        except BaseException:
            self._simulator.cancel(payment_intent_id)
            if key:
                # An insert that failed may still have run (its answer lost): then
                # the key stays with the payment, and a retry gets it, not a twin.
                await self._keys.release(cmd.user_id, key, unless_created=payment_intent_id)
            raise
        self._simulator.arm(payment_intent_id, self._clock.real(outcome.delay_s), self._fire_timer)
        self._metrics.payment_created(scenario.name.lower())
        structlog.contextvars.bind_contextvars(payment_id=payment_intent_id)
        return IntentCreated(payment, replayed=False)

    async def _replay(
        self, cmd: CreateIntent, existing: IdempotencyRecord, fingerprint: str
    ) -> IntentCreated:
        if existing.fingerprint != fingerprint:
            self._metrics.payment_rejected("idempotency_conflict")
            raise IdempotencyConflict(cmd.idempotency_key)
        payment = await self._store.get(existing.payment_intent_id)
        if payment is None:  # the original was dropped by retention
            raise NotFound("payment for this idempotency key", cmd.idempotency_key)
        structlog.contextvars.bind_contextvars(payment_id=payment.payment_intent_id)
        return IntentCreated(payment, replayed=True)

    # -- GetPaymentStatus ------------------------------------------------------
    async def get_payment(self, payment_intent_id: str, user_id: str = "") -> Payment:
        """The payment; NotFound also when ``user_id`` is given and is not the owner."""
        structlog.contextvars.bind_contextvars(payment_id=payment_intent_id)
        payment = await self._store.get(payment_intent_id)
        if payment is None or (user_id and payment.user_id != user_id):
            raise NotFound("payment", payment_intent_id)
        return payment

    # -- ProcessPayment --------------------------------------------------------
    async def process_payment(
        self,
        payment_intent_id: str,
        method: PaymentMethod = PaymentMethod.UNSPECIFIED,
        forced: str | None = None,
    ) -> Payment:
        """Resolve a PENDING intent now with its pre-decided outcome.

        A TIMEOUT intent becomes PROCESSING (the PG took the card and never
        answers) and still expires at ``expires_at``. A resolved intent is
        returned as it is: nothing is decided twice. ``forced`` (a test card's
        outcome, see ``forced_outcomes``) replaces the outcome decided at
        creation.
        """
        payment = await self.get_payment(payment_intent_id)
        if payment.status not in state.PROCESSABLE:
            return payment
        state.check_method(payment, method)
        changes: dict[str, object] = {}
        if method is not PaymentMethod.UNSPECIFIED:
            changes["method"] = method
        outcome = payment.outcome
        if forced is not None:
            outcome = forced_outcomes.outcome(forced, outcome.delay_s, self._settings.intent_ttl_s)
            changes["outcome"] = outcome
        if outcome.status is PaymentStatus.EXPIRED:
            # The PG now never answers. The payment's timer, here or on another
            # replica, finds it PROCESSING and waits on to the expiry (see _fire).
            return (await self._apply(payment, PaymentStatus.PROCESSING, changes))[1]
        self._simulator.cancel(payment_intent_id)
        return (await self._resolve(payment, changes))[1]

    # -- CancelPayment ---------------------------------------------------------
    async def cancel_payment(self, cmd: CancelCommand) -> CancelResult:
        """Cancel an uncaptured payment, or refund (fully or partly) a COMPLETED one.

        With an idempotency key (scoped to the payment), a retry returns the
        first answer and changes nothing; the same key with other parameters
        is a conflict. A request that fails gives its key back.
        """
        pid = cmd.payment_intent_id
        payment = await self.get_payment(pid)
        return await self._keys.once(
            idempotency.cancel_scope(pid),
            cmd.idempotency_key,
            cmd.fingerprint(),
            pid,
            lambda: self._cancel(payment, cmd),
        )

    async def _cancel(self, payment: Payment, cmd: CancelCommand) -> CancelResult:
        for _ in range(_CAS_ATTEMPTS):
            refund_requested = cmd.refund_amount is not None
            action = state.cancel_action(payment.status, refund_requested=refund_requested)
            if action is state.CancelAction.CANCEL:
                won, updated = await self._cancel_uncaptured(payment, cmd.reason)
                if won:
                    assert updated.cancelled_at is not None
                    return CancelResult(PaymentStatus.CANCELLED, updated.cancelled_at, None, "")
            else:
                won, updated, refund = await self._refund(payment, cmd.refund_amount, cmd.reason)
                if won:
                    assert refund is not None
                    refunded = Money(updated.refunded, updated.amount.currency)
                    return CancelResult(updated.status, refund.at, refunded, refund.refund_id)
            payment = updated  # lost a race; decide again on what won
        raise FailedPrecondition("payment is changing too fast; retry")  # pragma: no cover

    async def _cancel_uncaptured(
        self, payment: Payment, reason: str, event_id: str = ""
    ) -> tuple[bool, Payment]:
        """PENDING or PROCESSING → CANCELLED; on success nothing scheduled for it runs."""
        won, updated = await self._apply(
            payment,
            PaymentStatus.CANCELLED,
            {"cancelled_at": self._now(), "cancellation_reason": reason},
            event_id=event_id,
        )
        if won:
            self._simulator.forget(payment.payment_intent_id)
        return won, updated

    async def _refund(
        self, payment: Payment, requested: Money | None, reason: str, event_id: str = ""
    ) -> tuple[bool, Payment, Refund | None]:
        """Refund ``requested`` (None: all that remains) of a COMPLETED payment."""
        amount = state.check_refund(payment, requested)
        now = self._now()
        refund = Refund(new_id("re"), Money(amount, payment.amount.currency), reason, now)
        total = payment.refunded + amount
        full = total == payment.amount.amount
        won, updated = await self._apply(
            payment,
            PaymentStatus.REFUNDED if full else PaymentStatus.COMPLETED,
            {
                "refunded": total,
                "refunds": (*payment.refunds, refund),
                "cancelled_at": now,
                "cancellation_reason": reason,
            },
            event_id=event_id,
            refund=refund,
        )
        return won, updated, refund if won else None

    # -- ListPayments ----------------------------------------------------------
    async def list_payments(self, query: listing.ListQuery) -> listing.Page:
        return listing.paginate(await self._store.user_payments(query.user_id), query)

    # -- SimulateWebhook ---------------------------------------------------------
    async def simulate_webhook(
        self, payment_intent_id: str, target: PaymentStatus, delay_s: float, force: bool
    ) -> Simulated:
        """Re-announce the payment's state, or drive it to ``target``, now or later.

        ``target`` UNSPECIFIED or equal to the current status is a resend: the
        current state under a new event id. Any other target must be a legal
        transition now (and is checked again when a scheduled one runs).
        ``force`` sends now whatever ``delay_s`` says.
        """
        payment = await self.get_payment(payment_intent_id)
        state.check_simulated_target(payment.status, target)
        if target is payment.status:
            target = PaymentStatus.UNSPECIFIED  # a resend, of whatever state it is in by then
        event_id = new_id("evt")
        now = self._now()
        if delay_s > 0 and not force:
            delay_s = self._clock.real(delay_s)
            self._simulator.schedule_extra(
                payment_intent_id,
                delay_s,
                functools.partial(self._run_scheduled, payment_intent_id, target, event_id),
            )
            return Simulated(False, event_id, now + delay_s)
        sent = await self._simulate(payment_intent_id, target, event_id)
        return Simulated(sent, event_id, now)

    async def _run_scheduled(self, pid: str, target: PaymentStatus, event_id: str) -> None:
        try:
            await self._simulate(pid, target, event_id)
        except (NotFound, FailedPrecondition) as exc:
            log.info("scheduled simulation skipped", payment_id=pid, reason=exc.message)

    async def _simulate(self, pid: str, target: PaymentStatus, event_id: str) -> bool:
        """Carry out one simulation; True if a webhook was queued for it."""
        for _ in range(_CAS_ATTEMPTS):
            payment = await self.get_payment(pid)
            state.check_simulated_target(payment.status, target)
            if target in (PaymentStatus.UNSPECIFIED, payment.status):
                await self._notifier.notify(
                    StatusChange(event_id, payment, payment.status, self._now(), resend=True)
                )
                return bool(payment.webhook_url)
            if await self._drive(payment, target, event_id):
                return bool(payment.webhook_url)
        raise FailedPrecondition("payment is changing too fast; retry")  # pragma: no cover

    async def _drive(self, payment: Payment, target: PaymentStatus, event_id: str) -> bool:
        """Move ``payment`` to ``target`` as the simulated PG would; False if a race was lost."""
        if target is PaymentStatus.REFUNDED:
            return (await self._refund(payment, None, "simulated", event_id))[0]
        if target is PaymentStatus.CANCELLED:
            return (await self._cancel_uncaptured(payment, "simulated", event_id))[0]
        if target is PaymentStatus.PROCESSING:
            won, _ = await self._apply(payment, target, event_id=event_id)
            return won  # the timer still decides the outcome
        # COMPLETED, FAILED or EXPIRED: the PG answers now, as asked.
        outcome = forced_outcomes.for_status(payment.outcome, target)
        won, _ = await self._resolve(payment, {"outcome": outcome}, event_id=event_id)
        if won:
            self._simulator.cancel(payment.payment_intent_id)
        return won

    # -- retention ---------------------------------------------------------------
    async def sweep(self) -> int:
        """Drop what retention allows; cancel anything still scheduled for those payments;
        then give back what a storm left (``Simulator.give_back_memory``, a large sweep)."""
        dropped = await self._store.sweep(self._now())
        for pid in dropped:
            self._simulator.forget(pid)
        count = len(dropped)
        del dropped  # a storm's ids (8 MiB a million): freed before memory goes back
        if count:
            self._metrics.payments_dropped(count)
        if self._simulator.give_back_memory() or count >= _LARGE_SWEEP:
            runtime.return_free_memory()
        return count

    async def run_sweeper(self, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            await self.sweep()

    # -- replicas sharing a store (see paysim.replica) ---------------------------
    def adopt(self, payment_intent_id: str, due_at: float) -> bool:
        """Fire a payment another replica left (or a lost local timer) at ``due_at``.

        False if it cannot be scheduled now (it is already, or no slot is free).
        """
        if self._simulator.is_scheduled(payment_intent_id):
            return False
        try:
            self._simulator.schedule(
                payment_intent_id, max(0.0, due_at - self._now()), self._fire_timer
            )
        except Overloaded:
            return False
        return True

    def release_timers(self) -> list[str]:
        """Stop every local timer (their payments were handed to other replicas)."""
        return self._simulator.cancel_all()

    # -- the simulated PG answers ---------------------------------------------
    async def _fire(self, payment_intent_id: str, *, rearmed: bool = False) -> None:
        # Possibly stale (a cache): the compare-and-set checks the version, and
        # a lost race is decided again on what won.
        payment = await self._store.get_for_update(payment_intent_id)
        for _ in range(_CAS_ATTEMPTS):
            if payment is None or payment.status not in state.AWAITING_PG:
                return
            if (
                not rearmed
                and payment.status is PaymentStatus.PROCESSING
                and payment.outcome.status is PaymentStatus.EXPIRED
            ):
                # ProcessPayment (a forced PG timeout, here or on another replica)
                # moved the answer to the expiry after this timer was armed.
                due = self._clock.answers_at(payment) - self._now()
                if due > 0.001:
                    self._simulator.schedule(payment_intent_id, due, self._fire_rearmed)
                    return
            won, payment = await self._resolve(payment)
            if won:
                return

    async def _fire_rearmed(self, payment_intent_id: str) -> None:
        await self._fire(payment_intent_id, rearmed=True)

    async def _resolve(
        self, payment: Payment, changes: dict[str, object] | None = None, event_id: str = ""
    ) -> tuple[bool, Payment]:
        changes = dict(changes or {})
        outcome = changes.get("outcome", payment.outcome)
        assert isinstance(outcome, Outcome)
        changes.update(outcomes.answered(outcome, self._now()))
        return await self._apply(payment, outcome.status, changes, event_id=event_id)

    async def _apply(
        self,
        payment: Payment,
        new: PaymentStatus,
        changes: dict[str, object] | None = None,
        *,
        event_id: str = "",
        refund: Refund | None = None,
    ) -> tuple[bool, Payment]:
        """Move ``payment`` to ``new`` (compare-and-set), count it, announce it.

        Returns whether this call made the change, and the payment as it now
        is. ``new`` equal to the current status is an update without a status
        change (a partial refund).
        """
        now = self._now()
        changes = changes or {}
        if new is payment.status:
            updated = state.update(payment, now, **changes)
        else:
            updated = state.transition(payment, new, now, **changes)
        change = StatusChange(
            event_id=event_id or new_id("evt"),
            payment=updated,
            previous=payment.status,
            at=now,
            refund=refund,
        )
        # The outbox decides whether the store keeps the change for delivery.
        kept = change if self._notifier.announces(change) else None
        if not await self._store.compare_and_set(payment.version, updated, kept):
            # Someone else moved it first; theirs is the truth.
            current = await self._store.get(payment.payment_intent_id)
            return False, current if current is not None else payment
        if new is not payment.status:
            self._metrics.payment_transition(payment.status.name, new.name)
        await self._notifier.notify(change)
        return True, updated
