"""The six ``payment.v1.PaymentService`` methods: paths, message types, default bodies."""

from __future__ import annotations

from google.protobuf.message import Message

from paysim._proto.proto.payment.v1 import payment_pb2

SERVICE = "payment.v1.PaymentService"
NAMES = (
    "CreatePaymentIntent",
    "ProcessPayment",
    "GetPaymentStatus",
    "CancelPayment",
    "ListPayments",
    "SimulateWebhook",
)

# Bodies used when --data is not given: valid requests (those naming an intent
# need --intents N), so that a bare `paysim bench --call X` measures success.
_DEFAULTS = {
    "CreatePaymentIntent": '{"reservation_id": "rsv_bench_{{n}}", "user_id": "user_bench", '
    '"amount": {"amount": 100000, "currency": "KRW"}}',
    "ProcessPayment": '{"payment_intent_id": "{{intent_id}}", "payment_details": '
    '{"method": "PAYMENT_METHOD_CREDIT_CARD", "credit_card": {"card_number": '
    '"4111111111111111", "expiry_month": "12", "expiry_year": "2030", "cvv": "123", '
    '"cardholder_name": "Bench"}}}',
    "GetPaymentStatus": '{"payment_intent_id": "{{intent_id}}"}',
    "CancelPayment": '{"payment_intent_id": "{{intent_id}}", "reason": "bench"}',
    "ListPayments": '{"user_id": "user_bench"}',
    "SimulateWebhook": '{"payment_intent_id": "{{intent_id}}", '
    '"target_status": "PAYMENT_STATUS_COMPLETED"}',
}

# The intents made by --intents: TIMEOUT so that they stay pending during the run.
INTENT_DATA = (
    '{"reservation_id": "rsv_bench_setup_{{n}}", "user_id": "user_bench", '
    '"amount": {"amount": 100000, "currency": "KRW"}, "scenario": "PAYMENT_SCENARIO_TIMEOUT"}'
)


def short_name(name: str) -> str | None:
    """``CreatePaymentIntent``, ``payment.v1.PaymentService.CreatePaymentIntent`` or
    ``payment.v1.PaymentService/CreatePaymentIntent`` -> the short name; None if unknown."""
    for prefix in (f"/{SERVICE}/", f"{SERVICE}/", f"{SERVICE}."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name if name in NAMES else None


def path(name: str) -> str:
    """The HTTP/2 path of a method, as grpcio's ``unary_unary`` wants it."""
    return f"/{SERVICE}/{name}"


def request_type(name: str) -> type[Message]:
    kind: type[Message] = getattr(payment_pb2, f"{name}Request")
    return kind


def default_data(name: str) -> str:
    return _DEFAULTS[name]
