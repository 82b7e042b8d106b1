"""Use cases: the only code that moves a payment from one status to another.

``PaymentService`` validates nothing about wire formats (the edge did that); it
applies the rules: idempotency, capacity, the outcome decided at creation, the
state-machine table, and one notification per status change. Every change is
a compare-and-set on the store, so a timer firing and a ProcessPayment racing
on one payment cannot both win.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
import trio

from paysim.config import SimulationSettings
from paysim.domain import outcomes, state
from paysim.domain.ids import new_id, new_secret
from paysim.domain.models import (
    CreateIntent,
    Payment,
    PaymentMethod,
    PaymentResult,
    PaymentStatus,
    Scenario,
    StatusChange,
)
from paysim.domain.validation import delay_override_s, resolve_scenario
from paysim.errors import IdempotencyConflict, InvalidArgument, NotFound, Overloaded
from paysim.observability.metrics import Metrics
from paysim.ports import IdempotencyRecord, Notifier, PaymentStore
from paysim.simulator import Simulator

log = structlog.get_logger("paysim.service")


@dataclass(frozen=True, slots=True)
class IntentCreated:
    payment: Payment
    replayed: bool


class PaymentService:
    def __init__(
        self,
        *,
        store: PaymentStore,
        simulator: Simulator,
        notifier: Notifier,
        metrics: Metrics,
        settings: SimulationSettings,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._simulator = simulator
        self._notifier = notifier
        self._metrics = metrics
        self._settings = settings
        self._rng = rng if rng is not None else random.Random(settings.seed)
        self._now = wall_clock
        self._default_scenario = Scenario.from_name(settings.default_scenario)
        self._timing = outcomes.Timing(
            default_delay_s=settings.default_delay_s,
            delay_scenario_s=settings.delay_scenario_s,
            intent_ttl_s=settings.intent_ttl_s,
            random_approve_rate=settings.random_approve_rate,
        )

    # -- CreatePaymentIntent ---------------------------------------------------
    async def create_intent(self, cmd: CreateIntent) -> IntentCreated:
        scenario = resolve_scenario(cmd.scenario, cmd.metadata, self._default_scenario)
        override = delay_override_s(cmd.metadata.tags, self._settings.max_delay_s)
        payment_intent_id = new_id("pay")
        key = cmd.idempotency_key
        if key:
            fingerprint = hashlib.sha256(repr(cmd.fingerprint()).encode()).hexdigest()
            existing = await self._store.claim_idempotency(
                cmd.user_id,
                key,
                IdempotencyRecord(fingerprint, payment_intent_id),
                self._settings.idempotency_ttl_s,
                self._now(),
            )
            if existing is not None:
                return await self._replay(cmd, existing, fingerprint)
        try:
            # The slot is taken before any await, so concurrent creates cannot overshoot.
            self._simulator.reserve(payment_intent_id)
        except Overloaded:
            self._metrics.payment_rejected("overload")
            if key:
                await self._store.release_idempotency(cmd.user_id, key)
            raise
        outcome = outcomes.decide(scenario, self._timing, self._rng, override)
        now = self._now()
        payment = Payment(
            payment_intent_id=payment_intent_id,
            reservation_id=cmd.reservation_id,
            user_id=cmd.user_id,
            amount=cmd.amount,
            method=cmd.method,
            scenario=scenario,
            webhook_url=cmd.webhook_url,
            metadata=cmd.metadata,
            client_secret=new_secret(f"{payment_intent_id}_secret_"),
            outcome=outcome,
            status=PaymentStatus.PENDING,
            created_at=now,
            updated_at=now,
            expires_at=now + self._settings.intent_ttl_s,
        )
        try:
            await self._store.insert(payment)
        except BaseException:
            self._simulator.cancel(payment_intent_id)
            if key:
                with trio.CancelScope(shield=True):
                    await self._store.release_idempotency(cmd.user_id, key)
            raise
        self._simulator.arm(payment_intent_id, outcome.delay_s, self._fire)
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
        self, payment_intent_id: str, method: PaymentMethod = PaymentMethod.UNSPECIFIED
    ) -> Payment:
        """Resolve a PENDING intent now with its pre-decided outcome.

        A TIMEOUT intent becomes PROCESSING (the PG took the card and never
        answers) and still expires at ``expires_at``. A resolved intent is
        returned as it is: nothing is decided twice.
        """
        payment = await self.get_payment(payment_intent_id)
        if payment.status is not PaymentStatus.PENDING:
            return payment
        if (
            method is not PaymentMethod.UNSPECIFIED
            and payment.method is not PaymentMethod.UNSPECIFIED
            and method is not payment.method
        ):
            raise InvalidArgument(
                "payment_details.method",
                f"does not match the intent's method {payment.method.name}",
            )
        changes: dict[str, object] = {}
        if method is not PaymentMethod.UNSPECIFIED:
            changes["method"] = method
        if payment.outcome.status is PaymentStatus.EXPIRED:
            return await self._apply(payment, PaymentStatus.PROCESSING, **changes)
        self._simulator.cancel(payment_intent_id)
        return await self._resolve(payment, **changes)

    # -- the simulated PG answers ---------------------------------------------
    async def _fire(self, payment_intent_id: str) -> None:
        payment = await self._store.get(payment_intent_id)
        if payment is None or payment.status not in (
            PaymentStatus.PENDING,
            PaymentStatus.PROCESSING,
        ):
            return
        await self._resolve(payment)

    async def _resolve(self, payment: Payment, **changes: object) -> Payment:
        outcome = payment.outcome
        now = self._now()
        result = PaymentResult(
            success=outcome.status is PaymentStatus.COMPLETED,
            failure_reason=outcome.failure_reason,
            gateway_response=outcome.gateway_response,
            response_code=outcome.response_code,
            processed_at=now,
        )
        if outcome.status is not PaymentStatus.EXPIRED:
            changes.update(
                payment_id=new_id("pmt"),
                transaction_id=new_id("txn"),
                processed_at=now,
            )
        return await self._apply(payment, outcome.status, result=result, **changes)

    async def _apply(self, payment: Payment, new: PaymentStatus, **changes: object) -> Payment:
        """Move ``payment`` to ``new`` (compare-and-set), count it, announce it."""
        now = self._now()
        updated = state.transition(payment, new, now, **changes)
        if not await self._store.compare_and_set(payment.version, updated):
            # Someone else moved it first; theirs is the truth.
            current = await self._store.get(payment.payment_intent_id)
            return current if current is not None else payment
        self._metrics.payment_transition(payment.status.name, new.name)
        await self._notifier.notify(
            StatusChange(event_id=new_id("evt"), payment=updated, previous=payment.status, at=now)
        )
        return updated
