"""Test cards and magic values: outcomes a caller forces, as PGs' sandboxes allow.

Stripe's test cards and Toss Payments' test codes let a developer ask for a
specific decline instead of hoping the random scenario draws it. paysim does
the same two ways:

* a card number in ``ProcessPayment.payment_details.credit_card`` (the
  numbers are Stripe's where Stripe has one), which decides the outcome of
  the payment being processed;
* ``metadata.tags["test_outcome"]`` on CreatePaymentIntent, which decides it
  at creation (the scenario's delay still applies; ``pg_timeout`` waits for
  the intent's TTL like the TIMEOUT scenario).

Any other card number leaves the outcome decided at creation. Card numbers are
secrets even here: only ``mask`` (the last four digits) may reach a log line.
Response codes are ISO 8583's, as elsewhere in paysim. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from paysim.domain.models import Outcome, PaymentStatus

TAG = "test_outcome"


@dataclass(frozen=True, slots=True)
class Forced:
    status: PaymentStatus
    failure_reason: str
    gateway_response: str
    response_code: int


_APPROVED = Forced(PaymentStatus.COMPLETED, "", "approved", 0)


def _declined(reason: str, text: str, code: int) -> Forced:
    return Forced(PaymentStatus.FAILED, reason, text, code)


OUTCOMES: dict[str, Forced] = {
    "approve": _APPROVED,
    "decline": _declined("card_declined", "Do not honor", 5),
    "insufficient_funds": _declined("insufficient_funds", "Insufficient funds", 51),
    "lost_card": _declined("lost_card", "Lost card, pick up", 41),
    "stolen_card": _declined("stolen_card", "Stolen card, pick up", 43),
    "expired_card": _declined("expired_card", "Expired card", 54),
    "incorrect_cvc": _declined("incorrect_cvc", "Incorrect CVC", 82),
    "processing_error": _declined("processing_error", "System malfunction", 96),
    "pg_timeout": Forced(
        PaymentStatus.EXPIRED, "timeout", "No answer from the payment gateway", 68
    ),
}

CARDS: dict[str, str] = {
    "4242424242424242": "approve",
    "4000000000000002": "decline",
    "4000000000009995": "insufficient_funds",
    "4000000000009987": "lost_card",
    "4000000000009979": "stolen_card",
    "4000000000000069": "expired_card",
    "4000000000000127": "incorrect_cvc",
    "4000000000000119": "processing_error",
    "4000000000000408": "pg_timeout",
}


def for_card(card_number: str) -> str | None:
    """The outcome a test card forces, or None for any other number."""
    return CARDS.get(card_number.replace(" ", ""))


def outcome(name: str, delay_s: float, intent_ttl_s: float) -> Outcome:
    """The forced outcome ``name`` (a key of ``OUTCOMES``) after ``delay_s``."""
    forced = OUTCOMES[name]
    return Outcome(
        status=forced.status,
        delay_s=intent_ttl_s if forced.status is PaymentStatus.EXPIRED else delay_s,
        failure_reason=forced.failure_reason,
        gateway_response=forced.gateway_response,
        response_code=forced.response_code,
    )


_STOCK = {
    PaymentStatus.COMPLETED: "approve",
    PaymentStatus.FAILED: "decline",
    PaymentStatus.EXPIRED: "pg_timeout",
}


def for_status(decided: Outcome, target: PaymentStatus) -> Outcome:
    """The outcome SimulateWebhook forces: the decided one if it matches, else a stock one.

    ``target`` is COMPLETED, FAILED or EXPIRED (the PG answers now, as asked).
    """
    if decided.status is target:
        return decided
    return outcome(_STOCK[target], decided.delay_s, decided.delay_s)


def mask(card_number: str) -> str:
    """At most the last four digits: ``"****4242"``; empty for no number."""
    digits = card_number.replace(" ", "")
    return f"****{digits[-4:]}" if len(digits) >= 4 else ("****" if digits else "")
