"""The payment and its parts: frozen values, no I/O, no trio.

Enum numbers mirror ``payment.v1`` so the gRPC edge converts by number, but
nothing here imports generated code. ``PaymentStatus`` is defined with the
state machine, in ``state``, and re-exported here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from paysim.domain import currency as currencies
from paysim.domain.ids import new_secret
from paysim.domain.state import PaymentStatus as PaymentStatus


class PaymentMethod(enum.IntEnum):
    UNSPECIFIED = 0
    CREDIT_CARD = 1
    DEBIT_CARD = 2
    BANK_TRANSFER = 3
    MOBILE_PAY = 4
    DIGITAL_WALLET = 5


class Scenario(enum.IntEnum):
    UNSPECIFIED = 0
    APPROVE = 1
    FAIL = 2
    DELAY = 3
    RANDOM = 4
    TIMEOUT = 5

    @classmethod
    def from_name(cls, name: str) -> Scenario:
        return cls[name.upper()]


# The names a setting or a metric label uses: the one list of scenarios by name.
SCENARIO_NAMES: tuple[str, ...] = tuple(s.name.lower() for s in Scenario if s)


@dataclass(frozen=True, slots=True)
class Money:
    """``amount`` in the currency's smallest unit (won for KRW, cents for USD)."""

    amount: int
    currency: str  # ISO 4217, checked at the edge (``validation.check_money``)

    @property
    def minor_units(self) -> int:
        """Decimal places of the currency's minor unit (KRW 0, USD 2); see ``domain.currency``."""
        return currencies.minor_units(self.currency)


EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Metadata:
    source: str = ""
    user_agent: str = ""
    ip_address: str = ""
    session_id: str = ""
    scenario: Scenario = Scenario.UNSPECIFIED
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)


@dataclass(frozen=True, slots=True)
class PaymentResult:
    success: bool
    failure_reason: str
    gateway_response: str
    response_code: int
    processed_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the simulated PG will answer, decided once at creation.

    ``status`` is COMPLETED, FAILED or EXPIRED (the PG never answers);
    ``delay_s`` is how long after creation the answer arrives.
    """

    status: PaymentStatus
    delay_s: float
    failure_reason: str = ""
    gateway_response: str = "approved"
    response_code: int = 0


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund of a COMPLETED payment (CancelPayment)."""

    refund_id: str
    amount: Money
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelResult:
    """CancelPayment's answer; kept with its idempotency key so a retry gets it again.

    ``refunded`` is the payment's total refunded after this call (None for a
    cancel of an uncaptured payment); ``refund_id`` names this call's refund.
    """

    status: PaymentStatus
    cancelled_at: float
    refunded: Money | None
    refund_id: str


@dataclass(frozen=True, slots=True)
class IntentCreated:
    """CreatePaymentIntent's answer; ``replayed``: an idempotent retry's (the first payment)."""

    payment: Payment
    replayed: bool


@dataclass(frozen=True, slots=True)
class Simulated:
    """SimulateWebhook's answer: sent now, or scheduled at ``scheduled_at`` (wall clock)."""

    webhook_sent: bool
    webhook_id: str
    scheduled_at: float


@dataclass(frozen=True, slots=True)
class CancelCommand:
    """A validated CancelPayment request."""

    payment_intent_id: str
    reason: str
    refund_amount: Money | None
    idempotency_key: str

    def fingerprint(self) -> tuple[object, ...]:
        return (self.payment_intent_id, self.reason, self.refund_amount)


@dataclass(frozen=True, slots=True)
class CreateIntent:
    """A validated CreatePaymentIntent command: complete, the service checks nothing again."""

    reservation_id: str
    user_id: str
    amount: Money
    method: PaymentMethod
    scenario: Scenario
    webhook_url: str
    idempotency_key: str
    metadata: Metadata
    # Parsed from ``metadata.tags`` by the edge (the tags stay, for the fingerprint):
    delay_override_s: float | None = None  # tags["delay_ms"]: this request's own delay
    forced_outcome: str | None = None  # tags["test_outcome"]: a key of forced_outcomes.OUTCOMES

    def fingerprint(self) -> tuple[object, ...]:
        """Everything but the idempotency key: equal fingerprints mean the same request."""
        m = self.metadata
        return (
            self.reservation_id,
            self.user_id,
            self.amount,
            self.method,
            self.scenario,
            self.webhook_url,
            (m.source, m.user_agent, m.ip_address, m.session_id, m.scenario),
            tuple(sorted(m.tags.items())),
        )

    def new_payment(
        self,
        payment_intent_id: str,
        scenario: Scenario,
        outcome: Outcome,
        at: float,
        expires_at: float,
    ) -> Payment:
        """The PENDING payment this command creates at ``at`` (version 1, a fresh secret)."""
        return Payment(
            payment_intent_id=payment_intent_id,
            reservation_id=self.reservation_id,
            user_id=self.user_id,
            amount=self.amount,
            method=self.method,
            scenario=scenario,
            webhook_url=self.webhook_url,
            metadata=self.metadata,
            client_secret=new_secret(f"{payment_intent_id}_secret_"),
            outcome=outcome,
            status=PaymentStatus.PENDING,
            created_at=at,
            updated_at=at,
            expires_at=expires_at,
        )


@dataclass(frozen=True, slots=True)
class Payment:
    payment_intent_id: str
    reservation_id: str
    user_id: str
    amount: Money
    method: PaymentMethod
    scenario: Scenario
    webhook_url: str
    metadata: Metadata
    client_secret: str
    outcome: Outcome
    status: PaymentStatus
    created_at: float
    updated_at: float
    expires_at: float
    version: int = 1
    payment_id: str = ""
    transaction_id: str = ""
    processed_at: float | None = None
    result: PaymentResult | None = None
    refunded: int = 0  # smallest currency unit, in the payment's currency
    refunds: tuple[Refund, ...] = ()
    cancelled_at: float | None = None
    cancellation_reason: str = ""

    @property
    def refundable(self) -> int:
        return self.amount.amount - self.refunded


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One change of one payment, as handed to the notifier.

    Usually a status change; also a partial refund (the status stays
    COMPLETED, ``refund`` says what happened) and a resend (SimulateWebhook:
    the current state again, under a new event id).
    """

    event_id: str
    payment: Payment
    previous: PaymentStatus
    at: float
    refund: Refund | None = None
    resend: bool = False
