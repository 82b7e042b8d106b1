"""``payment.v1.PaymentService`` over gRPC: protobuf in, service call, protobuf out.

This module owns the translation between generated messages and domain values.
Each request is parsed once, here, into a complete command: what only the wire
can get wrong (unknown enum numbers, a missing ``amount`` message) is checked
here, every field and tag by ``paysim.domain.validation``, and the webhook URL
by the ``check_webhook_url`` the wiring injects (sendable by the dispatcher's
parser, SSRF-checked under its policy); the service re-validates nothing. Domain
errors pass through untouched: ``transport.py`` maps them to statuses with
``errors.py``'s table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from paysim._proto.proto.common.v1 import types_pb2
from paysim._proto.proto.payment.v1 import payment_grpc, payment_pb2
from paysim.domain import forced_outcomes, validation
from paysim.domain.models import (
    EMPTY_TAGS,
    Metadata,
    Money,
    Payment,
    PaymentMethod,
    PaymentResult,
    PaymentStatus,
    Scenario,
)
from paysim.errors import InvalidArgument
from paysim.service import PaymentService

E = TypeVar("E", bound=enum.IntEnum)


_MEMBERS: dict[type[enum.IntEnum], dict[int, Any]] = {}


def _enum(kind: type[E], field: str, value: int) -> E:
    """``kind(value)`` from a dict made once per enum (the enum call costs ~0.4 us)."""
    members = _MEMBERS.get(kind)
    if members is None:
        members = _MEMBERS[kind] = {int(member): member for member in kind}
    member: E | None = members.get(value)
    if member is None:
        raise InvalidArgument(field, f"unknown enum value {value}")
    return member


def _wire(value: enum.IntEnum) -> Any:
    """A domain enum as the generated code's enum number (numbers are shared)."""
    return int(value)


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


_NO_METADATA = Metadata()  # frozen: every request without metadata shares it


def _metadata(message: Any, present: bool) -> Metadata:
    if not present:
        return _NO_METADATA
    tags = dict(message.tags)
    return Metadata(
        source=message.source,
        user_agent=message.user_agent,
        ip_address=message.ip_address,
        session_id=message.session_id,
        scenario=_enum(Scenario, "metadata.scenario", message.scenario),
        tags=tags if tags else EMPTY_TAGS,
    )


def _result_to_proto(result: PaymentResult) -> Any:
    return payment_pb2.PaymentResult(
        success=result.success,
        failure_reason=result.failure_reason,
        gateway_response=result.gateway_response,
        response_code=result.response_code,
        processed_at=_timestamp(result.processed_at),
    )


def _money(money: Money | None) -> Any:
    if money is None:
        return None
    return types_pb2.Money(amount=money.amount, currency=money.currency)


def payment_to_proto(p: Payment) -> Any:
    m = p.metadata
    return payment_pb2.Payment(
        refunded_amount=_money(Money(p.refunded, p.amount.currency)) if p.refunds else None,
        cancelled_at=_timestamp(p.cancelled_at),
        cancellation_reason=p.cancellation_reason,
        payment_intent_id=p.payment_intent_id,
        payment_id=p.payment_id,
        reservation_id=p.reservation_id,
        user_id=p.user_id,
        status=_wire(p.status),
        amount=types_pb2.Money(amount=p.amount.amount, currency=p.amount.currency),
        method=_wire(p.method),
        created_at=_timestamp(p.created_at),
        updated_at=_timestamp(p.updated_at),
        processed_at=_timestamp(p.processed_at),
        transaction_id=p.transaction_id,
        result=_result_to_proto(p.result) if p.result is not None else None,
        metadata=payment_pb2.PaymentMetadata(
            source=m.source,
            user_agent=m.user_agent,
            ip_address=m.ip_address,
            session_id=m.session_id,
            scenario=_wire(p.scenario),
            tags=dict(m.tags),
        ),
    )


