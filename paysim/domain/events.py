"""What the outside world is told about a status change: the wire shapes of CONTRACT §2-§3.

Pure functions of a ``StatusChange``: the webhook body (exact bytes, exact key
order: consumers verify an HMAC over them) and the EventBridge entry.
"""

from __future__ import annotations

import json
from typing import Any

from paysim.domain.models import PaymentStatus, StatusChange

EVENT_TYPE = "payment.status_updated"
DETAIL_TYPE = "Payment Status Updated"


def status_name(status: PaymentStatus) -> str:
    """The proto enum name, e.g. ``PAYMENT_STATUS_COMPLETED``."""
    return f"PAYMENT_STATUS_{status.name}"


# One encoder for every body: ``json.dumps`` with non-default options builds a
# new JSONEncoder per call, about half of what encoding a body costs.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _compact(obj: dict[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode()


def _additions(change: StatusChange) -> dict[str, Any]:
    """paysim's fields after the contract's (CONTRACT §2 allows new fields).

    Only when they apply, so an ordinary change keeps exactly the contract's
    bytes: ``reason`` for a cancellation or refund; ``refund_id``,
    ``refund_amount`` and ``refunded_amount`` (the total so far) for a refund.
    """
    p = change.payment
    extra: dict[str, Any] = {}
    if change.refund is not None:
        extra["refund_id"] = change.refund.refund_id
        extra["refund_amount"] = change.refund.amount.amount
        extra["refunded_amount"] = p.refunded
        if change.refund.reason:
            extra["reason"] = change.refund.reason
    elif p.status is PaymentStatus.CANCELLED and p.cancellation_reason:
        extra["reason"] = p.cancellation_reason
    return extra


def webhook_body(change: StatusChange) -> bytes:
    """``{"payment_id":…,"reservation_id":…,"status":…,"amount":…,"currency":…,
    "timestamp":…,"event_type":"payment.status_updated"}``, compact, in this order
    (then, for a cancellation or refund, the fields of ``_additions``)."""
    p = change.payment
    body = {
        "payment_id": p.payment_intent_id,
        "reservation_id": p.reservation_id,
        "status": status_name(p.status),
        "amount": p.amount.amount,
        "currency": p.amount.currency,
        "timestamp": int(change.at),
        "event_type": EVENT_TYPE,
    }
    body.update(_additions(change))
    return _compact(body)


def event_detail(change: StatusChange) -> dict[str, Any]:
    """The EventBridge ``Detail``: the webhook's fields plus ``user_id``."""
    p = change.payment
    detail = {
        "payment_id": p.payment_intent_id,
        "reservation_id": p.reservation_id,
        "user_id": p.user_id,
        "status": status_name(p.status),
        "amount": p.amount.amount,
        "currency": p.amount.currency,
        "timestamp": int(change.at),
        "event_type": EVENT_TYPE,
    }
    detail.update(_additions(change))
    return detail


def event_entry(change: StatusChange, *, source: str, bus_name: str) -> dict[str, Any]:
    """One ``PutEvents`` entry for ``change``."""
    return {
        "Source": source,
        "DetailType": DETAIL_TYPE,
        "Detail": _compact(event_detail(change)).decode(),
        "EventBusName": bus_name,
    }
