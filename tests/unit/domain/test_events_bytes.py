"""The webhook body and the event Detail: the format-string path writes the encoder's bytes.

``paysim.domain.events`` writes the common change with one format string and
leaves the rest (refunds, cancellation reasons) to ``json.JSONEncoder``. Both
must give consumers the same bytes (CONTRACT §2: they verify an HMAC over
them), so every case here is also encoded the slow way and compared.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from paysim.domain.events import EVENT_TYPE, event_entry, webhook_body
from paysim.domain.models import (
    Metadata,
    Money,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Scenario,
    StatusChange,
)

ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def change(
    status: PaymentStatus = PaymentStatus.COMPLETED,
    *,
    reservation_id: str = "rsv_1",
    user_id: str = "user_1",
    amount: int = 100_000,
    currency: str = "KRW",
    at: float = 1_700_000_000.75,
) -> StatusChange:
    payment = Payment(
        payment_intent_id="pi_1",
        reservation_id=reservation_id,
        user_id=user_id,
        amount=Money(amount, currency),
        method=PaymentMethod.CREDIT_CARD,
        scenario=Scenario.APPROVE,
        webhook_url="http://127.0.0.1:9/h",
        metadata=Metadata(),
        client_secret="cs",
        outcome=Outcome(status, 2.0),
        status=status,
        created_at=at,
        updated_at=at,
        expires_at=at + 900,
    )
    return StatusChange(event_id="evt_1", payment=payment, previous=PaymentStatus.PENDING, at=at)


def slow_body(c: StatusChange) -> bytes:
    p = c.payment
    return ENCODER.encode(
        {
            "payment_id": p.payment_intent_id,
            "reservation_id": p.reservation_id,
            "status": f"PAYMENT_STATUS_{p.status.name}",
            "amount": p.amount.amount,
            "currency": p.amount.currency,
            "timestamp": int(c.at),
            "event_type": EVENT_TYPE,
        }
    ).encode()


def slow_detail(c: StatusChange) -> str:
    doc = json.loads(slow_body(c))
    ordered = {"payment_id": doc.pop("payment_id"), "reservation_id": doc.pop("reservation_id")}
    ordered["user_id"] = c.payment.user_id
    ordered.update(doc)
    return ENCODER.encode(ordered)


TEXT = [
    "rsv_1",
    "",
    'quote " and backslash \\ and slash /',
    "tab\tnew\nline\rcr \x00 \x1f \x7f",
    "한국어 예약 ✓ émoji 🎟",
    "\u2028\u2029 line separators",
    "a" * 300,
]


@pytest.mark.parametrize("text", TEXT)
@pytest.mark.parametrize("status", list(PaymentStatus))
def test_the_fast_bytes_are_the_encoders(text: str, status: PaymentStatus) -> None:
    c = change(status, reservation_id=text, user_id=text[::-1], amount=len(text) * 977)
    assert webhook_body(c) == slow_body(c)
    entry = event_entry(c, source="payment-sim-api", bus_name="bus")
    assert entry["Detail"] == slow_detail(c)
    assert list(entry) == ["Source", "DetailType", "Detail", "EventBusName"]


@pytest.mark.parametrize("amount", [0, 1, -5, 2**62, 10**30])
def test_amounts_and_timestamps_are_written_as_json_integers(amount: int) -> None:
    c = change(amount=amount, at=1_700_000_000.999)
    assert webhook_body(c) == slow_body(c)
    assert json.loads(webhook_body(c))["timestamp"] == 1_700_000_000


def test_an_amount_that_is_not_a_plain_int_takes_the_encoders_path() -> None:
    c = change()
    odd = dataclasses.replace(c.payment, amount=Money(True, "KRW"))  # a bool is an int
    body = webhook_body(dataclasses.replace(c, payment=odd))
    assert b'"amount":true' in body  # the encoder's spelling, not "%d"'s 1


def test_the_contracts_example_bytes() -> None:
    assert webhook_body(change(at=1_700_000_000)) == (
        b'{"payment_id":"pi_1","reservation_id":"rsv_1","status":"PAYMENT_STATUS_COMPLETED",'
        b'"amount":100000,"currency":"KRW","timestamp":1700000000,'
        b'"event_type":"payment.status_updated"}'
    )
