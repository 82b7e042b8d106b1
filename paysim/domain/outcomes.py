"""Deciding what the simulated PG answers. Pure: the caller passes the RNG.

The outcome is decided once, when the intent is created, so every later look
(ProcessPayment, the webhook, GetPaymentStatus) tells the same story.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from paysim.domain.ids import new_id
from paysim.domain.models import Metadata, Outcome, PaymentResult, PaymentStatus, Scenario

# Declines the FAIL and RANDOM scenarios draw from: (reason, gateway text, code).
# Codes follow ISO 8583 response codes, which card networks and Korean PGs share.
DECLINES: tuple[tuple[str, str, int], ...] = (
    ("card_declined", "Do not honor", 5),
    ("insufficient_funds", "Insufficient funds", 51),
    ("expired_card", "Expired card", 54),
    ("incorrect_cvc", "Incorrect CVC", 82),
    ("processing_error", "System malfunction", 96),
)

APPROVED_CODE = 0


@dataclass(frozen=True, slots=True)
class Timing:
    """The delays an outcome may take, in seconds."""

    default_delay_s: float
    delay_scenario_s: float
    intent_ttl_s: float
    random_approve_rate: float


@functools.lru_cache(maxsize=8)
def _timeout(intent_ttl_s: float) -> Outcome:
    """The one (frozen) TIMEOUT outcome per TTL, shared by every such payment."""
    return Outcome(
        status=PaymentStatus.EXPIRED,
        delay_s=intent_ttl_s,
        failure_reason="timeout",
        gateway_response="No answer from the payment gateway",
        response_code=68,
    )


@functools.lru_cache(maxsize=64)
def _approved(delay_s: float) -> Outcome:
    """Approvals with one delay share one (frozen) outcome; the cache keeps the few in use."""
    return Outcome(status=PaymentStatus.COMPLETED, delay_s=delay_s)


def decide(
    scenario: Scenario, timing: Timing, rng: random.Random, delay_override_s: float | None
) -> Outcome:
    """The outcome for a new intent of ``scenario``.

    ``delay_override_s`` (from ``metadata.tags["delay_ms"]``) replaces the
    scenario's delay; TIMEOUT ignores it: the PG never answers, and the intent
    expires at its TTL.
    """
    if scenario is Scenario.TIMEOUT:
        return _timeout(timing.intent_ttl_s)
    delay = timing.delay_scenario_s if scenario is Scenario.DELAY else timing.default_delay_s
    if delay_override_s is not None:
        delay = delay_override_s
    if scenario is Scenario.APPROVE or scenario is Scenario.DELAY:
        approve = True
    elif scenario is Scenario.FAIL:
        approve = False
    elif scenario is Scenario.RANDOM:
        approve = rng.random() < timing.random_approve_rate
    else:  # pragma: no cover - UNSPECIFIED is resolved before we get here
        raise ValueError(f"unresolved scenario {scenario.name}")
    if approve:
        return _approved(delay)
    reason, text, code = DECLINES[rng.randrange(len(DECLINES))]
    return Outcome(
        status=PaymentStatus.FAILED,
        delay_s=delay,
        failure_reason=reason,
        gateway_response=text,
        response_code=code,
    )


def resolve_scenario(requested: Scenario, metadata: Metadata, default: Scenario) -> Scenario:
    """The request's scenario, else ``metadata.scenario``, else the configured default."""
    if requested is not Scenario.UNSPECIFIED:
        return requested
    if metadata.scenario is not Scenario.UNSPECIFIED:
        return metadata.scenario
    return default


def answered(outcome: Outcome, at: float) -> dict[str, object]:
    """The fields the simulated PG's answer ``outcome`` sets on a payment at ``at``.

    An answer that never came (EXPIRED) gets a result but no payment or
    transaction id.
    """
    changes: dict[str, object] = {}
    if outcome.status is not PaymentStatus.EXPIRED:
        changes.update(payment_id=new_id("pmt"), transaction_id=new_id("txn"), processed_at=at)
    changes["result"] = PaymentResult(
        success=outcome.status is PaymentStatus.COMPLETED,
        failure_reason=outcome.failure_reason,
        gateway_response=outcome.gateway_response,
        response_code=outcome.response_code,
        processed_at=at,
    )
    return changes
