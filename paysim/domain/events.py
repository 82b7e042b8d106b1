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


def _compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def webhook_body(change: StatusChange) -> bytes:
    """``{"payment_id":…,"reservation_id":…,"status":…,"amount":…,"currency":…,
    "timestamp":…,"event_type":"payment.status_updated"}``, compact, in this order."""
    p = change.payment
    return _compact(
        {
            "payment_id": p.payment_intent_id,
            "reservation_id": p.reservation_id,
            "status": status_name(p.status),
            "amount": p.amount.amount,
            "currency": p.amount.currency,
            "timestamp": int(change.at),
            "event_type": EVENT_TYPE,
        }
    )


def event_detail(change: StatusChange) -> dict[str, Any]:
    """The EventBridge ``Detail``: the webhook's fields plus ``user_id``."""
    p = change.payment
    return {
        "payment_id": p.payment_intent_id,
        "reservation_id": p.reservation_id,
        "user_id": p.user_id,
        "status": status_name(p.status),
        "amount": p.amount.amount,
        "currency": p.amount.currency,
        "timestamp": int(change.at),
        "event_type": EVENT_TYPE,
    }


def event_entry(change: StatusChange, *, source: str, bus_name: str) -> dict[str, Any]:
    """One ``PutEvents`` entry for ``change``."""
    return {
        "Source": source,
        "DetailType": DETAIL_TYPE,
        "Detail": _compact(event_detail(change)).decode(),
        "EventBusName": bus_name,
    }
