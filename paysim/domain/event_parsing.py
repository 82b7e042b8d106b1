"""The reservation worker's reading of a queued payment event (CONTRACT §3). Pure.

``parse_event`` takes an SQS body holding the EventBridge envelope and returns
the fields the worker acts on, or raises ``Malformed`` with a reason (one of
MALFORMED_REASONS) for the metrics; ``DECISIONS`` maps a payment status to
what the reservation service is told.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from paysim.domain.events import DETAIL_TYPE, EVENT_TYPE, status_name
from paysim.domain.models import PaymentStatus

_MAX_ID_LEN = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_NAME = re.compile(r"PAYMENT_STATUS_[A-Z][A-Z0-9_]*")

# What the reservation service is told, by payment status (the platform's worker's table).
DECISIONS: dict[str, str] = {
    status_name(PaymentStatus.COMPLETED): "CONFIRMED",
    status_name(PaymentStatus.FAILED): "CANCELLED",
    status_name(PaymentStatus.CANCELLED): "CANCELLED",
    status_name(PaymentStatus.EXPIRED): "CANCELLED",
}
MALFORMED_REASONS = ("json", "envelope", "detail_type", "source", "detail")


class Malformed(Exception):
    """A message that is not a valid payment event; ``reason`` is one of MALFORMED_REASONS."""

    def __init__(self, reason: str, problem: str) -> None:
        super().__init__(f"{reason}: {problem}")
        self.reason = reason
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """The parts of a ``Payment Status Updated`` event the worker uses (CONTRACT §3)."""

    event_id: str
    payment_id: str
    reservation_id: str
    user_id: str
    status: str  # the enum name, e.g. "PAYMENT_STATUS_COMPLETED"
    amount: int
    currency: str
    timestamp: int

    @property
    def decision(self) -> str | None:
        """``"CONFIRMED"``, ``"CANCELLED"``, or None when the reservation is not concerned."""
        return DECISIONS.get(self.status)


def _text(detail: dict[str, Any], name: str, *, required: bool) -> str:
    value = detail.get(name)
    if not isinstance(value, str):
        raise Malformed("detail", f"{name} must be a string")
    if required and not value:
        raise Malformed("detail", f"{name} must not be empty")
    if len(value) > _MAX_ID_LEN or _CONTROL.search(value):
        raise Malformed("detail", f"{name} is too long or holds control characters")
    return value


def _integer(detail: dict[str, Any], name: str) -> int:
    value = detail.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Malformed("detail", f"{name} must be a non-negative integer")
    return value


def parse_event(body: str, source: str) -> PaymentEvent:
    """Parse an SQS body holding the EventBridge envelope; raise ``Malformed`` if invalid."""
    try:
        envelope = json.loads(body)
    except ValueError:
        raise Malformed("json", "the body is not JSON") from None
    if not isinstance(envelope, dict):
        raise Malformed("json", "the body is not a JSON object")
    event_id = envelope.get("id")
    if not isinstance(event_id, str) or not event_id or len(event_id) > _MAX_ID_LEN:
        raise Malformed("envelope", "id must be a non-empty string")
    if envelope.get("detail-type") != DETAIL_TYPE:
        raise Malformed("detail_type", f"detail-type must be {DETAIL_TYPE!r}")
    if envelope.get("source") != source:
        raise Malformed("source", f"source must be {source!r}")
    detail = envelope.get("detail")
    if not isinstance(detail, dict):
        raise Malformed("envelope", "detail must be a JSON object")
    if detail.get("event_type") != EVENT_TYPE:
        raise Malformed("detail", f"event_type must be {EVENT_TYPE!r}")
    status = detail.get("status")
    if not isinstance(status, str) or not _STATUS_NAME.fullmatch(status):
        raise Malformed("detail", "status must be a PAYMENT_STATUS_* name")
    reservation_id = _text(detail, "reservation_id", required=True)
    if reservation_id in (".", ".."):  # would walk the URL path
        raise Malformed("detail", "reservation_id is not a valid id")
    return PaymentEvent(
        event_id=event_id,
        payment_id=_text(detail, "payment_id", required=True),
        reservation_id=reservation_id,
        user_id=_text(detail, "user_id", required=False),
        status=status,
        amount=_integer(detail, "amount"),
        currency=_text(detail, "currency", required=True),
        timestamp=_integer(detail, "timestamp"),
    )