class PaymentApi(payment_grpc.PaymentServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        service: PaymentService,
        payment_url_template: str,
        check_webhook_url: Callable[[str], None],
        *,
        max_delay_s: float,
    ) -> None:
        """``check_webhook_url`` raises InvalidArgument for a URL no delivery could send."""
        self._service = service
        self._max_delay_s = max_delay_s
        self._payment_url = payment_url_template
        self._check_webhook_url = check_webhook_url

    async def CreatePaymentIntent(self, req: Any) -> Any:
        request = validation.CreateRequest(
            reservation_id=req.reservation_id,
            user_id=req.user_id,
            amount=req.amount.amount,
            currency=req.amount.currency,
            amount_present=req.HasField("amount"),
            method=_enum(PaymentMethod, "method", req.method),
            scenario=_enum(Scenario, "scenario", req.scenario),
            webhook_url=req.webhook_url,
            idempotency_key=req.idempotency_key,
            metadata=_metadata(req.metadata, req.HasField("metadata")),
        )
        cmd = validation.validate_create(request, max_delay_s=self._max_delay_s)
        if cmd.webhook_url:
            self._check_webhook_url(cmd.webhook_url)
        created = await self._service.create_intent(cmd)
        p = created.payment
        return payment_pb2.CreatePaymentIntentResponse(
            payment_intent_id=p.payment_intent_id,
            # An idempotent replay repeats the original answer, as Stripe does.
            status=payment_pb2.PAYMENT_STATUS_PENDING,
            client_secret=p.client_secret,
            payment_url=self._payment_url.format(payment_intent_id=p.payment_intent_id),
            expires_at=_timestamp(p.expires_at),
        )

    async def GetPaymentStatus(self, req: Any) -> Any:
        validation.check_id(
            "payment_intent_id", req.payment_intent_id, validation.MAX_ID_LEN, required=True
        )
        validation.check_id("user_id", req.user_id, validation.MAX_ID_LEN)
        payment = await self._service.get_payment(req.payment_intent_id, req.user_id)
        return payment_pb2.GetPaymentStatusResponse(payment=payment_to_proto(payment))

    async def ProcessPayment(self, req: Any) -> Any:
        validation.check_id(
            "payment_intent_id", req.payment_intent_id, validation.MAX_ID_LEN, required=True
        )
        validation.check_id("idempotency_key", req.idempotency_key, validation.MAX_KEY_LEN)
        method = PaymentMethod.UNSPECIFIED
        forced: str | None = None
        if req.HasField("payment_details"):
            d = req.payment_details
            method = _enum(PaymentMethod, "payment_details.method", d.method)
            c = d.credit_card
            validation.validate_card(
                card_number=c.card_number,
                expiry_month=c.expiry_month,
                expiry_year=c.expiry_year,
                cardholder_name=c.cardholder_name,
                cvv=c.cvv,
            )
            b = d.bank_transfer
            validation.validate_bank_transfer(
                bank_code=b.bank_code,
                account_number=b.account_number,
                account_holder=b.account_holder,
            )
            validation.validate_mobile_pay(
                provider=d.mobile_pay.provider, mobile_number=d.mobile_pay.mobile_number
            )
            if c.card_number:
                forced = forced_outcomes.for_card(c.card_number)
                # The last four digits at most: the card number is a secret.
                structlog.contextvars.bind_contextvars(card=forced_outcomes.mask(c.card_number))
        payment = await self._service.process_payment(req.payment_intent_id, method, forced)
        return payment_pb2.ProcessPaymentResponse(
            payment_id=payment.payment_id,
            status=_wire(payment.status),
            processed_at=_timestamp(payment.processed_at),
            transaction_id=payment.transaction_id,
            result=_result_to_proto(payment.result) if payment.result is not None else None,
        )

    async def CancelPayment(self, req: Any) -> Any:
        cmd = validation.validate_cancel(
            payment_intent_id=req.payment_intent_id,
            reason=req.reason,
            refund_present=req.HasField("refund_amount"),
            refund_amount=req.refund_amount.amount,
            refund_currency=req.refund_amount.currency,
            idempotency_key=req.idempotency_key,
        )
        result = await self._service.cancel_payment(cmd)
        return payment_pb2.CancelPaymentResponse(
            status=_wire(result.status),
            cancelled_at=_timestamp(result.cancelled_at),
            refunded_amount=_money(result.refunded),
            refund_id=result.refund_id,
        )

    async def ListPayments(self, req: Any) -> Any:
        p = req.pagination
        query = validation.validate_list(
            user_id=req.user_id,
            status=_enum(PaymentStatus, "status", req.status),
            reservation_id=req.reservation_id,
            page=p.page,
            page_size=p.page_size,
            cursor=p.cursor,
        )
        page = await self._service.list_payments(query)
        return payment_pb2.ListPaymentsResponse(
            payments=[payment_to_proto(x) for x in page.payments],
            page_info=types_pb2.PageInfo(
                total_count=min(page.total_count, 2**31 - 1),
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                next_cursor=page.next_cursor,
                previous_cursor=page.previous_cursor,
            ),
        )

    async def SimulateWebhook(self, req: Any) -> Any:
        validation.check_id(
            "payment_intent_id", req.payment_intent_id, validation.MAX_ID_LEN, required=True
        )
        target = _enum(PaymentStatus, "target_status", req.target_status)
        delay_s = validation.check_simulate_delay(req.delay_seconds, self._max_delay_s)
        done = await self._service.simulate_webhook(
            req.payment_intent_id, target, delay_s, req.force_trigger
        )
        return payment_pb2.SimulateWebhookResponse(
            webhook_sent=done.webhook_sent,
            webhook_id=done.webhook_id,
            scheduled_at=_timestamp(done.scheduled_at),
        )
