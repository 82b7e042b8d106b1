"""What the console shows of a payment: plain dicts, with nothing secret in them.

Never shown: the client secret, card numbers (the payment never keeps one),
webhook signatures, and the query string of a webhook URL (it may carry a
token): a URL is shown as scheme, host and path only.
"""

from __future__ import annotations

from typing import Any

from paysim.domain.models import Payment
from paysim.url_text import shown_url


def safe_url(url: str) -> str:
    """``scheme://host[:port]/path``: no user info, query or fragment."""
    return shown_url(url) if url else ""


def endpoint_of(url: str) -> str:
    """The endpoint a webhook URL belongs to: its host (and port)."""
    return shown_url(url, scheme=False, path=False)


def summary(payment: Payment, idempotency_key: str = "") -> dict[str, Any]:
    result = payment.result
    return {
        "id": payment.payment_intent_id,
        "status": payment.status.name,
        "user_id": payment.user_id,
        "reservation_id": payment.reservation_id,
        "amount": payment.amount.amount,
        "currency": payment.amount.currency,
        "refunded": payment.refunded,
        "scenario": payment.scenario.name,
        "method": payment.method.name,
        "webhook": safe_url(payment.webhook_url),
        "idempotency_key": idempotency_key,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "expires_at": payment.expires_at,
        "failure_reason": result.failure_reason if result is not None else "",
        "response_code": result.response_code if result is not None else None,
        "version": payment.version,
    }
